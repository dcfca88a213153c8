"""Memory per agent: the RSS of one process holding N agents' learned state.

A generated fleet (:mod:`intentwatch.simulation.fleet`, ``--history-days`` of history,
7 by default) is replayed through :class:`~intentwatch.models.engine.Engine`; what the
detector learned of each agent (:meth:`~intentwatch.models.detection.Detector.agent_state`,
the record the worker keeps in its ``learned`` table) is then that agent's history.
For each N of ``--agents`` a child process loads N agents into one fresh detector, the
fleet's agents in turn, each under an id of its own (the record's ``agent`` rewritten),
as a worker does when it meets them, and reports its resident set size (``VmRSS``)
before and after, and the bytes of the records it loaded. Open tasks and tombstones are
not in it (they are bounded per agent by ``limits``; see ``docs/contracts.md``).

Run ``python -m bench.memory --help``; results go to ``bench/results/memory.json``.
The benchmark reports; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from intentwatch.models.config import load_config
from intentwatch.models.detection import Detector
from intentwatch.models.engine import Engine
from intentwatch.models.learned import AgentState, open_sealed, seal
from intentwatch.models.replay import replay
from intentwatch.simulation.fleet import FleetSpec, generate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "memory.json"


def learned_agents(spec: FleetSpec) -> list[bytes]:
    """Each agent's learned state after replaying the fleet of ``spec``."""
    engine = Engine(load_config())
    for _ in replay(generate(spec), engine):
        pass
    detector = engine.detector
    return [detector.agent_state(agent) for agent in sorted(detector.learned_agents())]


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(states_path: Path, agents: int) -> dict[str, Any]:
    """Load ``agents`` agents cloned from the states in ``states_path`` into one detector."""
    detector = Detector(load_config())
    states = msgspec.msgpack.decode(states_path.read_bytes(), type=list[bytes])
    digest = detector.settings_digest
    decoded = [open_sealed(state, AgentState, settings=digest) for state in states]
    before = rss_bytes()
    loaded = 0
    started = time.process_time()
    for n in range(agents):
        model = decoded[n % len(decoded)]
        clone = msgspec.structs.replace(model, id=f"{model.id}-clone-{n}")
        data = seal(clone, settings=digest)
        loaded += len(data)
        detector.load_agent_state(data)
    seconds = time.process_time() - started
    after = rss_bytes()
    return {"agents": agents, "held": len(detector.learned_agents()),
            "rss_before": before, "rss_after": after,
            "rss_per_agent": (after - before) / agents, "record_bytes": loaded,
            "record_bytes_per_agent": loaded / agents, "load_cpu_seconds": seconds}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--agents-per-role", type=int, default=12)
    parser.add_argument("--history-days", type=float, default=7.0)
    parser.add_argument("--agents", default="1000,10000,100000",
                        help="comma-separated agent counts, one child process each")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON file")
    parser.add_argument("--child", nargs=2, metavar=("STATES", "AGENTS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), int(args.child[1]))))
        return
    spec = FleetSpec(seed=args.seed, agents_per_role=args.agents_per_role,
                     history_days=args.history_days, attack_days=0.0, attack_rate=0.0)
    print(f"replaying a fleet of {args.agents_per_role} agents per role, "
          f"{args.history_days:g} days of history (seed {args.seed})", flush=True)
    states = learned_agents(spec)
    sizes = sorted(len(state) for state in states)
    print(f"{len(states)} agents learned; a record is {sizes[len(sizes) // 2]:,} bytes "
          f"(median; {sizes[0]:,}-{sizes[-1]:,})", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="intentwatch-memory-") as work:
        states_path = Path(work) / "states.msgpack"
        states_path.write_bytes(msgspec.msgpack.encode(states))
        for agents in (int(n) for n in args.agents.split(",") if n.strip()):
            out = subprocess.run([sys.executable, "-m", "bench.memory", "--child",
                                  str(states_path), str(agents)], check=True,
                                 capture_output=True, text=True, cwd=ROOT).stdout
            run = json.loads(out.strip().splitlines()[-1])
            runs.append(run)
            print(f"{agents:>9,} agents: RSS +{(run['rss_after'] - run['rss_before']) / 2**20:,.0f}"
                  f" MiB ({run['rss_per_agent'] / 1024:,.1f} KiB per agent; records "
                  f"{run['record_bytes_per_agent'] / 1024:,.1f} KiB each), loaded in "
                  f"{run['load_cpu_seconds']:.1f} s CPU", flush=True)
    results = {
        "what": "resident memory of one process holding N agents' learned state",
        "how": __doc__.split("\n\n")[1].replace("\n", " "),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "fleet": {"seed": args.seed, "agents_per_role": args.agents_per_role,
                  "history_days": args.history_days, "agents": len(states),
                  "record_bytes_median": sizes[len(sizes) // 2]},
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
