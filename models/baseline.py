"""Per-agent behaviour baselines: every detector of :mod:`~intentwatch.models.detectors`,
wired to the observation's features, scored and learned together, and what they learned
as data (:mod:`~intentwatch.models.learned`).

>>> from intentwatch.contracts import ToolCall
>>> from intentwatch.models.catalogue import ToolInfo
>>> baseline = Baseline()
>>> agent = "spiffe://acme.org/agents/support/a1"
>>> call = ToolCall(event_id="e1", ts=0.0, agent_id=agent, task_id="t", tool="crm.lookup")
>>> x = baseline.task(agent).observe(call, ToolInfo("crm.lookup", "read"))
>>> baseline.score_one(x)["tool_rarity"]
0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from intentwatch.models.detectors import (
    BaselineConfig,
    Count,
    FleetNovelty,
    Habit,
    Rarity,
    Volume,
)
from intentwatch.models.features import SENSITIVE_LABELS, Observation, TaskContext
from intentwatch.models.learned import (
    AgentState,
    Baselines,
    KeyedScope,
    RarityScope,
    RoleState,
)
from intentwatch.models.statistics import AGENT, ROLE, ramp

__all__ = ["Baseline"]


def _describe_flow(x: Observation) -> str:
    sink, label = x.carried or ("a sink", "sensitive")
    target = f" to {x.target}" if x.target else ""
    return f"{sink} ({x.tool}{target}) after reading {label} data in this task:"


def _bytes(n: float) -> str:
    if n < 1000:
        return f"{n:,.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:,.1f} {unit}"
    return f"{n / 1000:,.1f} GB"



def _bytes_sentence(what: str) -> Callable[[Observation, float, float], str]:
    def describe(x: Observation, typical: float, z: float) -> str:
        value = getattr(x, what)
        return (
            f"{what} {_bytes(value)} on {x.tool} is {z:.1f} σ above this agent's usual "
            f"(about {_bytes(typical)})"
        )

    return describe


@dataclass
class Baseline:
    """All per-agent detectors, scored and learned together.

    ``score_one`` returns one value in [0, 1] per detector name; ``explain``
    gives the sentence for one of them.
    """

    config: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        c = self.config
        self.detectors: dict[str, Any] = {
            "tool_rarity": Rarity("tool", lambda x: x.tool, c, max_values=c.max_tools),
            "target_rarity": Rarity(
                "target", lambda x: x.endpoint, c, max_values=c.max_targets,
                describe=lambda x: f"target {x.endpoint}",
            ),
            "internal_site_rarity": Rarity(
                "internal destination", lambda x: None if x.external else x.site, c,
                max_values=c.max_sites,
            ),
            "external_site_rarity": Rarity(
                "external destination", lambda x: x.site if x.external else None, c,
                max_values=c.max_sites,
            ),
            "transition_rarity": Rarity(
                "transition", lambda x: (x.prev_tool, x.tool), c,
                max_values=c.max_transitions, context=lambda x: x.prev_tool,
                describe=lambda x: "transition " + (
                    "task start" if x.prev_tool == TaskContext.START else x.prev_tool
                ) + f" → {x.tool}",
            ),
            "kind_tool_rarity": Rarity(
                "tool in this kind of task", lambda x: None if x.kind is None else (x.kind, x.tool),
                c, max_values=c.max_transitions, context=lambda x: x.kind,
                describe=lambda x: f"{x.tool} in a '{x.kind}' task",
            ),
            "domain_novelty": FleetNovelty("domain", lambda x: x.domain, c),
            "bytes_out": Volume(
                "bytes_out", lambda x: x.bytes_out, c, key=lambda x: x.tool,
                describe=_bytes_sentence("bytes_out"),
            ),
            "bytes_in": Volume(
                "bytes_in", lambda x: x.bytes_in, c, key=lambda x: x.tool,
                describe=_bytes_sentence("bytes_in"),
            ),
            "task_bytes_out": Volume(
                "task_bytes_out",
                lambda x: x.task_bytes_out if x.task_bytes_out and x.action != "read" else None,
                c, key=lambda x: x.tool,
                describe=lambda x, typical, z: (
                    f"this task has sent {_bytes(x.task_bytes_out)} through {x.tool} so far, "
                    f"{z:.1f} σ above this agent's usual (about {_bytes(typical)})"
                ),
            ),
            "tool_repeats": Count(
                "tool_repeats", lambda x: x.repeats, c, key=lambda x: x.tool,
                describe=lambda x, usual, tail: (
                    f"call {x.repeats} of {x.tool} in this task; this agent's tasks average "
                    f"{usual:.1f} (chance of this many: {tail:.1g})"
                ),
            ),
            "target_repeats": Count(
                "target_repeats", lambda x: x.target_repeats, c, key=lambda x: x.tool,
                describe=lambda x, usual, tail: (
                    f"call {x.target_repeats} of {x.tool} on {x.target or 'the same target'} in "
                    f"this task; this agent's tasks average {usual:.1f} (chance of this many: "
                    f"{tail:.1g})"
                ),
            ),
            "rate": Volume(
                "rate", lambda x: x.rate, c,
                describe=lambda x, typical, z: (
                    f"{x.rate:,.0f} calls in about the last minute of this task, "
                    f"{z:.1f} σ above this agent's usual (about {typical:,.0f})"
                ),
            ),
            "flow": Rarity(
                "flow", lambda x: x.carried, c, max_values=2 * len(SENSITIVE_LABELS) + 2,
                quiet=lambda value: value[1] == "none",
                describe=_describe_flow,
            ),
            "payload_growth": Habit(
                "payload_growth",
                lambda x: None if x.growth is None else ramp(x.growth, c.growth_ln),
                c, key=lambda x: x.tool,
                describe=lambda x, usual: (
                    f"this task's payloads through {x.tool} grew {math.exp(x.growth or 0):.1f}×"
                    f" (to {_bytes(x.bytes_out or 0)}); this agent's repeated {x.tool} calls "
                    f"grow like this {usual:.0%} of the time"
                ),
            ),
            "unasked": Habit(
                "unasked", lambda x: x.unasked, c, key=lambda x: x.tool,
                describe=lambda x, usual: (
                    f"this agent uses {x.tool} unasked in {usual:.0%} of its calls of it"
                    if usual >= 0.005 else ""
                ),
            ),
        }

        self._rarities = [(name, d) for name, d in self.detectors.items() if isinstance(d, Rarity)]
        self._scorers = [(name, d.score_one, isinstance(d, Rarity))
                         for name, d in self.detectors.items()]
        self._learners = [(name, d.learn_one, isinstance(d, Rarity))
                          for name, d in self.detectors.items()]

    def surprisals(self, x: Observation) -> dict[str, float]:
        """What each rarity judges ``x`` by (:meth:`~Rarity.scored_surprisal`), by detector
        name: computed once, read by :meth:`score_one` and, when the task is learned, by
        :meth:`learn_one` (which so learns the call as it was scored)."""
        found = {}
        for name, rarity in self._rarities:
            surprisal = rarity.scored_surprisal(x)
            if surprisal is not None:
                found[name] = surprisal
        return found

    def score_one(
        self, x: Observation, surprisals: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Every detector's score of ``x``, by name; ``surprisals`` from :meth:`surprisals`
        (else the rarities compute their own)."""
        known = surprisals or {}
        return {
            name: score_one(x, known.get(name)) if rare else score_one(x)
            for name, score_one, rare in self._scorers
        }

    def learn_one(self, x: Observation, surprisals: Mapping[str, float] | None = None) -> None:
        """Learn ``x`` in every detector; ``surprisals`` as it was scored (else as now)."""
        known = surprisals or {}
        for name, learn_one, rare in self._learners:
            if rare:
                learn_one(x, known.get(name))
            else:
                learn_one(x)

    def explain(self, name: str, x: Observation) -> str:
        explanation: str = self.detectors[name].explain(x)
        return explanation

    def history(self, agent_id: str, role: str) -> tuple[float, float, float]:
        """Decayed number of calls learned from the agent, its role and the fleet (every
        call has a tool, so the tool counts are the baselines' evidence).

        >>> Baseline().history("spiffe://acme.org/support/a1", "spiffe://acme.org/support")
        (0.0, 0.0, 0.0)
        """
        learned: tuple[float, float, float] = self.detectors["tool_rarity"].learned(agent_id, role)
        return learned

    def census(self) -> tuple[int, dict[str, float], float]:
        """Agents learned, each role's decayed number of learned calls, and the fleet's."""
        tools = self.detectors["tool_rarity"]
        agents, roles = tools.census()
        return agents, roles, tools.learned("", "")[2]

    # -- what was learned, as data (:mod:`~intentwatch.models.learned`) ----------------------

    def agent_state(self, agent_id: str) -> AgentState:
        """What the detectors learned of ``agent_id`` alone: it moves with the agent,
        apart from its role's and the fleet's."""
        return AgentState(id=agent_id, **self._scope_state(AGENT, agent_id))

    def role_state(self, role: str) -> RoleState:
        """What the detectors learned of ``role``, apart from its agents' and the fleet's.

        >>> Baseline().role_state("spiffe://acme.org/agents/support").rarity
        {}
        """
        return RoleState(id=role, **self._scope_state(ROLE, role))

    def load_agent_state(self, data: AgentState) -> None:
        """Take over what :meth:`agent_state` gave (another baseline's of the same config)."""
        self._load_scope_state(AGENT, data)

    def forget_agent(self, agent_id: str) -> None:
        """Forget what the detectors learned of ``agent_id`` alone (:meth:`agent_state`
        gave it; :meth:`load_agent_state` of that brings it back as it was)."""
        for detector in self.detectors.values():
            if not isinstance(detector, FleetNovelty):
                detector.forget_agent(agent_id)

    def load_role_state(self, data: RoleState) -> None:
        """Take over what :meth:`role_state` gave (another baseline's of the same config)."""
        self._load_scope_state(ROLE, data)

    def roles(self) -> set[str]:
        """The roles something was learned of (every call has a tool: the tool counts' roles)."""
        return set(self.detectors["tool_rarity"].census()[1])

    def population_state(self) -> Baselines:
        """What the detectors learned of the fleet."""
        state = Baselines(rarity={}, keyed={}, novelty={})
        for name, detector in self.detectors.items():
            kind = (state.novelty if isinstance(detector, FleetNovelty)
                    else state.rarity if isinstance(detector, Rarity) else state.keyed)
            kind[name] = detector.fleet_state()
        return state

    def load_population_state(self, data: Baselines) -> None:
        """Take over what :meth:`population_state` gave (of the same config)."""
        for name, fleet in (*data.rarity.items(), *data.keyed.items(), *data.novelty.items()):
            self.detectors[name].load_fleet_state(fleet)

    def _scope_state(self, level: int, scope: str) -> dict[str, Any]:
        rarity: dict[str, RarityScope] = {}
        keyed: dict[str, KeyedScope] = {}
        for name, detector in self.detectors.items():
            if isinstance(detector, FleetNovelty):
                continue
            state = detector.scope_state(level, scope)
            if state is not None:
                (rarity if isinstance(detector, Rarity) else keyed)[name] = state
        return {"rarity": rarity, "keyed": keyed}

    def _load_scope_state(self, level: int, data: AgentState | RoleState) -> None:
        for name, scope in (*data.rarity.items(), *data.keyed.items()):
            self.detectors[name].load_scope_state(level, data.id, scope)

    def task(self, agent_id: str, intent: str | None = None, cap: int = 512) -> TaskContext:
        """A fresh context for a new task of ``agent_id`` (approved for ``intent``; it
        remembers up to ``cap`` written targets)."""
        return TaskContext(
            agent_id, self.config.internal_domains, self.config.rate_window_seconds, intent, cap
        )
