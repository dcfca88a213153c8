"""Run one stream worker: ``python -m intentwatch.pipeline.worker`` or ``intentwatch worker``.

Configured by ``INTENTWATCH_*`` environment variables
(:class:`~intentwatch.pipeline.settings.Settings`).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

import faust
from kafka.errors import KafkaError

from intentwatch.local.kafka_broker import port_is_free
from intentwatch.pipeline.app import INPUT_TOPICS, Pipeline, worker_topics
from intentwatch.pipeline.settings import Settings, SettingsError
from intentwatch.pipeline.topics import adopted_partitions, describe_topics, ensure_topics
from intentwatch.tokens.grants import GrantVerifier
from intentwatch.tokens.keys import Keyring

__all__ = ["StopBoundedWorker", "grant_verifier", "load_keyring", "run_worker"]

log = logging.getLogger(__name__)

_KEY_ALG = "ES256"
EXIT_STOP_TIMEOUT = 75
"""The exit code of a worker that did not stop in time (``EX_TEMPFAIL``)."""


class StopBoundedWorker(faust.Worker):
    """faust's worker, which exits ``stop_seconds`` after SIGTERM or SIGINT if stopping
    has not finished by then. faust waits for its consumer thread to stop, and with the
    broker gone that thread can fail while stopping and never say so: the process would
    hang until killed. Nothing is lost by exiting: what was read since the last offset
    commit is read again by the next owner of the partitions, and a call read again gets
    the verdict it had."""

    def __init__(self, *args: object, stop_seconds: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stop_seconds = stop_seconds
        self._deadline: threading.Timer | None = None

    def _on_sigterm(self) -> None:
        self._arm_deadline()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_deadline()
        super()._on_sigint()

    def _arm_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = threading.Timer(self.stop_seconds, self._stop_timed_out)
            self._deadline.daemon = True
            self._deadline.start()

    def _stop_timed_out(self) -> None:
        log.error("the worker did not stop within %g s of the signal (INTENTWATCH_STOP_SECONDS;"
                  " is Kafka unreachable?): exiting with code %d", self.stop_seconds,
                  EXIT_STOP_TIMEOUT)
        logging.shutdown()
        os._exit(EXIT_STOP_TIMEOUT)


def load_keyring(path: Path) -> Keyring:
    """intentwatch's signing keyring at ``path``, created with one key on first start."""
    try:
        return Keyring.load(path)
    except FileNotFoundError:
        pass
    try:
        return Keyring.create(path, _KEY_ALG)
    except FileExistsError:  # another worker made it first
        return Keyring.load(path)


def grant_verifier(settings: Settings) -> GrantVerifier:
    """The verifier of signed grants from the trusted issuers of ``settings``."""
    if settings.grant_issuers_jwks is None and not settings.allow_unsigned_grants:
        raise SystemExit(
            "Set INTENTWATCH_GRANT_ISSUERS_JWKS to the JWKS file of the credential brokers whose "
            "grants to trust (or INTENTWATCH_ALLOW_UNSIGNED_GRANTS=1 for development only)."
        )
    jwks = settings.grant_issuers_jwks
    if jwks is not None and not jwks.is_file():
        raise SettingsError(
            f"INTENTWATCH_GRANT_ISSUERS_JWKS names {jwks}, which is not a file: write the JWKS "
            "of the credential brokers whose grants to trust there"
        )
    if settings.allow_unsigned_grants:
        log.warning("accepting UNSIGNED grants: development only, anyone who can write the "
                    "grants topic can grant anything")
    verifier = GrantVerifier(
        settings.grant_issuers_jwks, allow_unsigned=settings.allow_unsigned_grants
    )
    if settings.grant_issuers_jwks is not None and not verifier.binds_issuers:
        log.warning("%s is a plain JWKS: a grant signed by any of its keys may name any "
                    'issuer; {"issuers": {issuer: JWKS}} binds each key to its issuer',
                    settings.grant_issuers_jwks)
    return verifier


def run_worker(settings: Settings) -> None:
    """Run a worker until it is stopped (SIGINT/SIGTERM); blocks.

    The worker adopts the partition count of existing input topics (they must agree);
    ``settings.partitions`` applies to the topics it creates on an empty Kafka.
    """
    verifier = grant_verifier(settings)
    if not port_is_free(settings.web_port):
        raise SettingsError(
            f"INTENTWATCH_WEB_PORT {settings.web_port} is in use (another worker?): give each "
            "worker its own port"
        )
    keyring = load_keyring(settings.keys_dir)
    try:
        found = describe_topics(settings.bootstrap, INPUT_TOPICS)
        partitions = adopted_partitions(found, settings.partitions)
        if partitions != settings.partitions:
            log.info("adopting the %d partitions of the existing input topics", partitions)
            settings = replace(settings, partitions=partitions)
        pipeline = Pipeline(settings, keyring=keyring, grant_verifier=verifier,
                            store=settings.store)
        ensure_topics(settings.bootstrap, worker_topics(settings))
    except KafkaError as error:
        raise SettingsError(
            f"INTENTWATCH_BOOTSTRAP {settings.bootstrap}: Kafka does not answer there "
            f"({type(error).__name__}); is a broker running? `intentwatch kafka up` starts one"
        ) from None
    # What is loaded by now (libraries, config, models) lives as long as the process: out
    # of the collector's sight, the full collections faust's RocksDB store runs for each
    # table at every rebalance take milliseconds instead of seconds. aiokafka sends no
    # heartbeat while the assignment is being taken, so seconds there outlast the session
    # and drop the worker from its group: a rebalance again, and again under load.
    gc.freeze()
    worker = StopBoundedWorker(pipeline.app, loglevel=settings.log_level.upper(),
                               stop_seconds=settings.stop_seconds)
    worker.spinner = None  # else faust sets the root logger to DEBUG to spin on every record
    worker.execute_from_commandline()


if __name__ == "__main__":
    try:
        run_worker(Settings.from_env())
    except SettingsError as error:
        raise SystemExit(str(error)) from None
