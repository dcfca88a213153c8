"""The synthetic fleet: deterministic, well-formed, labelled, and not trivially separable."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter, defaultdict
from datetime import datetime
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

import pytest

from intentwatch.simulation.fleet import (
    _DATA,
    ATTACK_TYPES,
    ROLE_NAMES,
    TOOL_CATALOGUE,
    FleetSpec,
    generate,
    load_role,
    read_jsonl,
    write_jsonl,
)

SMALL = FleetSpec(seed=3, agents_per_role=1, history_days=1, attack_days=1)
LEVELS = ("public", "internal", "confidential", "restricted")


@pytest.fixture(scope="module")
def events() -> list[dict]:
    started = time.perf_counter()
    fleet = generate()
    print(f"\ngenerate(FleetSpec()) took {time.perf_counter() - started:.2f} s")
    return fleet


@pytest.fixture(scope="module")
def tasks(events: list[dict]) -> dict[str, dict]:
    """task_id -> {grant, calls, events}."""
    out: dict[str, dict] = defaultdict(lambda: {"grant": None, "calls": [], "events": []})
    for e in events:
        task = out[e["task_id"]]
        if e["kind"] == "grant":
            task["grant"] = e
        elif e["kind"] == "toolcall":
            task["calls"].append(e)
        else:
            task["events"].append(e)
    return dict(out)


def event_time(e: dict) -> str:
    return e["issued_at"] if e["kind"] == "grant" else e["ts"]


def target_ok(target: str | None, patterns: list[str]) -> bool:
    if target is None:
        return True
    host = urlsplit(target).hostname if "://" in target else None
    return any(p == "*" or fnmatchcase(target, p)
               or (host is not None and ":" not in p and fnmatchcase(host, p))
               for p in patterns)


def labels_ok(labels: list[str], allowed: list[str]) -> bool:
    ceiling = max((LEVELS.index(a) for a in allowed if a in LEVELS), default=-1)
    return all(LEVELS.index(x) <= ceiling if x in LEVELS else x in allowed for x in labels)


def in_grant(task: dict) -> bool:
    """Every call of the task within its grant: tool, target, labels, credential, time."""
    grant = task["grant"]
    end = max(e["ts"] for e in task["events"] if e["status"] != "started")
    return all(
        any(fnmatchcase(c["tool"], p) for p in grant["tools"])
        and target_ok(c["target"], grant["targets"])
        and labels_ok(c["data_labels"], grant["data_labels"])
        and c["credential_id"] in grant["credential_ids"]
        and grant["issued_at"] <= c["ts"] <= min(grant["expires_at"], end)
        for c in task["calls"]
    )


def attack_type(task: dict) -> str | None:
    return task["events"][0]["truth"]["attack_type"]


def test_same_seed_same_events_other_seed_differs() -> None:
    assert generate(SMALL) == generate(SMALL)
    assert generate(SMALL) != generate(FleetSpec(seed=4, agents_per_role=1, history_days=1,
                                                 attack_days=1))


def test_events_are_in_time_order(events: list[dict]) -> None:
    times = [event_time(e) for e in events]
    assert times == sorted(times)
    assert all(t.endswith("Z") for t in times)


def test_every_call_has_a_task_and_an_earlier_grant(tasks: dict[str, dict]) -> None:
    for task in tasks.values():
        assert task["grant"] is not None
        statuses = [e["status"] for e in task["events"]]
        assert statuses[0] == "started" and len(statuses) == 2
        assert statuses[1] in ("completed", "failed", "cancelled")
        assert task["calls"], "every task makes calls"
        assert task["grant"]["issued_at"] < task["events"][0]["ts"] <= task["calls"][0]["ts"]
        assert task["grant"]["issued_at"] < task["grant"]["expires_at"]


def test_fields_and_labels(events: list[dict]) -> None:
    for e in events:
        assert e["agent_id"].startswith("spiffe://acme.org/agents/")
        if e["kind"] == "toolcall":
            assert set(e["truth"]) == {"attack", "attack_type", "harmful"}
            assert e["tool"] in TOOL_CATALOGUE
            assert e["action"] == TOOL_CATALOGUE[e["tool"]].action
            assert e["outcome"] in ("ok", "error", "denied")
            assert e["truth"]["attack"] or not e["truth"]["harmful"]
        elif e["kind"] == "task":
            assert set(e["truth"]) == {"attack", "attack_type", "kind"}


def test_every_attack_type_appears_and_does_harm(tasks: dict[str, dict]) -> None:
    attacks = [t for t in tasks.values() if attack_type(t)]
    assert {attack_type(t) for t in attacks} == set(ATTACK_TYPES)
    for task in attacks:
        assert any(c["truth"]["harmful"] for c in task["calls"]), attack_type(task)
        assert all(c["truth"]["attack_type"] in (None, attack_type(task)) for c in task["calls"])


def test_most_attacks_stay_inside_the_grant(tasks: dict[str, dict]) -> None:
    attacks = [t for t in tasks.values() if attack_type(t)]
    inside = [t for t in attacks if in_grant(t)]
    assert len(inside) / len(attacks) >= 0.6
    assert not any(attack_type(t) in ("credential_reuse", "use_after_task_end", "out_of_grant")
                   for t in inside)
    benign = [t for t in tasks.values() if not attack_type(t)]
    assert all(in_grant(t) for t in benign)


def test_attacks_start_after_warm_up(tasks: dict[str, dict]) -> None:
    first = min(t["grant"]["issued_at"] for t in tasks.values())
    first_attack = min(t["grant"]["issued_at"] for t in tasks.values() if attack_type(t))
    assert first_attack[:10] >= "2026-11-09" > first[:10]


def test_jsonl_round_trip(tmp_path, events: list[dict]) -> None:
    path = tmp_path / "fleet.jsonl"
    write_jsonl(events[:500], path)
    assert list(read_jsonl(path)) == events[:500]


def test_print_summary(events: list[dict], tasks: dict[str, dict]) -> None:
    """Not an assertion: numbers to eyeball realism (run with -s)."""
    calls = [e for e in events if e["kind"] == "toolcall"]
    role = lambda agent: agent.split("/")[-2]  # noqa: E731
    per_role_tasks = Counter(role(t["grant"]["agent_id"]) for t in tasks.values())
    per_role_calls = Counter(role(c["agent_id"]) for c in calls)
    lengths = [len(t["calls"]) for t in tasks.values()]
    attacks = Counter(attack_type(t) for t in tasks.values() if attack_type(t))
    inside = Counter(attack_type(t) for t in tasks.values() if attack_type(t) and in_grant(t))
    wide = sum(t["grant"]["targets"] == ["*"] for t in tasks.values())
    external = [c for c in calls if c["action"] == "send" and not c["truth"]["attack"]
                and ".acme.org" not in (c["target"] or "") and "@acme.org" not in
                (c["target"] or "") and not (c["target"] or "").startswith("slack:")]
    benign_deletes = sum(c["action"] == "delete" and not c["truth"]["attack"] for c in calls)
    benign_admin = sum(c["action"] == "admin" and not c["truth"]["attack"] for c in calls)
    print(f"\nevents {len(events):,}  tasks {len(tasks):,}  calls {len(calls):,}  "
          f"attack tasks {sum(attacks.values())}  attack calls "
          f"{sum(c['truth']['attack'] for c in calls)}  harmful "
          f"{sum(c['truth']['harmful'] for c in calls)}")
    print(f"calls/task mean {statistics.mean(lengths):.1f}  median "
          f"{statistics.median(lengths)}  max {max(lengths)}")
    print("tasks per role", dict(per_role_tasks))
    print("calls per role", dict(per_role_calls))
    print("outcomes", dict(Counter(c["outcome"] for c in calls)))
    print(f"grants with targets ['*']: {wide / len(tasks):.0%}")
    print(f"benign external sends {len(external)}  benign deletes {benign_deletes}  "
          f"benign admin calls {benign_admin}")
    print("attack type: tasks (in grant)")
    for name in ATTACK_TYPES:
        print(f"  {name:22s} {attacks[name]:3d} ({inside[name]})")
    print(f"in-grant share of attack tasks: {sum(inside.values()) / sum(attacks.values()):.0%}")


def test_decodes_and_agrees_with_conformance(events: list[dict]) -> None:
    """Every record meets its contract; the project's conformance check sees no violation
    in benign tasks or in the attack types designed to stay inside the grant."""
    from intentwatch.contracts import Grant, TaskEvent, decode_replay_record
    from intentwatch.models.conformance import check_call

    grants, attack = {}, {}
    for record in events:
        event = decode_replay_record(record)
        if isinstance(event, Grant):
            grants[event.task_id] = event
        elif isinstance(event, TaskEvent):
            attack[event.task_id] = record["truth"]["attack_type"]
        elif attack[event.task_id] not in ("credential_reuse", "use_after_task_end",
                                           "out_of_grant"):
            assert check_call(event, grants[event.task_id]) == [], record


def test_task_shape(tasks: dict[str, dict]) -> None:
    for task in tasks.values():
        grant = task["grant"]
        attacked = any(c["truth"]["attack"] for c in task["calls"])
        # benign plans stop at 20 calls; a volume creep runs on after the task's own sinks
        assert 1 <= len(task["calls"]) <= (32 if attacked else 20)
        assert 1 <= len(grant["credential_ids"]) <= 2
        assert grant["intent"] and grant["tools"] and grant["targets"]
        ttl = datetime.fromisoformat(grant["expires_at"]) - datetime.fromisoformat(
            grant["issued_at"])
        assert 15 * 60 <= ttl.total_seconds() <= 60 * 60


def test_attacks_do_more_than_the_approved_task(tasks: dict[str, dict]) -> None:
    """A destructive delete never deletes only what the task itself deletes, and a volume
    creep starts with a repeat of one of the task's own sinks."""
    for task in tasks.values():
        calls = task["calls"]
        kinds = {c["truth"]["attack_type"] for c in calls if c["truth"]["attack"]}
        if "destructive_delete" in kinds:
            own = {(c["tool"], c["target"]) for c in calls if not c["truth"]["attack"]}
            deletes = [(c["tool"], c["target"]) for c in calls if c["truth"]["harmful"]]
            assert not set(deletes) <= own
        if "volume_creep" in kinds:
            first = next(c for c in calls if c["truth"]["attack"])
            before = calls[: calls.index(first)]
            assert any(c["tool"] == first["tool"] and c["target"] == first["target"]
                       for c in before)


