"""The ``intentwatch`` command.

Each subcommand imports what it needs when it runs, so ``--help`` is instant. A user's
mistake ends in one line and exit code 2 (:mod:`intentwatch.user_errors`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from intentwatch.user_errors import Commands, UserError

app = typer.Typer(
    help="Runtime enforcement for AI agents: score every tool call against the task's "
    "approved intent and revoke credentials when behaviour leaves it.\n\n"
    "New here? Run `intentwatch demo`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    cls=Commands,
)
kafka_app = typer.Typer(
    help="A local single-node Apache Kafka (KRaft) on 127.0.0.1, for development and tests.",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="intentwatch's signing keys (revocations are signed with the active key).",
    no_args_is_help=True,
)
topics_app = typer.Typer(
    help="The Kafka topics intentwatch uses: create them before anything publishes, check them.",
    no_args_is_help=True,
)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(keys_app, name="keys")
console = Console()

KafkaHome = Annotated[
    Path | None, typer.Option(help="State folder of the broker.",
                              show_default="$INTENTWATCH_HOME/kafka, else ./.intentwatch/kafka")
]
KeysDir = Annotated[
    Path,
    typer.Option(envvar="INTENTWATCH_KEYS_DIR", help="Folder of the signing keyring."),
]
DEFAULT_KEYS_DIR = Path(".intentwatch/keys")


# -- local Kafka -----------------------------------------------------------------------------


@kafka_app.command("up")
def kafka_up(
    port: Annotated[int, typer.Option(help="Broker port on 127.0.0.1.")] = 9092,
    home: KafkaHome = None,
) -> None:
    """Start the broker (first use resolves the Kafka jars with Maven into a cache)."""
    from intentwatch.local import kafka_broker as localkafka

    broker = localkafka.up(port, home=home)  # a port in use, no Java ...: one line, exit 2
    console.print(f"Kafka is up at [bold]{broker.bootstrap}[/bold] (pid {broker.pid}, "
                  f"log {broker.log_file})")


@kafka_app.command("down")
def kafka_down(home: KafkaHome = None) -> None:
    """Stop the broker started by `intentwatch kafka up`."""
    from intentwatch.local import kafka_broker as localkafka

    console.print("Kafka stopped." if localkafka.down(home) else "No local Kafka was running.")


@kafka_app.command("status")
def kafka_status(home: KafkaHome = None) -> None:
    """Say whether the local broker runs, and where."""
    from intentwatch.local import kafka_broker as localkafka

    broker = localkafka.status(home)
    if broker is None:
        console.print("No local Kafka is running.")
        raise typer.Exit(1)
    console.print(f"Kafka runs at {broker.bootstrap} (pid {broker.pid}, log {broker.log_file})")


# -- topics ----------------------------------------------------------------------------------

Bootstrap = Annotated[
    str, typer.Option(envvar="INTENTWATCH_BOOTSTRAP", help="Kafka bootstrap servers.")
]
Partitions = Annotated[
    int, typer.Option(envvar="INTENTWATCH_PARTITIONS", min=1,
                      help="Partitions of each topic (the workers' INTENTWATCH_PARTITIONS).")
]
Replication = Annotated[
    int, typer.Option(envvar="INTENTWATCH_REPLICATION_FACTOR", min=1,
                      help="Replication factor of each topic.")
]
AppId = Annotated[
    str, typer.Option(envvar="INTENTWATCH_APP_ID",
                      help="The workers' app id, which names their tables' changelog topics.")
]


@topics_app.command("create")
def topics_create(
    bootstrap: Bootstrap = "127.0.0.1:9092",
    partitions: Partitions = 6,
    replication: Replication = 1,
    app_id: AppId = "intentwatch",
) -> None:
    """Create the missing topics (inputs, outputs, compacted changelogs), then check them all."""
    from intentwatch.pipeline.app import worker_topics
    from intentwatch.pipeline.settings import Settings
    from intentwatch.pipeline.topics import create_topics

    settings = Settings(bootstrap=bootstrap, app_id=app_id, partitions=partitions,
                        replication_factor=replication)
    specs = worker_topics(settings)
    created = create_topics(bootstrap, specs.values())
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
    _check_topics(settings, specs)


@topics_app.command("check")
def topics_check(
    bootstrap: Bootstrap = "127.0.0.1:9092",
    partitions: Partitions = 6,
    replication: Replication = 1,
    app_id: AppId = "intentwatch",
) -> None:
    """Compare Kafka's topics with what the workers need; exit 1 if any differs."""
    from intentwatch.pipeline.app import worker_topics
    from intentwatch.pipeline.settings import Settings

    settings = Settings(bootstrap=bootstrap, app_id=app_id, partitions=partitions,
                        replication_factor=replication)
    _check_topics(settings, worker_topics(settings))


