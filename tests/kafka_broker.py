"""Pytest plugin: a real Kafka broker for the tests marked ``kafka``.

Register it in ``tests/conftest.py`` with ``pytest_plugins = ["tests.kafka_broker"]``.

``kafka_bootstrap`` is the broker's ``host:port``, one broker per test session: the one
named by ``$INTENTWATCH_TEST_BOOTSTRAP`` if set, else a local broker (see
``intentwatch.local.kafka_broker``) started on a free port in a temporary folder and stopped by
pid when the session ends. ``topic_prefix`` gives each test its own topic names.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from intentwatch.local.kafka_broker import down, free_port, up


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of the session's Kafka broker."""
    external = os.environ.get("INTENTWATCH_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    home = tmp_path_factory.mktemp("kafka")
    broker = up(port=free_port(), home=home)
    try:
        yield broker.bootstrap
    finally:
        down(home)


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, for this test's topic and group names."""
    return f"t-{uuid.uuid4().hex[:12]}-"
