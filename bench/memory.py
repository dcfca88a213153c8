"""Memory per agent: the RSS of one worker-like process that meets N agents, each with a
week of history, with its resident agents bounded (``limits.resident_agents``).

A generated fleet (:mod:`intentwatch.simulation.fleet`, ``--history-days`` of history,
7 by default) is replayed through :class:`~intentwatch.models.engine.Engine`; what the
detector learned of each agent (:meth:`~intentwatch.models.detection.Detector.agent_state`,
the record the worker keeps in its ``learned`` table) is then that agent's history.
For each N of ``--agents`` a child process writes N records, the fleet's agents in turn
each under an id of its own (the record's ``agent`` rewritten), into a ``learned`` table
as the worker's: a RocksDB database on disk opened as faust opens the worker's
(``faust.stores.rocksdb.RocksDBOptions`` with the worker's
:func:`~intentwatch.pipeline.app.table_store_options`), under
:class:`~intentwatch.models.learned.PartedStore`; then one engine of the default config
meets every agent in turn, as before it judges an agent's call (reading its record,
evicting the least recently met past the bound). It reports its resident set size
(``VmRSS``) before, after writing the table and after meeting all N, how many agents
the detector holds, the records' bytes and the table's bytes on disk. ``--resident``
runs each N under other bounds too (0: none, every agent held, as before the bound).
Open tasks and tombstones are not in it (they are bounded per agent by ``limits``; see
``docs/contracts.md``). A last child measures, with ``tracemalloc``, the Python heap
each agent leaves behind once evicted (the table in memory, traced before it starts).

Run ``python -m bench.memory --help``; results go to ``bench/results/memory.json``.
The benchmark reports; it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
from faust.stores.rocksdb import RocksDBOptions

from intentwatch.models.config import load_config
from intentwatch.models.engine import Engine
from intentwatch.models.learned import AgentState, PartedStore, open_sealed, seal
from intentwatch.models.limits import StateLimits
from intentwatch.models.replay import replay
from intentwatch.pipeline.app import table_store_options
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


class _Table(MutableMapping[str, bytes]):
    """A raw RocksDB database (bytes keys) as the ``learned`` table's str keys."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def __getitem__(self, key: str) -> bytes:
        value = self.db.get(key.encode())
        if value is None:
            raise KeyError(key)
        return bytes(value)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.db[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        del self.db[key.encode()]

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in self.db)

    def __len__(self) -> int:
        return sum(1 for _ in self.db)


def clones(states_path: Path, agents: int, digest: str) -> Iterator[tuple[str, bytes]]:
    """``agents`` records, the states in ``states_path`` in turn, each under an id of its own."""
    states = msgspec.msgpack.decode(states_path.read_bytes(), type=list[bytes])
    decoded = [open_sealed(state, AgentState, settings=digest) for state in states]
    for n in range(agents):
        model = decoded[n % len(decoded)]
        agent = f"{model.id}-clone-{n}"
        yield agent, seal(msgspec.structs.replace(model, id=agent), settings=digest)


def engine_for(resident: int, learned: MutableMapping[str, bytes]) -> Engine:
    """An engine of the default config holding at most ``resident`` agents (0: any number)."""
    config = load_config()
    if resident:
        config = replace(config, limits={**config.limits, "resident_agents": resident})
    else:
        config = replace(config, limits={**config.limits, "resident_agents": 2**62})
    return Engine(config, learned=PartedStore(learned))


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def child(
    states_path: Path, agents: int, resident: int, block_cache: int | None = None
) -> dict[str, Any]:
    """Meet ``agents`` agents, their records in a RocksDB table (``block_cache``: its block
    cache's bytes, the worker's when None), holding ``resident``."""
    with tempfile.TemporaryDirectory(prefix="intentwatch-learned-") as work:
        settings = table_store_options("learned")
        if block_cache is not None:
            settings["block_cache_size"] = block_cache
        options = RocksDBOptions(**settings)
        db = options.open(Path(work) / "learned")
        table = _Table(db)
        engine = engine_for(resident, table)
        before = rss_bytes()
        written = 0
        names = []
        for agent, record in clones(states_path, agents, engine.detector.settings_digest):
            engine.learned[agent] = record  # as the worker wrote it when the agent learned
            written += len(record)
            names.append(agent)
        db.flush()
        stored = rss_bytes()
        started = time.process_time()
        for agent in names:
            engine._meet(agent)  # what the engine does before it judges an agent's call
        seconds = time.process_time() - started
        after = rss_bytes()
        held = len(engine.detector.learned_agents())
        disk = du(Path(work))
        db.close()
    return {"agents": agents, "resident_agents": resident or None, "held": held,
            "block_cache_bytes": options.block_cache_size,
            "evicted": engine.shed["agent", "evicted"],
            "rss_before": before, "rss_table_written": stored, "rss_after": after,
            "rss_per_agent": (after - before) / agents, "record_bytes": written,
            "record_bytes_per_agent": written / agents, "table_bytes_on_disk": disk,
            "meet_cpu_seconds": seconds, "meet_us_per_agent": seconds / agents * 1e6}