def _check_topics(settings: Any, specs: dict[str, Any]) -> None:
    from intentwatch.pipeline.topics import describe_topics

    found = describe_topics(settings.bootstrap, specs)
    table = Table(title=f"intentwatch topics on {settings.bootstrap}")
    table.add_column("topic", no_wrap=True)
    for column in ("partitions", "replication", "cleanup.policy", "state"):
        table.add_column(column)
    problems = []
    for name, spec in specs.items():
        topic = found[name]
        wrong = spec.problems(topic)
        problems += wrong
        table.add_row(
            name, "-" if topic is None else str(topic.partitions),
            "-" if topic is None else str(topic.replication),
            "-" if topic is None else topic.configs.get("cleanup.policy", "-"),
            "[red]missing[/red]" if topic is None else "[red]differs[/red]" if wrong else "ok",
        )
    console.print(table)
    if problems:
        for problem in problems:
            console.print(f"[red]{problem}[/red]", highlight=False)
        console.print(
            "Fix: `intentwatch topics create` makes missing topics; a topic with other "
            "partitions or settings must be deleted and created again (or, for partitions, "
            f"set INTENTWATCH_PARTITIONS to its count everywhere, now {settings.partitions}).",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print("all topics as the workers need them")


# -- worker and demo -------------------------------------------------------------------------


@app.command()
def worker(
    warm_from: Annotated[
        Path | None,
        typer.Option(help="Start from this learned state (`intentwatch learn`) when the worker "
                          "has learned nothing of its own yet.",
                     show_default="$INTENTWATCH_WARM_FROM"),
    ] = None,
) -> None:
    """Run a stream worker (configured by INTENTWATCH_* environment variables)."""
    from dataclasses import replace

    from intentwatch.pipeline.settings import Settings
    from intentwatch.pipeline.worker import run_worker

    settings = Settings.from_env()
    run_worker(replace(settings, warm_from=warm_from) if warm_from else settings)


@app.command()
def ssf() -> None:
    """Run the OpenID Shared Signals transmitter: revocations to SSF receivers by poll or push
    (configured by INTENTWATCH_SSF_* variables; INTENTWATCH_SSF_RECEIVERS names the receivers)."""
    from intentwatch.ssf.server import run_transmitter
    from intentwatch.ssf.settings import SsfSettings

    try:
        settings = SsfSettings.from_env()
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    run_transmitter(settings)


@app.command()
def demo(
    bootstrap: Annotated[
        str | None,
        typer.Option(envvar="INTENTWATCH_BOOTSTRAP",
                     help="Use this Kafka instead of starting a local one."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, help="Seed of the simulated fleet and its hijacks "
                                 "(default: a new one each run, printed)."),
    ] = None,
    agents: Annotated[
        int, typer.Option(min=1, help="Agents per role in the simulated fleet.")
    ] = 2,
    duration: Annotated[float, typer.Option(min=1.0, help="Seconds of live traffic.")] = 45.0,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Leave the local Kafka and the demo's data running "
                                    "for `audit`, `explain` and `replay` afterwards."),
    ] = False,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port of the local Kafka the demo starts "
                                            "(default: 9092, or a free one if it is taken)."),
    ] = None,
) -> None:
    """Run the whole loop: Kafka, a worker, a simulated fleet, live revocations, a summary."""
    from intentwatch.demo import run_demo

    raise typer.Exit(run_demo(bootstrap=bootstrap, seed=seed, agents=agents, duration=duration,
                              keep=keep, port=port))


# -- offline ---------------------------------------------------------------------------------


