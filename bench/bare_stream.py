"""The baseline for the stream benchmark: a faust app that only forwards records.

One agent (``concurrency=1``, as the pipeline runs them) reads a raw bytes topic and
sends every record, key and value unchanged, to an output topic: no decoding, no
state, no table. What it moves per second is the most a faust worker can do on this
machine, so the intentwatch worker is compared with it.

Run as ``python -m bench.bare_stream`` (the benchmark starts it like a worker, with
:class:`intentwatch.local.worker.WorkerProcess`); configured by the worker's variables
``INTENTWATCH_BOOTSTRAP`` (``host:port``), ``INTENTWATCH_APP_ID``,
``INTENTWATCH_PARTITIONS``, ``INTENTWATCH_WEB_PORT``, ``INTENTWATCH_DATA_DIR``,
``INTENTWATCH_LOG_LEVEL`` and its own ``BENCH_INPUT``, ``BENCH_OUTPUT`` and
``BENCH_NO_SPINNER`` (``1``: drop faust's terminal spinner; with it, a log level of
WARNING or above leaves the root logger at DEBUG, so every debug line of faust, mode
and aiokafka becomes a ``LogRecord``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import faust

__all__ = ["BareSettings", "build_app"]


@dataclass(frozen=True)
class BareSettings:
    """What one forwarding worker needs; see the module docstring for the variables."""

    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "bench-bare"
    input_topic: str = "bench.bare.in"
    output_topic: str = "bench.bare.out"
    partitions: int = 6
    web_port: int = 6067
    data_dir: Path = Path(".intentwatch/bench-bare")
    log_level: str = "warning"
    no_spinner: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BareSettings:
        env = os.environ if env is None else env
        default = cls()
        return cls(
            bootstrap=env.get("INTENTWATCH_BOOTSTRAP", default.bootstrap),
            app_id=env.get("INTENTWATCH_APP_ID", default.app_id),
            input_topic=env.get("BENCH_INPUT", default.input_topic),
            output_topic=env.get("BENCH_OUTPUT", default.output_topic),
            partitions=int(env.get("INTENTWATCH_PARTITIONS", default.partitions)),
            web_port=int(env.get("INTENTWATCH_WEB_PORT", default.web_port)),
            data_dir=Path(env.get("INTENTWATCH_DATA_DIR", str(default.data_dir))),
            log_level=env.get("INTENTWATCH_LOG_LEVEL", default.log_level),
            no_spinner=env.get("BENCH_NO_SPINNER", "") == "1",
        )


def build_app(settings: BareSettings) -> faust.App:
    """A faust app with one agent forwarding ``input_topic`` to ``output_topic``."""
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",
        autodiscover=False,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw", "partitions": settings.partitions}
    source = app.topic(settings.input_topic, **raw)
    sink = app.topic(settings.output_topic, **raw)

    @app.agent(source, name="forward", concurrency=1)
    async def forward(stream: faust.StreamT) -> AsyncIterator[None]:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value)
            yield None

    return app


def main() -> None:
    settings = BareSettings.from_env()
    app = build_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper())
    if settings.no_spinner:
        worker.spinner = None  # else faust sets the root logger to DEBUG to spin on every record
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