def residue(states_path: Path, agents: int, resident: int) -> dict[str, Any]:
    """Python heap left per evicted agent: traced bytes after meeting ``resident`` agents,
    then after meeting ``agents`` (the table in memory, written before tracing starts)."""
    table: dict[str, bytes] = {}
    engine = engine_for(resident, table)
    names = []
    for agent, record in clones(states_path, agents, engine.detector.settings_digest):
        PartedStore(table)[agent] = record
        names.append(agent)
    gc.collect()
    tracemalloc.start()
    for agent in names[:resident]:
        engine._meet(agent)
    gc.collect()
    holding = tracemalloc.get_traced_memory()[0]
    for agent in names[resident:]:
        engine._meet(agent)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    evicted = engine.shed["agent", "evicted"]
    return {"agents": agents, "resident_agents": resident, "evicted": evicted,
            "traced_holding_resident": holding, "traced_after": after,
            "bytes_left_per_evicted_agent": (after - holding) / evicted}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--agents-per-role", type=int, default=12)
    parser.add_argument("--history-days", type=float, default=7.0)
    parser.add_argument("--agents", default="1000,10000,100000",
                        help="comma-separated agent counts, one child process each")
    parser.add_argument("--resident", default="",
                        help="comma-separated other bounds to run (0: none), each with "
                             "the agent counts up to --unbounded-up-to for 0")
    parser.add_argument("--unbounded-up-to", type=int, default=10000,
                        help="the largest agent count run without a bound")
    parser.add_argument("--residue", type=int, default=20000,
                        help="agents met for the per-evicted-agent heap residue (0: skip)")
    parser.add_argument("--block-cache", default="",
                        help="comma-separated RocksDB block cache sizes (MiB) to run the "
                             "default bound under too, beside the worker's (table_store_options)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON file")
    parser.add_argument("--child", nargs=5,
                        metavar=("KIND", "STATES", "AGENTS", "RESIDENT", "CACHE"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_child(
    kind: str, states_path: Path, agents: int, resident: int, cache: int = 0
) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.memory", "--child", kind,
                          str(states_path), str(agents), str(resident), str(cache)], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        kind, path, agents, resident, cache = args.child
        if kind == "rss":
            found = child(Path(path), int(agents), int(resident), int(cache) * 2**20 or None)
        else:
            found = residue(Path(path), int(agents), int(resident))
        print(json.dumps(found))
        return
    spec = FleetSpec(seed=args.seed, agents_per_role=args.agents_per_role,
                     history_days=args.history_days, attack_days=0.0, attack_rate=0.0)
    print(f"replaying a fleet of {args.agents_per_role} agents per role, "
          f"{args.history_days:g} days of history (seed {args.seed})", flush=True)
    states = learned_agents(spec)
    sizes = sorted(len(state) for state in states)
    print(f"{len(states)} agents learned; a record is {sizes[len(sizes) // 2]:,} bytes "
          f"(median; {sizes[0]:,}-{sizes[-1]:,})", flush=True)
    default = StateLimits().resident_agents
    bounds = [default, *(int(n) for n in args.resident.split(",") if n.strip())]
    counts = [int(n) for n in args.agents.split(",") if n.strip()]
    runs, left = [], None
    with tempfile.TemporaryDirectory(prefix="intentwatch-memory-") as work:
        states_path = Path(work) / "states.msgpack"
        states_path.write_bytes(msgspec.msgpack.encode(states))
        caches = [(default, 0)] + [(default, int(n)) for n in args.block_cache.split(",")
                                   if n.strip()]
        for resident, cache in [*caches, *((n, 0) for n in bounds[1:])]:
            for agents in counts:
                if not resident and agents > args.unbounded_up_to:
                    continue
                run = run_child("rss", states_path, agents, resident, cache)
                runs.append(run)
                print(f"{agents:>9,} agents, {resident or 'no'} resident at most, block cache "
                      f"{run['block_cache_bytes'] / 2**20:,.0f} MiB: RSS +"
                      f"{(run['rss_after'] - run['rss_before']) / 2**20:,.0f} MiB "
                      f"({run['held']:,} held; after writing the table +"
                      f"{(run['rss_table_written'] - run['rss_before']) / 2**20:,.0f} MiB); "
                      f"records {run['record_bytes'] / 2**20:,.0f} MiB "
                      f"({run['record_bytes_per_agent'] / 1024:,.1f} KiB each), "
                      f"{run['table_bytes_on_disk'] / 2**20:,.0f} MiB on disk; "
                      f"{run['meet_us_per_agent']:,.0f} us CPU per agent met", flush=True)
        if args.residue:
            left = run_child("residue", states_path, args.residue, default)
            print(f"heap left per evicted agent: {left['bytes_left_per_evicted_agent']:,.0f} "
                  f"bytes ({left['evicted']:,} evicted)", flush=True)
    results = {
        "what": "resident memory of one engine meeting N agents' learned state, its resident "
                "agents bounded",
        "how": __doc__.split("\n\n")[1].replace("\n", " "),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "fleet": {"seed": args.seed, "agents_per_role": args.agents_per_role,
                  "history_days": args.history_days, "agents": len(states),
                  "record_bytes_median": sizes[len(sizes) // 2]},
        "runs": runs,
        "residue": left,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