@app.command()
def fleet(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSON Lines.")],
    seed: Annotated[
        int, typer.Option(min=0, help="Seed; the same seed gives the same fleet.")
    ] = 0,
    agents: Annotated[int, typer.Option(min=1, help="Agents per role.")] = 3,
    days: Annotated[
        float, typer.Option(min=0.0, help="Days of benign history before attacks.")
    ] = 7.0,
) -> None:
    """Write a labelled synthetic fleet in the replay format."""
    from intentwatch.simulation.fleet import FleetSpec, generate, write_jsonl

    events = generate(FleetSpec(seed=seed, agents_per_role=agents, history_days=days))
    write_jsonl(events, out)
    console.print(f"wrote {len(events):,} events to {out}")


ConfigOption = Annotated[
    Path | None, typer.Option(help="Scoring config.",
                              show_default="$INTENTWATCH_SCORING_CONFIG, else the shipped one")
]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Stop at the first bad line instead.")
]


class Recording:
    """Reads a recorded file's events; a bad line is listed in ``rejected`` as
    ``file:line: reason`` and skipped (with ``strict`` it ends the run)."""

    def __init__(self, events: Path, rejected: Path, strict: bool) -> None:
        self.events, self.rejected, self.strict = events, rejected, strict
        self.read = 0
        self.bad: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        from intentwatch.recorded import read_events

        with self.rejected.open("w") as sink:
            def reject(line: Any) -> None:
                if self.strict:
                    raise UserError(f"{line} (without --strict bad lines are listed and skipped)")
                self.bad.append(line)
                sink.write(f"{line}\n")

            for event in read_events(self.events, reject):
                self.read += 1
                yield event
        if not self.bad:
            self.rejected.unlink()

    def report(self) -> None:
        if self.bad:
            console.print(f"[yellow]{len(self.bad)} bad line(s) skipped, listed in "
                          f"{self.rejected}; the first: {self.bad[0]}[/yellow]", highlight=False)


@app.command()
def replay(
    events: Annotated[Path, typer.Argument(help="Recorded events, JSON Lines (replay format).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the verdicts.")],
    config: ConfigOption = None,
    rejected: Annotated[
        Path | None, typer.Option(help="Where bad lines are listed, `file:line: reason` each.",
                                  show_default="OUT with .rejected.txt")
    ] = None,
    strict: StrictOption = False,
) -> None:
    """Run the engine offline over recorded telemetry and write one verdict per tool call.

    A line that is not a valid event is listed in the rejected file and skipped, as the
    worker dead-letters a bad record and goes on (with --strict it ends the replay).
    """
    from rich.progress import BarColumn, Progress, TimeElapsedColumn

    from intentwatch.contracts import encode
    from intentwatch.models.config import load_config
    from intentwatch.models.engine import Engine
    from intentwatch.models.replay import ReplaySummary
    from intentwatch.models.replay import replay as run_replay

    recording = Recording(events, rejected or out.with_name(out.name + ".rejected.txt"), strict)
    engine = Engine(load_config(config))
    summary = ReplaySummary()
    started = time.perf_counter()
    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    with progress, out.open("wb") as verdicts:
        task = progress.add_task("replaying", total=None)
        for outcome in run_replay(recording, engine):
            summary.add(outcome)
            for verdict in outcome.verdicts:
                verdicts.write(encode(verdict) + b"\n")
            progress.advance(task)
    seconds = time.perf_counter() - started
    table = Table(title=f"replay of {events.name} (config {engine.config.version})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("events", f"{recording.read:,}")
    table.add_row("bad lines (skipped)", f"{len(recording.bad):,}")
    table.add_row("tool calls (verdicts)", f"{summary.calls:,}")
    for decision in ("allow", "alert", "revoke"):
        table.add_row(f"  {decision}", f"{summary.decisions[decision]:,}")
    for reason, count in summary.revocations.most_common():
        table.add_row(f"revocations: {reason}", f"{count:,}")
    table.add_row("throughput", f"{recording.read / seconds:,.0f} events/s ({seconds:.2f} s)")
    console.print(table)
    console.print(f"verdicts written to {out}")
    recording.report()


@app.command()
def learn(
    events: Annotated[Path, typer.Argument(help="Recorded events, JSON Lines (replay format).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the learned state.")
    ] = Path("learned.state"),
    config: ConfigOption = None,
    strict: StrictOption = False,
) -> None:
    """Learn from recorded telemetry what a worker learns live, for `worker --warm-from`.

    The recording is replayed through the same engine as `replay`; the calls of every task
    that ends without revocation enter the baselines and the shared model. Bad lines are
    listed in OUT.rejected.txt and skipped (with --strict they end the run).
    """
    from intentwatch.models.config import load_config
    from intentwatch.models.engine import Engine
    from intentwatch.models.replay import ReplaySummary
    from intentwatch.models.replay import replay as run_replay

    recording = Recording(events, out.with_name(out.name + ".rejected.txt"), strict)
    engine = Engine(load_config(config))
    summary = ReplaySummary()
    for outcome in run_replay(recording, engine):
        summary.add(outcome)
    detector = engine.detector
    out.write_bytes(detector.state(engine.learned))  # the agents it no longer holds too
    history = detector.history_summary()
    agents = len(detector.learned_agents() | set(engine.learned))
    for_cause = sum(n for reason, n in summary.revocations.items() if reason != "task_completed")
    console.print(
        f"learned {detector.learned_calls:,} of {summary.calls:,} calls in "
        f"{recording.read:,} events (tasks revoked for cause, {for_cause:,}, are not learned): "
        f"{agents:,} agents in {history['roles']:,} roles, "
        f"{history['cold_roles']:,} of them with fewer than {history['min_history_tasks']} "
        "clean tasks (their destinations are not checked yet)", soft_wrap=True)
    console.print(f"wrote {out}; start a worker from it: intentwatch worker --warm-from {out}",
                  soft_wrap=True, highlight=False)
    recording.report()


# -- audit -----------------------------------------------------------------------------------


class GroupBy(StrEnum):
    agent = "agent"
    role = "role"


class DecisionName(StrEnum):
    allow = "allow"
    alert = "alert"
    revoke = "revoke"


Timeout = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait for Kafka at most.")
]


