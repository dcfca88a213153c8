"""Detection quality of the engine on held-out synthetic fleets.

What is measured: the verdicts of :class:`~intentwatch.models.engine.Engine` (grant
conformance, intent alignment, per-agent baselines, the shared model and
their fusion, with the shipped scoring config) replayed over labelled fleets
from :mod:`intentwatch.simulation.fleet`, one fresh engine per seed, each fleet starting
cold and learning from its own benign history. Weights and thresholds were
fitted on seeds 0-5; the default report seeds (10-12) were never fitted on
(their figures were looked at between development steps, so seeds 20 and up
are the ones no decision has seen).

Figures (:mod:`intentwatch.evaluation.metrics`): per-call ROC AUC and recall at 0.1 % and
1 % false-positive rate (over calls judged before their task was revoked);
the share of attack tasks revoked at or before their first harmful call; the
share of benign tasks revoked or alerted; the same per attack type; and the
engine's throughput over the replay (decoded events in memory, no Kafka).

Run ``python -m bench.quality --help``; results go to ``bench/results/quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from intentwatch.contracts import TaskEvent, ToolCall, decode_replay_record
from intentwatch.evaluation.metrics import CallTruth, QualityReport, evaluate, truths_of
from intentwatch.models.config import load_config
from intentwatch.models.engine import Engine
from intentwatch.models.replay import event_time, replay
from intentwatch.simulation.fleet import FleetSpec, generate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "quality.json"
PACKAGES = ("river", "scikit-learn", "numpy", "tldextract", "msgspec")
HOW = (
    "each seed's fleet is generated, decoded and replayed (event time, in memory, no Kafka) "
    "through a fresh Engine with the scoring config, starting cold and learning only from "
    "tasks that end unrevoked; verdicts are compared with the fleet's ground truth. Per-call "
    "ROC AUC and recall at 0.1%/1% FPR are over calls judged before their task was revoked; "
    "an attack task is caught in time when a verdict at or before its first harmful call says "
    "revoke; a benign task counts as revoked when any of its verdicts does. Seeds are pooled. "
    "Throughput is tool calls per second of replay (wall and CPU), fleet generation excluded. "
    "Only tasks started after the warm-up are judged; with held-out kinds (default one per "
    "role) each of them is of a kind never run in the warm-up. With --frozen the same fleets "
    "are also replayed with learning stopped at the end of the warm-up."
)
TARGETS = {"caught_in_time": 0.95, "benign_revoked": 0.02, "roc_auc": 0.97}
"""Issue 3: share of attack tasks caught in time (at least), benign tasks revoked (at
most), per-call ROC AUC (at least)."""


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: metadata.version(p) for p in PACKAGES},
    }


def run_seed(
    spec: FleetSpec, config_path: str | None, progress: Progress, *, frozen: bool = False
) -> tuple[list[dict[str, Any]], dict[str, CallTruth], dict[str, float]]:
    """Replay one fleet through a fresh engine: its verdicts, truths and timings.

    The truths are those of the tasks started after the warm-up (with held-out kinds,
    every one of a kind never learned); ``frozen`` stops learning at the end of the
    warm-up, so the baseline judges the test tasks as the warm-up left it.
    """
    label = f"seed {spec.seed}{' frozen' if frozen else ''}"
    task = progress.add_task(f"{label}: generating", total=None)
    records = generate(spec)
    events = [decode_replay_record(r) for r in records]
    warm = spec.start.timestamp() + spec.history_days * 86400.0
    tested = {(e.agent_id, e.task_id) for e in events
              if isinstance(e, TaskEvent) and e.status == "started" and e.ts >= warm}
    truths = {event_id: t for event_id, t in truths_of(records).items()
              if (t.agent_id, t.task_id) in tested}
    calls = sum(isinstance(e, ToolCall) for e in events)
    progress.update(task, description=f"{label}: replaying", total=len(events) + 1, completed=0)
    engine = Engine(load_config(config_path))
    verdicts: list[dict[str, Any]] = []
    started = time.perf_counter()
    cpu = time.process_time()
    def stream():
        for event in events:
            if frozen and event_time(event) >= warm:
                engine.detector.learning = False
            yield event

    for outcome in replay(stream(), engine):
        verdicts += ({"event_id": v.event_id, "score": v.score, "decision": v.decision}
                     for v in outcome.verdicts)
        progress.advance(task)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    progress.update(task, description=f"{label}: done")
    timing = {"events": len(events), "calls": calls, "seconds": seconds,
              "cpu_seconds": cpu_seconds, "calls_per_s": calls / seconds,
              "calls_per_cpu_s": calls / cpu_seconds}
    return verdicts, truths, timing


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def print_report(console: Console, pooled: QualityReport, throughput: float,
                 cpu_throughput: float, seeds: Sequence[int]) -> None:
    def mark(ok: bool) -> str:
        return "[green]✓[/green]" if ok else "[red]✗[/red]"

    table = Table(title=f"Detection quality, held-out seeds {', '.join(map(str, seeds))}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    caught, benign, auc = pooled.caught_in_time, pooled.benign_revoked, pooled.roc_auc
    table.add_row("attack tasks revoked at or before first harmful call", _pct(caught),
                  f"≥ {TARGETS['caught_in_time']:.0%} "
                  + mark(caught is not None and caught >= TARGETS["caught_in_time"]))
    table.add_row("benign tasks revoked", _pct(benign),
                  f"≤ {TARGETS['benign_revoked']:.0%} "
                  + mark(benign is not None and benign <= TARGETS["benign_revoked"]))
    table.add_row("per-call ROC AUC", _num(auc),
                  f"≥ {TARGETS['roc_auc']} " + mark(auc is not None and auc >= TARGETS["roc_auc"]))
    table.add_row("recall at 0.1% FPR", _pct(pooled.recall_at_fpr["0.001"]), "")
    table.add_row("recall at 1% FPR", _pct(pooled.recall_at_fpr["0.01"]), "")
    table.add_row("benign tasks alerted (or revoked)", _pct(pooled.benign_alerted), "")
    table.add_row("calls / attack calls", f"{pooled.calls:,} / {pooled.attack_calls:,}", "")
    table.add_row("attack tasks / benign tasks",
                  f"{pooled.attack_tasks:,} / {pooled.benign_tasks:,}", "")
    table.add_row("engine throughput (calls/s, wall / CPU)",
                  f"{throughput:,.0f} / {cpu_throughput:,.0f}", "")
    console.print(table)

    per_type = Table(title="Per attack type")
    for column in ("attack type", "tasks", "caught in time", "revoked at all", "ROC AUC"):
        per_type.add_column(column, justify="left" if column == "attack type" else "right")
    for kind, report in pooled.per_type.items():
        per_type.add_row(kind, str(report.tasks), _pct(report.caught_in_time),
                         _pct(report.revoked), _num(report.roc_auc))
    console.print(per_type)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12],
                        help="fleet seeds to report on (default: 10 11 12; 0-5 were tuned on)")
    defaults = FleetSpec()
    parser.add_argument("--agents-per-role", type=int, default=defaults.agents_per_role)
    parser.add_argument("--history-days", type=float, default=defaults.history_days)
    parser.add_argument("--attack-days", type=float, default=defaults.attack_days)
    parser.add_argument("--config", default=None,
                        help="scoring config JSON (default: models/scoring_config.json)")
    parser.add_argument("--held-out-kinds", type=int, default=1,
                        help="task kinds per role never run in the warm-up and the only ones "
                             "after it (default 1; 0: every kind everywhere)")
    parser.add_argument("--frozen", action="store_true",
                        help="also replay with learning stopped after the warm-up")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console = Console()
    config = load_config(args.config)
    info = machine()
    console.print(f"[bold]machine[/bold]  {info['cpu_count']} × {info['cpu_model']}; "
                  f"Python {info['python']}; scoring config {config.version}")
    pooled_verdicts: list[dict[str, Any]] = []
    pooled_truths: dict[str, CallTruth] = {}
    per_seed: dict[str, Any] = {}
    timings = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    frozen_verdicts: list[dict[str, Any]] = []
    with Progress(*columns, console=console) as progress:
        for seed in args.seeds:
            spec = FleetSpec(seed=seed, agents_per_role=args.agents_per_role,
                             history_days=args.history_days, attack_days=args.attack_days,
                             held_out_kinds=args.held_out_kinds)
            if args.frozen:
                held, _, _ = run_seed(spec, args.config, progress, frozen=True)
                frozen_verdicts += ({**v, "event_id": f"{seed}:{v['event_id']}"} for v in held)
            verdicts, truths, timing = run_seed(spec, args.config, progress)
            report = evaluate(verdicts, truths)
            per_seed[str(seed)] = {"quality": report.to_dict(), "timing": timing}
            timings.append(timing)
            for v in verdicts:  # seeds may reuse ids: make them distinct before pooling
                pooled_verdicts.append({**v, "event_id": f"{seed}:{v['event_id']}"})
            for event_id, t in truths.items():
                pooled_truths[f"{seed}:{event_id}"] = CallTruth(
                    t.agent_id, f"{seed}:{t.task_id}", t.attack, t.attack_type, t.harmful)
    pooled = evaluate(pooled_verdicts, pooled_truths)
    calls = sum(t["calls"] for t in timings)
    throughput = calls / sum(t["seconds"] for t in timings)
    cpu_throughput = calls / sum(t["cpu_seconds"] for t in timings)
    print_report(console, pooled, throughput, cpu_throughput, args.seeds)
    frozen = evaluate(frozen_verdicts, pooled_truths) if args.frozen else None
    if frozen is not None:
        console.print(f"baseline frozen after the warm-up: caught in time "
                      f"{_pct(frozen.caught_in_time)}, benign revoked "
                      f"{_pct(frozen.benign_revoked)}, per-call ROC AUC {_num(frozen.roc_auc)}")

    result = {
        "what": "detection quality of intentwatch.models.engine.Engine on labelled synthetic "
                "fleets (intentwatch.simulation.fleet), against the issue-3 targets",
        "how": HOW,
        "machine": info,
        "config_version": config.version,
        "tuned_on_seeds": [0, 1, 2, 3, 4, 5],
        "seeds": args.seeds,
        "fleet": {"agents_per_role": args.agents_per_role, "history_days": args.history_days,
                  "held_out_kinds": args.held_out_kinds,
                  "attack_days": args.attack_days},
        "targets": TARGETS,
        "held_out_kinds": args.held_out_kinds,
        "pooled": pooled.to_dict(),
        "frozen_after_warm_up": frozen.to_dict() if frozen is not None else None,
        "meets_targets": {
            "caught_in_time": (pooled.caught_in_time or 0) >= TARGETS["caught_in_time"],
            "benign_revoked": (pooled.benign_revoked or 0) <= TARGETS["benign_revoked"],
            "roc_auc": (pooled.roc_auc or 0) >= TARGETS["roc_auc"],
        },
        "throughput": {"calls": calls, "calls_per_s": throughput,
                       "calls_per_cpu_s": cpu_throughput, "load_avg_1min": os.getloadavg()[0]},
        "per_seed": per_seed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=asdict) + "\n")
    console.print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
