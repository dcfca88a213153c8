"""Worker settings from the environment: the producer's linger, failover."""

from pathlib import Path

import pytest

from intentwatch.pipeline.settings import Settings


def test_the_producer_linger_is_read_in_milliseconds_and_may_be_zero() -> None:
    assert Settings.from_env({}).producer_linger_ms == 5
    assert Settings.from_env({"INTENTWATCH_PRODUCER_LINGER_MS": "0"}).producer_linger_ms == 0
    assert Settings.from_env({"INTENTWATCH_PRODUCER_LINGER_MS": "20"}).producer_linger_ms == 20
    with pytest.raises(ValueError, match="INTENTWATCH_PRODUCER_LINGER_MS must be a whole number"):
        Settings.from_env({"INTENTWATCH_PRODUCER_LINGER_MS": "-1"})



def test_the_failover_settings_reach_the_consumer(tmp_path: Path) -> None:
    """A warm standby copy of each partition's tables by default; heartbeats every sixth
    of the session."""
    from tests.pipeline_harness import Sent, make_pipeline

    assert Settings.from_env({}).standby_replicas == 1
    conf = make_pipeline(tmp_path, Sent()).app.conf
    assert conf.table_standby_replicas == 1
    assert (conf.broker_session_timeout, conf.broker_heartbeat_interval) == (6.0, 1.0)
