"""Worker settings, read from ``INTENTWATCH_*`` environment variables.

>>> settings = Settings.from_env({"INTENTWATCH_PARTITIONS": "12"})
>>> settings.partitions, settings.bootstrap, settings.allow_unsigned_grants
(12, '127.0.0.1:9092', False)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from intentwatch.contracts import parse_bootstrap
from intentwatch.pipeline.otlp import ENCODINGS

__all__ = ["Settings", "SettingsError", "number", "variable"]

N = TypeVar("N", int, float)
STORES = ("rocksdb://", "memory://")
"""Table stores: RocksDB files in the data dir (``rocksdict``), or process memory."""
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting has a value the worker cannot use; the message names its variable."""


@dataclass(frozen=True)
class Settings:
    """Everything one stream worker needs to know; see :meth:`from_env` for the variables."""

    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "intentwatch"
    partitions: int = 6
    replication_factor: int = 1
    web_port: int = 6066
    web_bind: str = "127.0.0.1"
    web_host: str = "127.0.0.1"
    data_dir: Path = Path(".intentwatch/worker")
    keys_dir: Path = Path(".intentwatch/keys")
    grant_issuers_jwks: Path | None = None
    allow_unsigned_grants: bool = False
    issuer: str = "urn:intentwatch"
    audience: str = "urn:intentwatch:credential-brokers"
    tick_seconds: float = 0.5
    session_timeout_seconds: float = 6.0
    standby_replicas: int = 1
    population_seconds: float = 30.0
    producer_linger_ms: int = 5
    flush_records: int = 1
    store: str = "rocksdb://"
    warm_from: Path | None = None
    log_level: str = "info"
    otlp_topic: str = "otlp_spans"
    otlp_encoding: str = "otlp_proto"
    stop_seconds: float = 20.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; unset variables keep their defaults.

        ``INTENTWATCH_BOOTSTRAP`` (``host:port[,host:port]``), ``INTENTWATCH_APP_ID``
        (consumer group and table prefix), ``INTENTWATCH_PARTITIONS``,
        ``INTENTWATCH_REPLICATION_FACTOR``, ``INTENTWATCH_WEB_PORT``,
        ``INTENTWATCH_WEB_BIND`` (listen address), ``INTENTWATCH_WEB_HOST`` (advertised
        host), ``INTENTWATCH_DATA_DIR``, ``INTENTWATCH_KEYS_DIR`` (intentwatch's
        signing keyring, created on first start), ``INTENTWATCH_GRANT_ISSUERS_JWKS``
        (JWKS file of the trusted grant issuers), ``INTENTWATCH_ALLOW_UNSIGNED_GRANTS``
        (development only), ``INTENTWATCH_ISSUER`` / ``INTENTWATCH_AUDIENCE`` (``iss``
        and ``aud`` of revocations), ``INTENTWATCH_TICK_SECONDS`` (how often the worker
        writes a tick record into each partition it owns, moving stream time on there),
        ``INTENTWATCH_SESSION_TIMEOUT_SECONDS`` (how long the group waits for a silent
        worker before its partitions move; the broker's ``group.min.session.timeout.ms``
        is the floor), ``INTENTWATCH_STANDBY_REPLICAS`` (workers keeping a warm copy of
        each partition's tables: a worker taking a dead one's partitions then has their
        tables open and nearly up to date; ``bench.failover`` measures it),
        ``INTENTWATCH_POPULATION_SECONDS`` (how often, in stream time, each partition's
        learned role, fleet and shared-model state is written to the ``learned`` table; 0:
        whenever a task's learning changed it; an agent's own state is written whenever
        it changes), ``INTENTWATCH_PRODUCER_LINGER_MS`` (how long the producer waits to
        batch verdicts and audits per produce request; 0: one request per record),
        ``INTENTWATCH_WARM_FROM`` (a learned state made by ``intentwatch
        learn``, taken by each partition that has no learned state in the tables yet),
        ``INTENTWATCH_LOG_LEVEL``,
        ``INTENTWATCH_OTLP_TOPIC`` and ``INTENTWATCH_OTLP_ENCODING`` (the OpenTelemetry
        Collector's span topic and its Kafka exporter's ``encoding``: ``otlp_proto`` or
        ``otlp_json``), ``INTENTWATCH_STOP_SECONDS`` (how long a signalled worker may take
        to stop before it exits anyway: faust's shutdown can wait for an unreachable broker
        for ever).
        """
        env = os.environ if env is None else env
        default = cls()
        get = partial(variable, env)
        jwks, warm_from = get("GRANT_ISSUERS_JWKS", ""), get("WARM_FROM", "")
        return cls(
            bootstrap=_bootstrap(get("BOOTSTRAP", default.bootstrap)),
            app_id=get("APP_ID", default.app_id),
            partitions=_positive_int("PARTITIONS", get("PARTITIONS", default.partitions)),
            replication_factor=_positive_int(
                "REPLICATION_FACTOR", get("REPLICATION_FACTOR", default.replication_factor)
            ),
            web_port=_positive_int("WEB_PORT", get("WEB_PORT", default.web_port)),
            web_bind=get("WEB_BIND", default.web_bind),
            web_host=get("WEB_HOST", default.web_host),
            data_dir=Path(get("DATA_DIR", default.data_dir)),
            keys_dir=Path(get("KEYS_DIR", default.keys_dir)),
            grant_issuers_jwks=Path(jwks) if jwks else None,
            allow_unsigned_grants=_flag(
                "ALLOW_UNSIGNED_GRANTS", env.get("INTENTWATCH_ALLOW_UNSIGNED_GRANTS", "")
            ),
            issuer=get("ISSUER", default.issuer),
            audience=get("AUDIENCE", default.audience),
            tick_seconds=_positive_float("TICK_SECONDS", get("TICK_SECONDS", default.tick_seconds)),
            session_timeout_seconds=_positive_float(
                "SESSION_TIMEOUT_SECONDS",
                get("SESSION_TIMEOUT_SECONDS", default.session_timeout_seconds),
            ),
            standby_replicas=_count(
                "STANDBY_REPLICAS", get("STANDBY_REPLICAS", default.standby_replicas)
            ),
            population_seconds=_seconds(
                "POPULATION_SECONDS", get("POPULATION_SECONDS", default.population_seconds)
            ),
            producer_linger_ms=_count(
                "PRODUCER_LINGER_MS", get("PRODUCER_LINGER_MS", default.producer_linger_ms)
            ),
            flush_records=_positive_int(
                "FLUSH_RECORDS", get("FLUSH_RECORDS", default.flush_records)
            ),
            store=_one_of("STORE", get("STORE", default.store), STORES),
            warm_from=Path(warm_from) if warm_from else None,
            log_level=get("LOG_LEVEL", default.log_level).lower(),
            otlp_topic=get("OTLP_TOPIC", default.otlp_topic),
            otlp_encoding=_one_of("OTLP_ENCODING", get("OTLP_ENCODING", default.otlp_encoding),
                                  ENCODINGS),
            stop_seconds=_positive_float("STOP_SECONDS", get("STOP_SECONDS", default.stop_seconds)),
        )


def _bootstrap(text: str) -> str:
    try:
        parse_bootstrap(text)
    except ValueError as error:
        raise SettingsError(f"INTENTWATCH_BOOTSTRAP: {error}") from None
    return text


def variable(env: Mapping[str, str], name: str, fallback: object) -> str:
    """``INTENTWATCH_<name>`` of ``env``, stripped; ``fallback`` when it is unset or empty.

    >>> variable({"INTENTWATCH_APP_ID": " demo "}, "APP_ID", "intentwatch")
    'demo'
    """
    return env.get(f"INTENTWATCH_{name}", "").strip() or str(fallback)


def number(name: str, text: str, kind: type[N], *, what: str, zero: bool = False) -> N:
    """``text``, the value of ``INTENTWATCH_<name>``, as a ``kind`` above 0 (or 0 itself,
    with ``zero``); else a :class:`SettingsError` saying it must be ``what``.

    >>> number("LINGER_MS", "0", int, what="a whole number (0 or more)", zero=True)
    0
    >>> number("PARTITIONS", "six", int, what="a positive integer")
    Traceback (most recent call last):
    ...
    intentwatch.pipeline.settings.SettingsError: INTENTWATCH_PARTITIONS must be a positive ...
    """
    try:
        value: N | None = kind(text)
    except ValueError:
        value = None
    if value is None or not (value >= 0 if zero else value > 0):  # NaN is neither
        raise SettingsError(f"INTENTWATCH_{name} must be {what}, got {text!r}")
    return value


def _positive_int(name: str, text: str) -> int:
    return number(name, text, int, what="a positive integer")


def _count(name: str, text: str) -> int:
    return number(name, text, int, what="a whole number (0 or more)", zero=True)


def _positive_float(name: str, text: str) -> float:
    return number(name, text, float, what="a positive number of seconds")


def _seconds(name: str, text: str) -> float:
    return number(name, text, float, what="a number of seconds (0 or more)", zero=True)


def _one_of(name: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise SettingsError(f"INTENTWATCH_{name} must be one of {', '.join(choices)}, got {text!r}")
    return text


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE | _FALSE:
        raise SettingsError(f"INTENTWATCH_{name} must be true or false, got {text!r}")
    return value in _TRUE