@app.command()
def audit(
    bootstrap: Annotated[
        str, typer.Option(envvar="INTENTWATCH_BOOTSTRAP", help="Kafka bootstrap servers.")
    ] = "127.0.0.1:9092",
    by: Annotated[GroupBy, typer.Option(help="Group by agent or by role.")] = GroupBy.role,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    timeout: Timeout = 10.0,
) -> None:
    """Right-sizing advice from the audit topic: privileges granted but never used, and a
    narrow grant for requests that delegate to data."""
    from intentwatch.audit_reader import read_audit_records
    from intentwatch.models.rightsizing import advise

    advice = advise(read_audit_records(bootstrap, timeout=timeout), by=by.value)
    if as_json:
        print(json.dumps([group.to_dict() for group in advice], indent=2))
        return
    table = Table(title=f"granted but never used, by {by}")
    for column in ("group", "tasks", "revoked", "out-of-grant calls", "never-used privileges",
                   "requests that delegate to data: grant them narrowly"):
        table.add_column(column)
    for group in advice:
        unused = [
            f"{kind}: {pattern} (granted in {count} tasks)"
            for kind, patterns in group.never_used.items()
            for pattern, count in patterns.items()
        ]
        narrow = group.delegating_grant()
        delegating = "-" if narrow is None else f"{group.delegating_tasks} tasks: " + "; ".join(
            f"{kind} {', '.join(values) or '(none)'}" for kind, values in narrow.items()
        )
        table.add_row(group.group, str(group.tasks), str(group.revoked_tasks),
                      str(group.out_of_grant_calls), "\n".join(unused) or "-", delegating)
    console.print(table)


# -- why: explain and tail ------------------------------------------------------------------

Jwks = Annotated[
    str | None,
    typer.Option(help="intentwatch's JWKS (URL or file) to verify revocations with.",
                 show_default="the keyring in $INTENTWATCH_KEYS_DIR, else "
                              "http://127.0.0.1:6066/.well-known/jwks.json"),
]


