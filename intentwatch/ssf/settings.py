"""Transmitter settings, read from ``INTENTWATCH_SSF_*`` (and the worker's shared) variables.

>>> settings = SsfSettings.from_env({"INTENTWATCH_SSF_PORT": "7070",
...                                  "INTENTWATCH_SSF_RECEIVERS": "receivers.json"})
>>> settings.issuer, settings.upstream_jwks
('http://127.0.0.1:7070', 'http://127.0.0.1:6066/.well-known/jwks.json')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from intentwatch.pipeline.settings import Settings, number, variable

__all__ = ["SsfSettings"]


@dataclass(frozen=True)
class SsfSettings:
    """Everything the transmitter needs; see :meth:`from_env` for the variables."""

    receivers_file: Path
    bootstrap: str = "127.0.0.1:9092"
    port: int = 6070
    bind: str = "127.0.0.1"
    issuer: str = "http://127.0.0.1:6070"
    keys_dir: Path = Path(".intentwatch/ssf-keys")
    upstream_jwks: str = "http://127.0.0.1:6066/.well-known/jwks.json"
    upstream_issuer: str = "urn:intentwatch"
    upstream_audience: str = "urn:intentwatch:credential-brokers"
    state_topic: str = "intentwatch.ssf.streams.v1"
    replication_factor: int = 1
    risk_events: bool = False
    poll_wait: float = 15.0
    redeliver_after: float = 30.0
    push_backoff: float = 0.5
    push_backoff_max: float = 60.0
    min_verification_interval: float = 5.0
    outbox_limit: int = 100_000
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SsfSettings:
        """Read the settings; unset variables keep their defaults.

        ``INTENTWATCH_SSF_RECEIVERS`` (required: the receivers file, see
        :mod:`intentwatch.ssf.receivers`), ``INTENTWATCH_SSF_PORT``,
        ``INTENTWATCH_SSF_BIND``, ``INTENTWATCH_SSF_ISSUER`` (the public base URL,
        ``https`` in production; default ``http://127.0.0.1:<port>``),
        ``INTENTWATCH_SSF_KEYS_DIR``, ``INTENTWATCH_SSF_UPSTREAM_JWKS`` (URL or file
        of the worker's JWKS), ``INTENTWATCH_SSF_STATE_TOPIC``,
        ``INTENTWATCH_SSF_RISK_EVENTS`` (also send CAEP risk-level-change for alert
        verdicts), ``INTENTWATCH_SSF_POLL_WAIT_SECONDS`` (longest long poll),
        ``INTENTWATCH_SSF_REDELIVER_SECONDS`` (a polled SET not acknowledged is
        offered again after it), ``INTENTWATCH_SSF_PUSH_BACKOFF_SECONDS`` and
        ``INTENTWATCH_SSF_PUSH_BACKOFF_MAX_SECONDS`` (first and longest wait between
        push retries), ``INTENTWATCH_SSF_MIN_VERIFICATION_SECONDS``; and the worker's
        ``INTENTWATCH_BOOTSTRAP``, ``INTENTWATCH_ISSUER``, ``INTENTWATCH_AUDIENCE``
        (what the revocations on the topic must carry), ``INTENTWATCH_WEB_HOST`` /
        ``INTENTWATCH_WEB_PORT`` (the default upstream JWKS),
        ``INTENTWATCH_REPLICATION_FACTOR``, ``INTENTWATCH_LOG_LEVEL``.
        """
        env = os.environ if env is None else env
        worker = Settings.from_env(env)
        default = cls(receivers_file=Path())

        def get(name: str, fallback: object) -> str:
            return variable(env, f"SSF_{name}", fallback)

        receivers = get("RECEIVERS", "")
        if not receivers:
            raise ValueError("INTENTWATCH_SSF_RECEIVERS must name the receivers file "
                             "(their names and bearer tokens)")
        port = number("SSF_PORT", get("PORT", default.port), int, what="a positive number")
        return cls(
            receivers_file=Path(receivers),
            bootstrap=worker.bootstrap,
            port=port,
            bind=get("BIND", default.bind),
            issuer=get("ISSUER", f"http://127.0.0.1:{port}").rstrip("/"),
            keys_dir=Path(get("KEYS_DIR", default.keys_dir)),
            upstream_jwks=get(
                "UPSTREAM_JWKS", f"http://{worker.web_host}:{worker.web_port}/.well-known/jwks.json"
            ),
            upstream_issuer=worker.issuer,
            upstream_audience=worker.audience,
            state_topic=get("STATE_TOPIC", default.state_topic),
            replication_factor=worker.replication_factor,
            risk_events=get("RISK_EVENTS", "false").lower() in ("1", "true", "yes", "on"),
            poll_wait=_positive("POLL_WAIT_SECONDS", get("POLL_WAIT_SECONDS", default.poll_wait)),
            redeliver_after=_positive(
                "REDELIVER_SECONDS", get("REDELIVER_SECONDS", default.redeliver_after)
            ),
            push_backoff=_positive(
                "PUSH_BACKOFF_SECONDS", get("PUSH_BACKOFF_SECONDS", default.push_backoff)
            ),
            push_backoff_max=_positive(
                "PUSH_BACKOFF_MAX_SECONDS",
                get("PUSH_BACKOFF_MAX_SECONDS", default.push_backoff_max),
            ),
            min_verification_interval=_positive(
                "MIN_VERIFICATION_SECONDS",
                get("MIN_VERIFICATION_SECONDS", default.min_verification_interval),
            ),
            log_level=worker.log_level,
        )


def _positive(name: str, text: str) -> float:
    return number(f"SSF_{name}", text, float, what="a positive number")