def test_roles_are_data_files_and_a_misspelt_step_key_is_refused(tmp_path) -> None:
    for name in ROLE_NAMES:
        role = load_role(_DATA / "roles" / f"{name}.json")
        assert role.name == name and role.tasks and role.admin
    data = json.loads((_DATA / "roles" / "hr.json").read_text())
    data["tasks"][0]["steps"][0]["lables"] = ["pii"]
    (tmp_path / "hr.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lables"):
        load_role(tmp_path / "hr.json")


def test_an_extra_action_is_one_harmful_call_to_an_ordinary_destination(
        tasks: dict[str, dict]) -> None:
    """The rest of the task is an ordinary task; the one harmful call goes to a personal or
    company mailbox or a bank account, as benign sends and payments do."""
    extra = [t for t in tasks.values() if attack_type(t) == "extra_action"]
    assert extra
    for task in extra:
        attack = [c for c in task["calls"] if c["truth"]["attack"]]
        assert len(attack) == 1 and attack[0]["truth"]["harmful"]
        assert attack[0]["target"].startswith(("mailto:", "iban:"))


def test_held_out_kinds_never_run_in_the_warm_up_and_are_the_only_ones_after() -> None:
    spec = FleetSpec(seed=5, agents_per_role=1, history_days=1, attack_days=1,
                     held_out_kinds=1)
    held = {name: spec.held_out(load_role(_DATA / "roles" / f"{name}.json"))
            for name in ROLE_NAMES}
    assert all(len(kinds) == 1 for kinds in held.values())
    seen: Counter[bool] = Counter()
    warm = spec.start.timestamp() + spec.history_days * 86400
    for event in generate(spec):
        if event["kind"] == "task" and event["status"] == "started":
            role = event["agent_id"].split("/")[-2]
            after = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp() >= warm
            assert (event["truth"]["kind"] in held[role]) == after
            seen[after] += 1
    assert seen[True] and seen[False]
