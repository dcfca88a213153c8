"""intentwatch.local.kafka_broker: setup errors and config without a broker; a real lifecycle."""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from intentwatch.local.kafka_broker import (
    KAFKA_VERSION,
    KafkaSetupError,
    LocalKafka,
    down,
    free_port,
    resolve_jars,
    server_properties,
    status,
    up,
)
from intentwatch.pipeline.topics import TopicSpec, create_topics, describe_topics

REPO = Path(__file__).resolve().parents[1]


def _without(monkeypatch: pytest.MonkeyPatch, program: str) -> None:
    """Make ``shutil.which`` report ``program`` as not installed."""
    which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **kw: None if name == program else which(name, *a, **kw)
    )


def _properties(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


# --- without a broker ---------------------------------------------------------------


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _without(monkeypatch, "java")
    with pytest.raises(
        KafkaSetupError, match=r"^Java 17\+ is needed .*apt-get install openjdk-17"
    ) as err:
        up(free_port(), home=tmp_path / "home", cache=tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists()
    assert status(tmp_path / "home") is None


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda name, *a, **kw: str(java) if name == "java" else which(name, *a, **kw),
    )
    with pytest.raises(
        KafkaSetupError, match=r"Java 17\+ is needed .* but .* is Java 11: install it"
    ):
        up(free_port(), home=tmp_path / "home", cache=tmp_path / "cache")


def test_missing_maven_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _without(monkeypatch, "mvn")
    with pytest.raises(KafkaSetupError, match=r"^Maven is needed .*apt-get install maven") as err:
        resolve_jars(tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / f"kafka-{KAFKA_VERSION}" / "libs").exists()


def test_taken_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(KafkaSetupError, match=rf"^Port {port} on 127.0.0.1 is already in use"):
            up(port, home=tmp_path)
    assert not (tmp_path / "kafka.pid").exists()


def test_server_properties_bind_localhost_only(tmp_path: Path) -> None:
    props = _properties(server_properties(29092, 29093, tmp_path / "data", partitions=3))
    assert props["process.roles"] == "broker,controller"
    listeners = props["listeners"].split(",")
    assert listeners == ["PLAINTEXT://127.0.0.1:29092", "CONTROLLER://127.0.0.1:29093"]
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    hosts = re.findall(r"://([^:,]*):", props["listeners"] + "," + props["advertised.listeners"])
    assert set(hosts) == {"127.0.0.1"}
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
        "default.replication.factor",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"  # topics are managed
    assert props["num.partitions"] == "3"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_status_ignores_a_pid_that_is_not_the_broker(tmp_path: Path) -> None:
    (tmp_path / "server.properties").write_text(server_properties(29092, 29093, tmp_path / "data"))
    (tmp_path / "kafka.pid").write_text(f"{os.getpid()}\n")  # alive, but pytest, not Kafka
    assert status(tmp_path) is None
    assert down(tmp_path) is False
    assert not (tmp_path / "kafka.pid").exists()


def test_docker_compose_runs_the_pom_kafka_version() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    assert re.findall(r"image:\s*apache/kafka:(\S+)", compose) == [KAFKA_VERSION]
    assert KAFKA_VERSION.startswith("3.9.")


# --- with a real broker ---------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    home = tmp_path_factory.mktemp("localkafka")
    started = up(free_port(), home=home)
    try:
        yield started
    finally:
        down(home)


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    create_topics(bootstrap, [TopicSpec(topic, 1, 1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer.send(topic, key=b"agent", value=value).get(timeout=30)
    finally:
        producer.close()


def _consume_one(bootstrap: str, topic: str) -> bytes | None:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=30_000
    )
    try:
        return next((record.value for record in consumer), None)
    finally:
        consumer.close()


@pytest.mark.kafka
def test_status_finds_the_running_broker(broker: LocalKafka) -> None:
    found = status(broker.home)
    assert found is not None
    assert found.bootstrap == broker.bootstrap
    assert found.log_file == broker.home / "kafka.log"
    assert "Kafka Server started" in found.log_file.read_text()
    assert re.fullmatch(r"127\.0\.0\.1:\d+", found.bootstrap)


@pytest.mark.kafka
def test_up_again_returns_the_running_broker(broker: LocalKafka) -> None:
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    assert up(port, home=broker.home) == status(broker.home)
    with pytest.raises(KafkaSetupError, match="already runs on"):
        up(free_port(), home=broker.home)


@pytest.mark.kafka
def test_produce_and_consume(broker: LocalKafka) -> None:
    topic = f"localkafka-{uuid.uuid4().hex}"
    _produce(broker.bootstrap, topic, b"hello")
    assert _consume_one(broker.bootstrap, topic) == b"hello"


@pytest.mark.kafka
def test_a_topic_is_not_created_by_using_it(broker: LocalKafka) -> None:
    topic = f"localkafka-{uuid.uuid4().hex}"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=2000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(topic, value=b"lost")
    finally:
        producer.close()
    assert describe_topics(broker.bootstrap, [topic]) == {topic: None}


@pytest.mark.kafka
def test_down_stops_it_and_a_restart_uses_cached_jars_and_keeps_data(
    broker: LocalKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"localkafka-{uuid.uuid4().hex}"
    _produce(broker.bootstrap, topic, b"kept")
    running = status(broker.home)
    assert running is not None

    assert down(broker.home) is True
    assert status(broker.home) is None
    with pytest.raises(ProcessLookupError):  # down() also reaped it: this process started it
        os.kill(running.pid, 0)
    assert down(broker.home) is False

    _without(monkeypatch, "mvn")  # a second start must not need Maven
    libs = resolve_jars()
    jars = {jar.name: jar.stat().st_mtime_ns for jar in libs.iterdir()}
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    restarted = up(port, home=broker.home)
    assert restarted.pid != running.pid
    assert {jar.name: jar.stat().st_mtime_ns for jar in libs.iterdir()} == jars
    assert _consume_one(restarted.bootstrap, topic) == b"kept"
    assert status(broker.home) == restarted


@pytest.mark.kafka
def test_a_broker_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(KafkaSetupError, match=r"did not answer on 127\.0\.0\.1:\d+ within 0\.1s"):
        up(free_port(), home=tmp_path, timeout=0.1)
    assert status(tmp_path) is None
    assert not (tmp_path / "kafka.pid").exists()