@app.command()
def explain(
    event_id: Annotated[
        str | None, typer.Argument(help="The event id of a tool call.", show_default=False)
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="A task id instead: all its calls.")
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="Only this agent's task (task ids may repeat).")
    ] = None,
    bootstrap: Bootstrap = "127.0.0.1:9092",
    jwks: Jwks = None,
    keys_dir: KeysDir = DEFAULT_KEYS_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    timeout: Timeout = 10.0,
) -> None:
    """Why: a call's (or a task's) verdicts with scores, reasons and components, the task's
    revocations and its audit, read from the topics."""
    from intentwatch.explain import explain as gather
    from intentwatch.explain import render, revocation_verifier

    if (event_id is None) == (task is None):
        raise UserError("name a call (EVENT_ID) or a task (--task TASK_ID), not both")
    verifier = revocation_verifier(jwks, keys_dir, timeout=timeout)
    found = gather(bootstrap, verifier, event_id=event_id, task_id=task, agent_id=agent,
                   timeout=timeout)
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
    else:
        render(found, console)
    if not found.found:
        raise UserError(f"nothing on the topics of {bootstrap} about "
                        + (f"call {event_id}" if event_id else f"task {task}"))


@app.command()
def tail(
    decision: Annotated[
        list[DecisionName] | None,
        typer.Option(help="Only verdicts with this decision (repeat for several).",
                     show_default="all"),
    ] = None,
    reason: Annotated[
        list[str] | None,
        typer.Option(help="Only verdicts with this reason code, or revocations with this "
                          "reason (repeat for several).", show_default="all"),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the topics' beginning.")
    ] = False,
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many lines.",
                                 show_default="follow until Ctrl-C")
    ] = None,
    bootstrap: Bootstrap = "127.0.0.1:9092",
    jwks: Jwks = None,
    keys_dir: KeysDir = DEFAULT_KEYS_DIR,
    timeout: Timeout = 10.0,
) -> None:
    """Follow verdicts and revocations live, one line each, filtered by decision and reason."""
    from intentwatch.explain import follow, line_of, revocation_verifier

    verifier = revocation_verifier(jwks, keys_dir, timeout=timeout)
    shown = 0
    try:
        for item in follow(bootstrap, verifier, decisions=[d.value for d in decision or ()],
                           reasons=reason or (), agent_id=agent,
                           from_beginning=from_beginning, timeout=timeout):
            print(line_of(item), flush=True)
            shown += 1
            if count is not None and shown >= count:
                return
    except KeyboardInterrupt:
        return


# -- keys ------------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    keys_dir: KeysDir = DEFAULT_KEYS_DIR,
    alg: Annotated[str, typer.Option(help="ES256, EdDSA or RS256.")] = "ES256",
) -> None:
    """Create a keyring with one signing key."""
    from intentwatch.tokens.keys import Keyring

    try:
        keyring = Keyring.create(keys_dir, alg)
    except FileExistsError:
        raise UserError(f"{keys_dir} already holds a keyring: `intentwatch keys rotate` adds a "
                        "new active key to it") from None
    console.print(f"created keyring {keys_dir} with active key {keyring.active.kid}")


@keys_app.command("rotate")
def keys_rotate(
    keys_dir: KeysDir = DEFAULT_KEYS_DIR,
    alg: Annotated[str | None, typer.Option(help="Algorithm of the new key.")] = None,
) -> None:
    """Make a new active key; older keys stay in the JWKS until pruned."""
    from intentwatch.tokens.keys import Keyring

    key = Keyring.load(keys_dir).rotate(alg)
    console.print(f"new active key {key.kid}; restart workers to sign with it")


@keys_app.command("prune")
def keys_prune(
    keys_dir: KeysDir = DEFAULT_KEYS_DIR,
    older_than: Annotated[
        float,
        typer.Option(min=0.0, help="Drop keys replaced more than this many seconds ago.",
                     show_default="604800 (7 days, the revocation topic's retention)"),
    ] = 7 * 86400.0,
) -> None:
    """Drop retired keys once no token they signed can still be on the revocation topic."""
    from intentwatch.tokens.keys import Keyring

    dropped = Keyring.load(keys_dir).prune(older_than)
    console.print(f"pruned {len(dropped)} key(s): {', '.join(dropped) or '-'}")


@keys_app.command("jwks")
def keys_jwks(keys_dir: KeysDir = DEFAULT_KEYS_DIR) -> None:
    """Print the public JWKS that receivers verify revocations with."""
    from intentwatch.tokens.keys import Keyring

    print(json.dumps(Keyring.load(keys_dir).jwks(), indent=2))
