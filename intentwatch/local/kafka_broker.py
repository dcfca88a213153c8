"""A real single-node Apache Kafka broker on this machine, for development and tests.

The broker jars come from Maven Central (resolved once with ``mvn`` into a cache folder,
see ``kafka-pom.xml``, which also sets the Kafka version) and run on the local Java 17+
as one combined broker+controller node in KRaft mode, listening on 127.0.0.1 only.

Each broker has a home folder holding its ``server.properties``, data, log file and pid
file; :func:`up`, :func:`status` and :func:`down` find the broker through it, so a broker
started by one process (the CLI, a test session) can be stopped by another.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from intentwatch.local.processes import run, spawn, tail_file

__all__ = [
    "KAFKA_VERSION",
    "KafkaSetupError",
    "LocalKafka",
    "down",
    "free_port",
    "port_is_free",
    "resolve_jars",
    "server_properties",
    "status",
    "up",
]

POM = Path(__file__).with_name("kafka-pom.xml")
MIN_JAVA = 17
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

_CONFIG = "server.properties"
_LOG4J = "log4j.properties"
_DATA = "data"
_LOG = "kafka.log"
_PID = "kafka.pid"

_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _pom_kafka_version() -> str:
    version = ET.parse(POM).getroot().findtext("m:properties/m:kafka.version", namespaces=_POM_NS)
    if not version:
        raise RuntimeError(f"{POM} sets no <kafka.version> property")
    return version.strip()


KAFKA_VERSION = _pom_kafka_version()
"""Apache Kafka version of the local broker, read from ``kafka-pom.xml``."""


@dataclass(frozen=True)
class LocalKafka:
    """A running local broker."""

    bootstrap: str
    """``host:port`` for clients, e.g. ``"127.0.0.1:9092"``."""
    pid: int
    """Process id of the broker's JVM."""
    home: Path
    """State folder: config, data, log file and pid file."""
    log_file: Path
    """Where the broker's stdout, stderr and log4j output go."""


