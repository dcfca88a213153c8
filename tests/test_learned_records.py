"""The ``learned`` table's records stay far below the broker's 1 MB message limit whatever
the number of roles or the values they learned (issue 10, row 1), through the faust agents
(``test_context``, no Kafka), and a restarted worker reads them back."""

from __future__ import annotations

import time
from pathlib import Path

from intentwatch.contracts import encode
from intentwatch.models.learned import PART_BYTES
from intentwatch.pipeline.app import Pipeline
from tests.pipeline_harness import Sent, call, grant_token, make_pipeline, put

MESSAGE_LIMIT = 1024 * 1024
"""The broker's default message limit (``message.max.bytes``)."""


async def learn(pipeline: Pipeline, agents: list[str], tasks: range, targets: list[str]) -> None:
    """Each agent runs clean tasks (numbered by ``tasks``), each calling the CRM on every
    one of ``targets``."""
    async with pipeline.agent.test_context() as events:
        for agent in agents:
            for n in tasks:
                task = f"t{n}"
                await put(events, "grant", grant_token(agent, task), agent)
                for target in targets:
                    await put(events, "toolcall", call(agent, task, target=target), agent)
                await put(events, "task", encode({
                    "event_id": f"end-{task}", "ts": time.time(), "agent_id": agent,
                    "task_id": task, "status": "completed"}), agent)


def word(n: int) -> str:
    """A word of letters only for ``n`` (the baselines replace record numbers in targets)."""
    return "".join("abcdefghijklmnop"[int(digit, 16)] for digit in f"{n:04x}")


def fleet(roles: int) -> list[str]:
    return [f"spiffe://acme.org/agents/role{r}/a1" for r in range(roles)]


def restarted(pipeline: Pipeline, folder: Path) -> Pipeline:
    """A new worker whose ``learned`` table holds what ``pipeline``'s changelog holds."""
    again = make_pipeline(folder, Sent(), population_seconds=0)
    again.learned.data.update(pipeline.learned.data)  # what recovery reads from the changelog
    for partition in range(pipeline.settings.partitions):
        again._partition(partition)
    return again


def learned_roles(pipeline: Pipeline) -> set[str]:
    return set().union(*(engine.detector.learned_roles() for engine in pipeline.engines.values()))


def population(pipeline: Pipeline) -> dict[str, object]:
    """What the worker's ``/status`` says was learned of roles and the fleet (its agents'
    own state is read when the engine meets them)."""
    history = dict(pipeline.status()["learned"]["history"])
    del history["agents"]
    return history


async def test_no_learned_record_grows_with_the_number_of_roles(tmp_path: Path) -> None:
    targets = [f"crm://c-{k}" for k in range(8)]
    largest = {}
    for roles in (8, 64):
        pipeline = make_pipeline(tmp_path / str(roles), Sent(), population_seconds=0)
        await learn(pipeline, fleet(roles), range(2), targets)
        records = pipeline.learned.data
        assert sum(key.endswith("/population") for key in records) == 4  # one per partition
        assert sum("/role/" in key for key in records) == roles  # and one per role
        largest[roles] = max(len(value) for value in records.values())
        again = restarted(pipeline, tmp_path / f"{roles}-again")
        assert learned_roles(again) == learned_roles(pipeline) == {
            agent.rsplit("/", 1)[0] for agent in fleet(roles)}
        assert population(again) == population(pipeline)
    # 56 more roles, same values: the largest record grows by their names (the population
    # lists its roles), not by what they learned (on one population record: by ~4 kB each)
    assert largest[64] - largest[8] < 56 * 64, largest


async def test_a_role_that_learned_megabytes_is_kept_in_records_far_below_the_limit(
    tmp_path: Path
) -> None:
    pipeline = make_pipeline(tmp_path, Sent(), population_seconds=0)
    role = "spiffe://acme.org/agents/hoarder"
    agents = [f"{role}/a{n}" for n in range(3)]
    for n in range(8):  # distinct 2.8 kB targets: each scope keeps up to its cap of them
        await learn(pipeline, agents, range(n, n + 1),
                    [f"crm://{word(n * 40 + k)}/" + "/orders" * 400 for k in range(40)])
    records = pipeline.learned.data
    assert sum(len(value) for value in records.values()) > 4 * MESSAGE_LIMIT
    assert max(len(value) for value in records.values()) <= PART_BYTES <= MESSAGE_LIMIT / 4
    parted = {key.split("#part")[0] for key in records if "#part" in key}
    assert agents[0] in parted and any("/role/" in key for key in parted)
    again = restarted(pipeline, tmp_path / "again")
    assert learned_roles(again) == {role}
    assert population(again) == population(pipeline)
    engine, twin = (next(iter(p.engines.values())) for p in (pipeline, again))
    assert (twin.detector.role_state(role) == engine.detector.role_state(role)
            and twin.detector.population_state() == engine.detector.population_state())
