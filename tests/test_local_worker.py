"""``intentwatch.local.worker``: a real worker process, ready on its web port, stopped by pid."""

from __future__ import annotations

import pytest

from intentwatch.local.worker import WorkerError, WorkerProcess


def test_a_worker_that_cannot_start_is_reported_with_its_log(tmp_path) -> None:
    worker = WorkerProcess.start("127.0.0.1:1", tmp_path, env={"INTENTWATCH_PARTITIONS": "0"})
    try:
        with pytest.raises(WorkerError, match="INTENTWATCH_PARTITIONS") as error:
            worker.wait_ready(timeout=60)
    finally:
        worker.stop()
    assert f"pid {worker.pid}" in str(error.value)
    assert worker.returncode not in (0, None)


@pytest.mark.kafka
def test_a_worker_gets_ready_with_its_own_settings_only(kafka_bootstrap, tmp_path,
                                                         monkeypatch) -> None:
    monkeypatch.setenv("INTENTWATCH_PARTITIONS", "0")  # would stop the worker if passed on
    worker = WorkerProcess.start(kafka_bootstrap, tmp_path,
                                 env={"INTENTWATCH_ALLOW_UNSIGNED_GRANTS": "1"})
    try:
        status = worker.wait_ready()
        assert status["ready"] and status["partitions"]
        assert (tmp_path / "keys").is_dir()
        assert worker.jwks_url.startswith(worker.url)
    finally:
        code = worker.stop()
    assert code == 0
    assert not worker.alive()
    with pytest.raises(WorkerError, match="exited with code 0"):
        worker.status()