class KafkaSetupError(RuntimeError):
    """The local broker cannot be set up or started; the message says what to do."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_properties(
    port: int, controller_port: int, data_dir: Path, *, partitions: int = 1
) -> str:
    """Return the ``server.properties`` of a single combined broker+controller KRaft node.

    Both listeners bind 127.0.0.1 only; every replication factor is 1 and consumer groups
    rebalance without delay, so a single node behaves well in tests. Topics are never
    created on first use (``intentwatch topics create`` makes them); ``partitions`` is
    the count of a topic created without one.
    """
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Static quorum: the voter set lives in this file, not in the metadata log, so the
        # controller may get a different free port on every start.
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "log.segment.bytes": str(16 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _default_home() -> Path:
    return Path(os.environ.get("INTENTWATCH_HOME", ".intentwatch")) / "kafka"


def _default_cache() -> Path:
    return Path(os.environ.get("INTENTWATCH_CACHE", Path.home() / ".cache" / "intentwatch"))


def _java() -> str:
    """Return the path of a Java 17+ ``java`` or raise :class:`KafkaSetupError`."""
    install = "install it with `apt-get install openjdk-17-jre-headless` (or any JDK 17+)"
    java = shutil.which("java")
    if java is None:
        raise KafkaSetupError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker: {install}."
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(?:1\.)?(\d+)', result.stderr + result.stdout)  # 1.8.0 is 8
    if found is None or int(found[1]) < MIN_JAVA:
        version = f"Java {found[1]}" if found else "of unknown version"
        raise KafkaSetupError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker, but {java} is "
            f"{version}: {install}."
        )
    return java


def resolve_jars(cache: Path | None = None) -> Path:
    """Return the folder with the broker's jars, resolving them with Maven on first use.

    The jars land in ``<cache>/kafka-<version>/libs``: Maven copies them into a temporary
    folder that is renamed only once complete, so an interrupted download is never used.
    """
    version_dir = (cache or _default_cache()).expanduser().resolve() / f"kafka-{KAFKA_VERSION}"
    libs = version_dir / "libs"
    if libs.is_dir():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(
            "Maven is needed once to download the local Kafka broker from Maven Central: "
            "install it with `apt-get install maven`."
        )
    print(
        f"Downloading Apache Kafka {KAFKA_VERSION} from Maven Central into {libs} "
        "(first run only, takes a minute)...",
        file=sys.stderr,
        flush=True,
    )
    version_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".resolving-", dir=version_dir))
    try:
        shutil.copyfile(POM, work / "pom.xml")
        run([mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={work / 'libs'}"],
            KafkaSetupError, f"Maven could not download Apache Kafka {KAFKA_VERSION}")
        with contextlib.suppress(OSError):  # fails only if a concurrent run finished first
            (work / "libs").rename(libs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs


def up(
    port: int = 9092,
    *,
    home: Path | None = None,
    cache: Path | None = None,
    timeout: float = 60.0,
    partitions: int = 1,
) -> LocalKafka:
    """Start a local broker on ``127.0.0.1:port`` and wait until it answers metadata requests.

    ``home`` defaults to ``$INTENTWATCH_HOME/kafka`` (``./.intentwatch/kafka`` if unset),
    ``cache`` to ``$INTENTWATCH_CACHE`` (``~/.cache/intentwatch``); ``partitions`` is the
    partition count of a topic created without one (none is created on first use). If
    this home's broker already runs on ``port`` it is returned as is. The storage is
    formatted on first start only, so data survives restarts. Raises
    :class:`KafkaSetupError` when Java or Maven is missing, the port is taken, or the
    broker does not get ready within ``timeout`` seconds (it is then stopped).
    """
    home = (home or _default_home()).expanduser().resolve()
    running = status(home)
    if running is not None:
        if running.bootstrap == f"127.0.0.1:{port}":
            return running
        raise KafkaSetupError(
            f"The local Kafka broker of {home} already runs on {running.bootstrap}: "
            "stop it before starting it on another port."
        )
    if not port_is_free(port):
        raise KafkaSetupError(
            f"Port {port} on 127.0.0.1 is already in use: stop what listens there or pick "
            "another port for the local Kafka broker."
        )
    java = _java()
    libs = resolve_jars(cache)

    home.mkdir(parents=True, exist_ok=True)
    config, data, log_file = home / _CONFIG, home / _DATA, home / _LOG
    config.write_text(server_properties(port, free_port(), data, partitions=partitions))
    (home / _LOG4J).write_text(_LOG4J_PROPERTIES)
    classpath = [f"-Dlog4j.configuration={(home / _LOG4J).as_uri()}", "-cp", f"{libs}/*"]
    if not (data / "meta.properties").exists():
        _format_storage([java, *classpath], config)

    broker = spawn([java, "-Xms256m", "-Xmx1g", *classpath, "kafka.Kafka", str(config)],
                   log_file, cwd=home)
    (home / _PID).write_text(f"{broker.pid}\n")
    started = LocalKafka(f"127.0.0.1:{port}", broker.pid, home, log_file)
    try:
        deadline = time.monotonic() + timeout
        while not _answers_metadata(port):
            if broker.poll() is not None:
                raise KafkaSetupError(
                    f"The local Kafka broker exited with code {broker.returncode} while "
                    f"starting; the end of {log_file}:\n{tail_file(log_file)}"
                )
            if time.monotonic() > deadline:
                raise KafkaSetupError(
                    f"The local Kafka broker did not answer on {started.bootstrap} within "
                    f"{timeout:g}s and was stopped; the end of {log_file}:\n{tail_file(log_file)}"
                )
            time.sleep(0.2)
    except BaseException:
        down(home)
        raise
    return started


def down(home: Path | None = None, *, timeout: float = 20.0) -> bool:
    """Stop the broker of ``home``: SIGTERM, then SIGKILL if it still runs after ``timeout``.

    Returns True if a broker was running and got stopped, False if none was running.
    """
    home = (home or _default_home()).expanduser().resolve()
    running = status(home)
    if running is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is_broker(running.pid, home) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _is_broker(running.pid, home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.pid, signal.SIGKILL)
            while _is_broker(running.pid, home):
                time.sleep(0.05)
        # It has exited; if this process started it, collect it so it leaves no zombie.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(running.pid, 0)
    (home / _PID).unlink(missing_ok=True)
    return running is not None


def status(home: Path | None = None) -> LocalKafka | None:
    """Return the broker of ``home`` if its pid is alive and is that broker's JVM, else None."""
    home = (home or _default_home()).expanduser().resolve()
    try:
        pid = int((home / _PID).read_text().strip())
        config = (home / _CONFIG).read_text()
    except (OSError, ValueError):
        return None
    advertised = re.search(r"^advertised\.listeners=PLAINTEXT://(\S+)$", config, re.MULTILINE)
    if advertised is None or not _is_broker(pid, home):
        return None
    return LocalKafka(advertised[1], pid, home, home / _LOG)


def _format_storage(jvm: list[str], config: Path) -> None:
    """Format the KRaft storage named in ``config`` with a new random cluster id.

    ``jvm`` is the ``java`` command with the broker's classpath.
    """
    cluster_id = "-"
    while cluster_id.startswith("-"):  # an id starting with "-" would read as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    run([*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
        KafkaSetupError, "Formatting the local Kafka broker's storage failed")


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the JVM, ignore connections of a previous broker lingering in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers_metadata(port: int) -> bool:
    """True if 127.0.0.1:port answers a Kafka Metadata request listing at least one broker."""
    client_id = b"intentwatch-localkafka"
    # Metadata v4 (api key 3): request header v1, then topics = [] and
    # allow_auto_topic_creation = false. Response: correlation id, throttle ms, brokers[...].
    request = (
        struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id + struct.pack(">i?", 0, False)
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            head = b""
            while len(head) < 16:
                chunk = sock.recv(16 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _size, correlation_id, _throttle_ms, brokers = struct.unpack(">iiii", head)
    return correlation_id == 7 and brokers > 0


def _is_broker(pid: int, home: Path) -> bool:
    """True if ``pid`` is alive and runs ``kafka.Kafka`` with the config of ``home``."""
    if Path("/proc").is_dir():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            command = raw.replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
    else:  # no /proc (macOS)
        result = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
        command = result.stdout
    return "kafka.Kafka" in command.split() and str(home / _CONFIG) in command
