"""A short fixture fleet's replay, pinned: a change meant to keep behaviour keeps it.

The digest covers every verdict, revocation and audit, encoded as published. A change
that is *meant* to alter detection updates :data:`DIGEST` in the same commit and says
why; any other change must leave it as it is (the layout move of issue 8 did).
"""

from __future__ import annotations

import hashlib

import msgspec

from intentwatch.models.engine import Engine
from intentwatch.models.replay import replay
from intentwatch.simulation.fleet import FleetSpec, generate

SPEC = FleetSpec(seed=4, agents_per_role=1, history_days=1.0, attack_days=1.0, attack_rate=0.3)
DIGEST = "57432220b6c159c79096043cd40184e40713d863df4a701eb9ca2d5f821fa619"
"""sha256 of the outputs of the engine of config 2026.12.3 (issue 11: destination provenance,
novelty alone held at alert, verdicts name their rule, verb-based intent reading; evidence
without flow, without an unreadable intent's or a vouched send's unasked action; a task's
own scratch files deleted unasked; other kinds of records deleted as unnamed targets; a
delete or access change the intent does not ask for at all as evidence of its own), whose
verdicts carry the learned history (``history_*`` components, issue 14) and whose
revocations carry ``reason_user`` and ``session_token`` (issue 13): without those the
outputs are those of 2c281b1d…, so no decision, score or reason changed. Then (405cc9e7… →
57432220…) a destination nothing vouches for in a role too new to establish any alerts
(``cold_destination``): 6 calls allowed before are alerts, nothing else changed."""


def replay_digest(spec: FleetSpec) -> tuple[int, str]:
    """How many outputs the replay of ``spec``'s fleet gives, and their sha256."""
    digest, count = hashlib.sha256(), 0
    for outcome in replay(generate(spec), Engine()):
        for item in (*outcome.verdicts, *outcome.revocations, *outcome.audits):
            digest.update(msgspec.json.encode(item) + b"\n")
            count += 1
    return count, digest.hexdigest()


def test_the_fixture_fleet_replays_to_the_pinned_outputs() -> None:
    count, digest = replay_digest(SPEC)
    assert count > 300
    assert digest == DIGEST
