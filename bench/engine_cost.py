"""Engine cost per tool call: this tree against another commit, side by side in one run.

The same generated fleet (written once, in the replay format) is replayed through
``Engine`` by :mod:`intentwatch.models.replay` in child processes, one per tree and
repetition, the trees interleaved (and their order alternated) so that whatever else
the machine runs weighs on both alike. Each child reports the CPU time of the replay
(``time.process_time``, decoding excluded), the calls judged and a sha256 of every
output as published, so the run also says whether the two trees decide alike. The
other tree is a detached ``git worktree`` of ``--against`` (default ``main``), imported
through ``PYTHONPATH``, removed at the end.

Run ``python -m bench.engine_cost --help``; results go to ``bench/results/engine_cost.json``.
The benchmark reports; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "engine_cost.json"


def child(records_path: Path) -> dict[str, Any]:
    """Replay the records through the ``intentwatch`` found first on ``sys.path``."""
    import hashlib

    import msgspec

    import intentwatch
    from intentwatch.contracts import decode_replay_record
    from intentwatch.models.engine import Engine
    from intentwatch.models.replay import replay

    records = json.loads(records_path.read_text())
    events = [decode_replay_record(record) for record in records]
    engine = Engine()
    start = time.process_time()
    outcomes = list(replay(events, engine))
    seconds = time.process_time() - start
    digest, decisions = hashlib.sha256(), {}
    for outcome in outcomes:
        for verdict in outcome.verdicts:
            decisions[verdict.decision] = decisions.get(verdict.decision, 0) + 1
        for item in (*outcome.verdicts, *outcome.revocations, *outcome.audits):
            digest.update(msgspec.json.encode(item) + b"\n")
    calls = sum(decisions.values())
    return {"package": str(Path(intentwatch.__file__).parent), "seconds": seconds,
            "calls": calls, "us_per_call": seconds / calls * 1e6, "decisions": decisions,
            "digest": digest.hexdigest()}


def run_child(tree: Path, records_path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(records_path)],
        env=env, cwd=tree, check=True, capture_output=True, text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="main", help="commit to compare with (main)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tree, interleaved")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--agents-per-role", type=int, default=12)
    parser.add_argument("--history-days", type=float, default=7.0)
    parser.add_argument("--attack-days", type=float, default=3.0)
    parser.add_argument("--limit", type=int, default=20_000,
                        help="the fleet's first N records (default 20,000; 0: all)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON file")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    from bench.throughput import machine
    from intentwatch.simulation.fleet import FleetSpec, generate

    spec = FleetSpec(seed=args.seed, agents_per_role=args.agents_per_role,
                     history_days=args.history_days, attack_days=args.attack_days)
    this = git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain",
                                                                  "--untracked-files=no") else "")
    other = git("rev-parse", "--short", args.against)
    with tempfile.TemporaryDirectory(prefix="intentwatch-engine-cost-") as tmp:
        records_path = Path(tmp) / "fleet.json"
        records = generate(spec)[: args.limit or None]
        records_path.write_text(json.dumps(records))
        tree = Path(tmp) / "against"
        git("worktree", "add", "--detach", str(tree), args.against)
        try:
            trees = {f"{args.against} ({other})": tree, f"this tree ({this})": ROOT}
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            loads = [os.getloadavg()[0]]
            for i in range(args.repeats):
                order = list(trees) if i % 2 == 0 else list(reversed(trees))
                for name in order:
                    samples[name].append(run_child(trees[name], records_path))
                    loads.append(os.getloadavg()[0])
                    print(f"run {i + 1}/{args.repeats} {name}: "
                          f"{samples[name][-1]['us_per_call']:,.1f} µs per call", flush=True)
        finally:
            git("worktree", "remove", "--force", str(tree))
    summary = {
        name: {"us_per_call_median": statistics.median(s["us_per_call"] for s in runs),
               "us_per_call_min": min(s["us_per_call"] for s in runs),
               "us_per_call": [s["us_per_call"] for s in runs], "calls": runs[0]["calls"],
               "decisions": runs[0]["decisions"], "digest": runs[0]["digest"],
               "package": runs[0]["package"]}
        for name, runs in samples.items()
    }
    before, after = (summary[name] for name in trees)
    ratios = [b["us_per_call"] / a["us_per_call"]
              for b, a in zip(*(samples[name] for name in trees), strict=True)]
    identical = before["digest"] == after["digest"]
    for name, s in summary.items():
        print(f"{name:32} median {s['us_per_call_median']:8,.1f} µs per call "
              f"(min {s['us_per_call_min']:,.1f}; {s['calls']:,} calls) {s['decisions']}")
    print(f"speed-up (paired runs): median {statistics.median(ratios):.2f}× "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}); outputs "
          f"{'identical' if identical else 'DIFFER'}; 1-min load {min(loads):.1f}-{max(loads):.1f} "
          f"on {os.cpu_count()} CPUs")
    result = {
        "what": "engine CPU time per tool call, models.replay over a generated fleet",
        "how": __doc__.split("\n\n")[1].replace("\n", " "),
        "machine": machine(), "fleet": {**asdict(spec), "limit": args.limit},
        "records": len(records), "repeats": args.repeats,
        "trees": summary, "speedup_paired": ratios,
        "speedup_median": statistics.median(ratios), "outputs_identical": identical,
        "load_avg_1min": loads,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
