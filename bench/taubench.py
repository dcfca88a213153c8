"""A benign set the project did not write: tau-bench's published airline trajectories.

tau-bench (github.com/sierra-research/tau-bench, MIT licence) publishes
``historical_trajectories/<model>-airline.json``: recorded runs of a real
language model serving simulated airline customers (book, change, cancel
flights) with the benchmark's tools. No run is an attack, so every revocation
on them is a false one. Nothing of the benchmark is in this repository: point
the adapter at a checkout (or the file alone) and it converts and replays it.

What becomes what (the replay format of ``docs/contracts.md``):

* one agent, ``spiffe://airline.example/agents/airline/<model>``, serving every
  run in file order, so it learns as a deployed agent would;
* each run is a task with an unsigned grant whose ``intent`` is what the
  customer wrote (every user turn, in order), with broad grants (every tool,
  target and label) or, with ``--grant narrow``, the tools the run used;
* each assistant tool call is a tool call: the tool's name, its description
  from the checkout's tool definitions when given (read with :mod:`ast`, no
  benchmark code is run), the arguments as they were, ``bytes_in`` the size of
  the tool's answer, ``outcome`` ``error`` when it answered with an error;
  the action class is left to the tool catalogue's guess, as for any tool an
  operator did not describe.

>>> runs = [{"task_id": 7, "trial": 0, "traj": [
...     {"role": "user", "content": "Cancel my reservation ABC123, please."},
...     {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {
...         "name": "cancel_reservation", "arguments": '{"reservation_id": "ABC123"}'}}]},
...     {"role": "tool", "tool_call_id": "c1", "content": "{}"}]}]
>>> records = to_replay(runs, model="m")
>>> [r["kind"] for r in records]
['grant', 'task', 'toolcall', 'task']
>>> records[0]["intent"], records[2]["args"]
('Cancel my reservation ABC123, please.', {'reservation_id': 'ABC123'})

Run ``python -m bench.taubench --help``.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from intentwatch.contracts import decode_replay_record
from intentwatch.evaluation.metrics import evaluate, truths_of
from intentwatch.models.engine import Engine
from intentwatch.models.replay import replay

__all__ = ["load_runs", "to_replay", "tool_descriptions"]

_TASK_SECONDS = 3600.0
"""Runs start an hour apart."""
_STEP_SECONDS = 20.0
"""Seconds between the messages of a run."""


def tool_descriptions(tools_dir: Path) -> dict[str, str]:
    """Tool name -> description, from the ``get_info`` literals of a tau-bench tools folder.

    The files are parsed, never imported: only dictionary literals are read.
    """
    found: dict[str, str] = {}
    for path in sorted(Path(tools_dir).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "get_info":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        info = ast.literal_eval(ret.value)
                        function = info.get("function", {})
                        if "name" in function:
                            found[function["name"]] = function.get("description", "")
    return found


def load_runs(path: Path) -> list[dict[str, Any]]:
    """The runs of one ``historical_trajectories`` file (a JSON list)."""
    runs = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(runs, list):
        raise ValueError(f"{path}: expected a JSON list of runs")
    return runs


def _ts(seconds: float) -> float:
    return 1_780_000_000.0 + seconds


def to_replay(
    runs: Iterable[dict[str, Any]],
    *,
    model: str,
    descriptions: dict[str, str] | None = None,
    grant: str = "broad",
) -> list[dict[str, Any]]:
    """Replay records (grant, task events, tool calls) for ``runs``, all benign."""
    descriptions = descriptions or {}
    agent = f"spiffe://airline.example/agents/airline/{model}"
    records: list[dict[str, Any]] = []
    for n, run in enumerate(runs):
        task_id = f"tau-airline-{run.get('task_id')}-trial-{run.get('trial', 0)}-{n}"
        t0 = n * _TASK_SECONDS
        messages = run.get("traj") or []
        answers = {
            m.get("tool_call_id"): m.get("content") or ""
            for m in messages if m.get("role") == "tool"
        }
        intent = " ".join(
            (m.get("content") or "").replace("###STOP###", "").strip()
            for m in messages if m.get("role") == "user"
        ).strip()
        calls: list[dict[str, Any]] = []
        for step, message in enumerate(messages):
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                name = function.get("name") or "unknown"
                try:
                    args = json.loads(function.get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = {"raw": function.get("arguments")}
                answer = answers.get(call.get("id"), "")
                record: dict[str, Any] = {
                    "kind": "toolcall", "event_id": f"{task_id}:{len(calls)}",
                    "ts": _ts(t0 + 1.0 + step * _STEP_SECONDS), "agent_id": agent,
                    "task_id": task_id, "tool": name,
                    "args": args if isinstance(args, dict) else {"value": args},
                    "bytes_in": len(answer.encode()), "outcome": (
                        "error" if answer.lstrip().lower().startswith("error") else "ok"
                    ),
                    "truth": {"attack": False, "attack_type": None, "harmful": False},
                }
                if descriptions.get(name):
                    record["tool_description"] = descriptions[name]
                calls.append(record)
        tools = sorted({c["tool"] for c in calls}) if grant == "narrow" else ["*"]
        end = _ts(t0 + 2.0 + len(messages) * _STEP_SECONDS)
        records.append({
            "kind": "grant", "grant_id": f"grant-{task_id}", "agent_id": agent,
            "task_id": task_id, "credential_ids": [f"cred-{task_id}"], "intent": intent,
            "tools": tools or ["*"], "targets": ["*"], "data_labels": ["*"],
            "issued_at": _ts(t0), "expires_at": _ts(t0 + _TASK_SECONDS - 1.0),
            "issuer": "https://broker.airline.example",
        })
        head = {"kind": "task", "agent_id": agent, "task_id": task_id,
                "truth": {"attack": False, "attack_type": None}}
        records.append({**head, "event_id": f"{task_id}:start", "ts": _ts(t0 + 0.5),
                        "status": "started"})
        records += calls
        records.append({**head, "event_id": f"{task_id}:end", "ts": end, "status": "completed"})
    return records


def measure(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Replay ``records`` through a fresh engine; benign tasks revoked and alerted, and
    the revoked tasks' first revoking reason."""
    engine = Engine()
    events = [decode_replay_record(r) for r in records]
    verdicts = [v for outcome in replay(events, engine) for v in outcome.verdicts]
    report = evaluate(verdicts, truths_of(records))
    first: dict[str, str] = {}
    for v in verdicts:
        if v.decision == "revoke" and v.task_id not in first:
            first[v.task_id] = f"{v.tool}: {v.reasons[0].code}: {v.reasons[0].detail}"
    return {
        "tasks": report.benign_tasks, "calls": report.calls,
        "benign_revoked": report.benign_revoked, "benign_alerted": report.benign_alerted,
        "revoked_tasks": dict(sorted(first.items())),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.taubench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trajectories", type=Path,
                        help="historical_trajectories/<model>-airline.json of a tau-bench "
                             "checkout")
    parser.add_argument("--tools", type=Path, default=None,
                        help="tau_bench/envs/airline/tools of the same checkout (descriptions)")
    parser.add_argument("--grant", choices=("broad", "narrow"), nargs="+",
                        default=["broad", "narrow"])
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--replay-out", type=Path, default=None,
                        help="also write the converted replay file (broad grants)")
    args = parser.parse_args(argv)
    model = args.trajectories.name.removesuffix(".json").removesuffix("-airline")
    descriptions = tool_descriptions(args.tools) if args.tools else {}
    runs = load_runs(args.trajectories)
    result: dict[str, Any] = {"source": args.trajectories.name, "runs": len(runs)}
    for grant in args.grant:
        records = to_replay(runs, model=model, descriptions=descriptions, grant=grant)
        if args.replay_out and grant == "broad":
            args.replay_out.write_text("".join(json.dumps(r) + "\n" for r in records))
        figures = measure(records)
        result[grant] = figures
        print(f"{grant} grants: {figures['tasks']} benign runs, {figures['calls']} calls; "
              f"revoked {figures['benign_revoked']:.1%}, alerted {figures['benign_alerted']:.1%}")
        for task, why in list(figures["revoked_tasks"].items())[:10]:
            print(f"  {task}: {why[:160]}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
