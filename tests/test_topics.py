"""Topics are managed, not guessed: the layout, `intentwatch topics`, the SDK and the worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intentwatch import IntentwatchError, TelemetryPublisher
from intentwatch.cli import app
from intentwatch.contracts import TOPICS
from intentwatch.local.kafka_broker import down, free_port, up
from intentwatch.local.worker import WorkerProcess
from intentwatch.pipeline.app import INPUT_TOPICS, TABLES, Pipeline, worker_topics
from intentwatch.pipeline.settings import Settings
from intentwatch.pipeline.topics import (
    Topic,
    TopicsMismatch,
    TopicSpec,
    adopted_partitions,
    create_topics,
    describe_topics,
)
from intentwatch.pipeline.worker import load_keyring
from intentwatch.tokens.grants import GrantVerifier
from intentwatch.tokens.keys import generate_key

runner = CliRunner()


def test_the_layout_has_every_topic_and_compacted_changelogs() -> None:
    specs = worker_topics(Settings(app_id="iw", partitions=4, replication_factor=3,
                                   otlp_topic="spans"))
    assert set(specs) == {*TOPICS.values(), *(f"iw-{table}-changelog" for table in TABLES),
                          "spans"}
    assert {spec.partitions for spec in specs.values()} == {4}
    assert {spec.replication for spec in specs.values()} == {3}
    assert specs["iw-grants-changelog"].configs == {"cleanup.policy": "compact"}
    assert {n for n, s in specs.items() if s.copartitioned} == {
        *INPUT_TOPICS, *(f"iw-{table}-changelog" for table in TABLES)}


def test_the_layout_names_the_changelog_of_every_table_of_the_worker(tmp_path: Path) -> None:
    settings = Settings(app_id="iw", data_dir=tmp_path / "data", keys_dir=tmp_path / "keys")
    pipeline = Pipeline(settings, keyring=load_keyring(settings.keys_dir),
                        grant_verifier=GrantVerifier(None, allow_unsigned=True))
    changelogs = {table.changelog_topic.get_topic_name() for table in pipeline.app.tables.values()}
    assert len(changelogs) == len(TABLES)
    assert changelogs == {n for n, s in worker_topics(settings).items() if "compact" in
                          s.configs.values()}


def test_a_spec_names_each_difference() -> None:
    spec = TopicSpec("t", 6, 3, {"cleanup.policy": "compact"}, copartitioned=True)
    assert spec.problems(Topic("t", 6, 3, {"cleanup.policy": "compact"})) == []
    assert spec.problems(None) == ["topic t does not exist"]
    assert spec.problems(Topic("t", 1, 1, {"cleanup.policy": "delete"})) == [
        "topic t has 1 partition, not 6", "topic t has replication factor 1, not 3",
        "topic t has cleanup.policy='delete', not 'compact'"]


def test_existing_topics_decide_the_partition_count_if_they_agree() -> None:
    assert adopted_partitions({"a": None, "b": None}, 6) == 6
    assert adopted_partitions({"a": Topic("a", 1, 1), "b": None}, 6) == 1
    with pytest.raises(TopicsMismatch, match=r"^Topic c has 1 partition but the other input "
                       r"topics have 6.*intentwatch topics create --partitions 6"):
        adopted_partitions({"a": Topic("a", 6, 1), "b": Topic("b", 6, 1),
                            "c": Topic("c", 1, 1)}, 6)


# -- against the session's broker ------------------------------------------------------------


@pytest.mark.kafka
def test_topics_create_then_check_is_clean(kafka_bootstrap: str) -> None:
    app_id = f"iw-{uuid.uuid4().hex[:8]}"
    created = runner.invoke(app, ["topics", "create", "--bootstrap", kafka_bootstrap,
                                  "--app-id", app_id])
    assert created.exit_code == 0, created.output
    assert f"{app_id}-grants-changelog" in created.output
    checked = runner.invoke(app, ["topics", "check", "--bootstrap", kafka_bootstrap,
                                  "--app-id", app_id])
    assert checked.exit_code == 0, checked.output
    assert "all topics as the workers need them" in checked.output
    found = describe_topics(kafka_bootstrap, [f"{app_id}-grants-changelog"])
    assert found[f"{app_id}-grants-changelog"].configs["cleanup.policy"] == "compact"


@pytest.mark.kafka
def test_topics_check_names_what_differs(kafka_bootstrap: str) -> None:
    app_id = f"iw-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [TopicSpec(f"{app_id}-grants-changelog", 2, 1)])
    create_topics(kafka_bootstrap, worker_topics(Settings()).values())  # the rest as needed
    checked = runner.invoke(app, ["topics", "check", "--bootstrap", kafka_bootstrap,
                                  "--app-id", app_id])
    assert checked.exit_code == 1
    assert f"topic {app_id}-grants-changelog has 2 partitions, not 6" in checked.output
    assert "cleanup.policy='delete', not 'compact'" in checked.output


# -- on a Kafka of their own (no intentwatch topics yet) -------------------------------------


@pytest.fixture
def empty_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("empty-kafka")
    broker = up(free_port(), home=home)
    try:
        yield broker.bootstrap
    finally:
        down(home)


@pytest.mark.kafka
def test_the_sdk_refuses_a_missing_topic_and_says_what_to_run(empty_kafka: str) -> None:
    with pytest.raises(IntentwatchError, match=r"topic intentwatch\.\w+\.v1 does not exist on "
                       r"Kafka at .*run `intentwatch topics create`"):
        TelemetryPublisher(empty_kafka, timeout=1.0)
    assert set(describe_topics(empty_kafka, TOPICS.values()).values()) == {None}  # none made


def _issuers(folder: Path) -> Path:
    jwks = folder / "issuers.jwks.json"
    jwks.write_text(json.dumps({"keys": [generate_key("EdDSA").public_jwk()]}))
    return jwks


@pytest.mark.kafka
def test_the_worker_adopts_existing_topics_that_agree(empty_kafka: str, tmp_path: Path) -> None:
    create_topics(empty_kafka, [TopicSpec(name, 1, 1) for name in INPUT_TOPICS])
    worker = WorkerProcess.start(empty_kafka, tmp_path, env={
        "INTENTWATCH_GRANT_ISSUERS_JWKS": str(_issuers(tmp_path))})
    try:
        worker.wait_ready()
        assert worker.status()["partitions"] == [0]
    finally:
        worker.stop()
    found = describe_topics(empty_kafka, TOPICS.values())
    assert {topic.partitions for topic in found.values()} == {1}  # the rest made to match
