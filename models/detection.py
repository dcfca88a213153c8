"""Fusion: intent alignment, per-agent baselines and the shared model, in one score.

The :class:`Detector` is what the engine asks about every tool call. Each
component is a value in [0, 1] that means the same for every agent; they are
combined in log-odds::

    z = bias + m · Σ w_b · behaviour_b + Σ w_i · intent_i
    call risk = sigmoid(z)

The behaviour components (:data:`BEHAVIOUR`: rarities, volumes, counts, the
shared model) say how unusual the call is for this agent; ``m`` grows with
the call's harm potential, the action's risk or the sensitivity of the data it
touches when higher (an unusual read of public data matters less than an
unusual send, or an unusual read of credentials; a send of public data from a
task that read nothing sensitive weighs as a write). The intent components
(:data:`INTENT`) say how far the call leaves what was approved: an action the
intent does not ask for (weighted by the action's risk, discounted when the
agent habitually does so), a send or delete to another target than the ones
the intent names or access handed to an outside party it does not name, an
administrative privilege it does not ask for, a flow of sensitive data to a
sink (code run straight on
sensitive data the agent rarely reads counts as one, however usual running code
on that label is). What the intent approves is no surprise: the rarity of a
target it names, of a tool for an action it asks for, is discounted.

Within a task, risks accumulate: each distinct behaviour (tool and target)
keeps its highest risk, the part above ``risk_floor`` is combined by noisy-OR,
and the score is the larger of the call's risk and the task's. So three
medium signals in one task revoke where each alone would only alert.

Each reason's weight is its share of the score, so the weights sum to it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

import msgspec

from intentwatch.contracts import Grant, Reason, ToolCall, role_of
from intentwatch.models.baseline import Baseline
from intentwatch.models.catalogue import ACTION_RISK, ToolInfo
from intentwatch.models.config import ScoringConfig, settings_from
from intentwatch.models.detectors import BaselineConfig
from intentwatch.models.features import ContextState, Observation, TaskContext
from intentwatch.models.intent import IntentCheck, parse_intent
from intentwatch.models.learned import (
    AgentState,
    Learned,
    Population,
    RoleState,
    Scope,
    open_sealed,
    seal,
)
from intentwatch.models.limits import remember
from intentwatch.models.multivariate import MultivariateConfig, SharedAnomalyModel
from intentwatch.models.provenance import (
    Destination,
    Established,
    Resolution,
    destinations_of,
    explicit_patterns,
    resolve,
)

__all__ = [
    "BEHAVIOUR",
    "DEFAULT_WEIGHTS",
    "EVIDENCE",
    "HELD",
    "RULES",
    "Assessment",
    "Detector",
    "FusionConfig",
    "ProvenanceConfig",
    "ScoredCall",
    "ScoringState",
    "TaskRisk",
    "TaskScoring",
    "counted_evidence",
    "fuse",
    "history_summary",
    "hold",
]

BEHAVIOUR = (
    "tool_rarity", "kind_tool_rarity", "target_rarity", "internal_site_rarity",
    "external_site_rarity", "domain_novelty", "transition_rarity", "bytes_out", "bytes_in",
    "task_bytes_out", "tool_repeats", "target_repeats", "rate", "payload_growth",
    "novel_source", "hst",
)
"""Components that say how unusual a call is; the action's risk scales them."""
INTENT = ("intent", "unasked_harm", "unnamed_target", "privilege", "flow", "destination")
"""Components that say how far a call leaves its intent; they weigh as they are."""
EVIDENCE = ("intent", "unasked_harm", "unnamed_target", "privilege", "destination")
"""The intent components that can make a call revocable (``evidence_level``): not ``flow``,
which measures how rare a flow of sensitive data into a sink is for the agent (novelty)."""
_SENSITIVE_LEVEL = 0.6
"""Classification level from which a read counts as a sensitive source (confidential up)."""
_SOURCE_NOVELTY = (0.2, 0.7)
"""Rarity of a sensitive read mapped to source novelty 0 and 1 (a new record of a usual
kind is no unusual source)."""
S = TypeVar("S", AgentState, RoleState)

_TARGETED = ("target_rarity", "internal_site_rarity", "flow")
_DOMAIN = ("external_site_rarity", "domain_novelty")
_FEATURES = (
    *(name for name in BEHAVIOUR if name not in ("hst", "payload_growth", "novel_source")),
    *INTENT, "action_risk", "label_level", "external",
)
"""What the shared model sees (fixed, all in [0, 1])."""

RULES: dict[str, str] = {
    "score": "under the revoke level, the score decides between allow and alert",
    "intent": "intent or destination evidence, with the score, revokes",
    "novelty": "novelty alone revokes past its own, higher level (broad grants only)",
    "novelty_only": "novelty without intent or destination evidence: at most an alert",
    "delegated": "the request delegates to data, so what it permits is unknown: at most "
                 "an alert",
    "data_destination": "the intent asks for this action without naming where it goes, so "
                        "its destination comes from data: a destination nothing vouches for "
                        "is at most an alert",
    "cold_destination": "a destination nothing vouches for while the role has taught fewer "
                        "than min_history_tasks clean tasks (nothing could be established "
                        "yet): an alert, never a revocation",
}
"""The rules that decide a call, by name (``Verdict.rule``; the engine adds ``grant`` and
``task_revoked`` for conformance)."""
HELD = frozenset({"novelty_only", "delegated", "data_destination"})
"""Rules that hold a call at alert: its score is brought under the revoke level."""

DEFAULT_WEIGHTS: dict[str, float] = {
    "intent": 2.6, "unasked_harm": 1.6, "unnamed_target": 7.99, "privilege": 7.99, "flow": 6.08,
    "destination": 8.0,
    "tool_rarity": 0.63, "kind_tool_rarity": 1.0, "target_rarity": 0.8,
    "internal_site_rarity": 0.21, "external_site_rarity": 0.21, "domain_novelty": 0.21,
    "transition_rarity": 4.18, "bytes_out": 0.21, "bytes_in": 0.2, "task_bytes_out": 1.87,
    "tool_repeats": 0.98, "target_repeats": 5.99, "rate": 0.21, "payload_growth": 0.94,
    "novel_source": 0.52, "hst": 0.68,
}
"""Log-odds per unit of each component (as tuned for config 2026.11.4), for any weight the
config leaves out."""


@dataclass(frozen=True)
class FusionConfig:
    """How components become a score (``detectors.fusion`` in the config)."""

    bias: float = -2.5
    """Log-odds of a call with no signal at all."""
    action_floor: float = 0.3
    """``m(action)`` for an action of risk 0; it rises linearly to 1 at risk 1."""
    sensitive_data_risk: float = 0.6
    """Risk of touching the most sensitive data, whatever the action (reads included)."""
    named_discount: float = 0.8
    """How much of a target's (or domain's) rarity the intent naming it removes."""
    risk_floor: float = 0.15
    """Call risk below this never accumulates in the task."""
    min_reason_weight: float = 0.05
    max_reasons: int = 4
    """At most this many reasons per verdict, the weightiest (the weights still sum to the
    score only up to the ones left out)."""
    max_task_samples: int = 512
    """Calls per task kept as scored, for learning (longer tasks are rebuilt when learned),
    and distinct destinations, written targets, unasked tools, tools, targets and
    behaviours a task remembers."""
    max_task_sample_bytes: int = 192 * 1024
    """Bytes (msgpack, as the task's state is stored) of the calls a task keeps as scored
    since it was last learned: past them it is rebuilt when learned, as a longer one."""
    novelty_revoke_threshold: float = 0.97
    """Score from which novelty alone (rarities, volumes, the shared model) revokes under a
    broad grant; below it, and always under a narrow grant, only intent or destination
    evidence revokes and novelty at most alerts."""
    evidence_level: float = 0.45
    """Risk that a task's intent and destination evidence alone must reach (in one of its
    calls so far) before the score may revoke: an unasked send, delete or change of access,
    a destination nothing vouches for, a flow, an unasked privilege (an unasked write or
    code run, which the lexicon often misses in honest requests, is not enough)."""
    delegated: str = "alert"
    """What intent or destination evidence can do in a task whose request delegates to
    data (``do the tasks in my to-do list``): ``alert`` or ``revoke``."""

    data_destination: str = "revoke"
    """What a destination nothing vouches for can do on its own when the intent asks for the
    call's action but names no destination of its kind, so the destination comes from data
    (``reply to the sender``): ``alert`` or ``revoke``."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FusionConfig:
        config = settings_from(cls, data, "fusion")
        for name in ("delegated", "data_destination"):
            if getattr(config, name) not in ("alert", "revoke"):
                raise ValueError(f"fusion.{name} must be 'alert' or 'revoke'")
        return config


@dataclass(frozen=True)
class ProvenanceConfig:
    """When a destination or habit counts as established (``detectors.provenance``)."""

    k: int = 2
    """Distinct tasks, ended without revocation, that establish a destination or a habit."""
    half_life_tasks: float = 500.0
    """Counts halve after this many tasks of the agent (or role)."""
    max_keys: int = 2048
    """Destinations tracked per agent (per role: ``level_scale`` of the baseline times more)."""
    min_history_tasks: int = 50
    """Clean tasks a role must have taught before a destination nothing vouches for counts
    as evidence (before, nothing could be established: such a destination alerts, rule
    ``cold_destination``, and the destinations are learned)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProvenanceConfig:
        config = settings_from(cls, data, "provenance")
        if config.k < 1:
            raise ValueError("provenance.k must be at least 1")
        return config


@dataclass(frozen=True, slots=True)
class Assessment:
    """The detector's judgement of one call."""

    score: float
    """Calibrated in [0, 1]; includes the task's cumulative risk."""
    reasons: list[Reason]
    """Ordered by weight, highest first; the weights sum to about the score (reasons
    under ``min_reason_weight`` or beyond ``max_reasons`` are left out)."""
    components: dict[str, float]
    """Named component values, e.g. ``{"intent": .., "tool_rarity": .., "hst": ..}``."""
    rule: str = "score"
    """Which of :data:`RULES` decided."""
    explain: Callable[[], list[Reason]] | None = None
    """For a call scored under the alert level, whose reasons carry codes and weights but
    no sentence (``detail`` is empty: an allowed call needs none): the same reasons with
    their sentences, for a call that is revoked all the same (a grant violation). Call it
    before the next call of the task is assessed."""


def fuse(
    components: dict[str, float], weights: dict[str, float], fusion: FusionConfig
) -> tuple[float, dict[str, float]]:
    """The call's risk and each component's (non-negative) contribution to its log-odds.

    >>> components = {**dict.fromkeys(BEHAVIOUR + INTENT, 0.0), "intent": 1.0, "action_risk": 1.0}
    >>> risk, parts = fuse(components, {**DEFAULT_WEIGHTS, "intent": 4.0}, FusionConfig(bias=-4.0))
    >>> risk, parts
    (0.5, {'intent': 4.0})
    """
    floor = fusion.action_floor
    scale = floor + (1.0 - floor) * components["action_risk"]
    contributions = {
        name: scale * weights[name] * components[name] for name in BEHAVIOUR if components[name]
    }
    for name in INTENT:
        if components[name]:
            contributions[name] = weights[name] * components[name]
    z = fusion.bias + sum(contributions.values())
    return (1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0), contributions


class TaskRisk:
    """Cumulative risk of one task: noisy-OR over its distinct behaviours.

    A behaviour (tool and target) counts once, at its highest risk; only the
    part of a risk above ``floor`` counts, so many ordinary calls never add up. It
    remembers ``cap`` behaviours at most: past them, a new behaviour's risk counts again
    at each of its calls (the task's risk only grows).

    >>> task = TaskRisk(floor=0.2)
    >>> round(task.add(("crm.export", "a"), 0.6), 2), round(task.add(("crm.export", "a"), 0.6), 2)
    (0.5, 0.5)
    >>> round(task.add(("mail.send", "b"), 0.6), 2)
    0.75
    """

    __slots__ = ("_log_safe", "cap", "floor", "risks")

    def __init__(self, floor: float, cap: int = 512) -> None:
        self.floor = floor
        self.cap = cap
        self.risks: dict[tuple[str, str | None], float] = {}
        self._log_safe = 0.0  # sum of log(1 - excess risk)

    def add(self, behaviour: tuple[str, str | None], risk: float) -> float:
        """Take one call's risk; return the task's cumulative risk, this call included."""
        excess = min(0.999, max(0.0, (risk - self.floor) / (1.0 - self.floor)))
        previous = self.risks.get(behaviour, 0.0)
        if excess > previous:
            self._log_safe += math.log1p(-excess) - math.log1p(-previous)
            if behaviour in self.risks or len(self.risks) < self.cap:
                self.risks[behaviour] = excess
        return 1.0 - math.exp(self._log_safe)


@dataclass(frozen=True, slots=True)
class ScoredCall:
    """One call as the detector scored it: what learning takes when its task ends clean,
    so that the call is learned as it was judged (made once per call, never changed)."""

    x: Observation
    surprisals: Mapping[str, float]
    """Each rarity's surprisal of the call, as scored
    (:meth:`~intentwatch.models.baseline.Baseline.surprisals`)."""
    shared: tuple[dict[str, float], float | None] | None
    """The shared model's input and raw score, as scored (None: not scored by it)."""


@dataclass(slots=True)
class TaskScoring:
    """What the detector keeps of one task while it scores its calls: made by
    :meth:`Detector.open_task`, held by the engine in the task's
    :class:`~intentwatch.models.engine.TaskState`, ended by :meth:`Detector.end_task`."""

    context: TaskContext
    intent: str | None
    risk: TaskRisk
    scored: dict[str, ScoredCall] = field(default_factory=dict)
    """event id -> the call as scored, up to ``max_task_samples`` and
    ``max_task_sample_bytes``."""
    scored_bytes: int = 0
    """Bytes of ``scored`` (msgpack)."""
    source_novelty: float = 0.0
    """How unusual for the agent the most unusual sensitive read of the task so far was."""
    source: str | None = None
    """That read (tool and target), for explanations."""
    previous_novelty: float = 0.0
    """Source novelty of the task's previous call if it was a sensitive read, else 0."""
    previous_source: str | None = None
    """That read (tool and target), for explanations."""
    evidence: float = 0.0
    """Highest risk that intent and destination evidence alone gave a call of the task."""
    destinations: dict[str, None] = field(default_factory=dict)
    """Destinations the task's calls moved something to (learned when it ends clean)."""
    unasked_tools: dict[str, None] = field(default_factory=dict)
    """Tools the task used without its (readable) intent asking for them."""
    alerted_destinations: dict[str, None] = field(default_factory=dict)
    """Destinations nothing vouched for on calls that scored an alert: an alert nobody
    answered is no clean use, so the task does not establish them."""
    unreadable: bool = False
    """The lexicon found no action in the intent: its calls teach no unasked habit."""
    delegated: bool = False
    """The request delegates to data (:attr:`~intentwatch.models.intent.ParsedIntent.delegates`)."""
    unresolved: tuple[Resolution, ...] = ()
    """The current call's destinations that nothing vouches for (for explanations)."""
    direct_source: tuple[str | None, float] | None = None
    """For the current call, a code run straight after a sensitive read this agent rarely
    makes: that read and its novelty (for explanations)."""


class ScoringState(msgspec.Struct, array_like=True):
    """A :class:`TaskScoring` as versioned data (:meth:`Detector.task_state`), kept in its
    task's state so that after a crash its calls score as they would have: everything
    but what explains the current call only (``unresolved``, ``direct_source``)."""

    version: int
    settings: str
    """:attr:`Detector.task_digest` of the detector that scored the task."""
    context: ContextState
    intent: str | None
    risks: list[tuple[str, str | None, float]]
    log_safe: float
    """:class:`TaskRisk`: its behaviours' risks above the floor, and their sum of
    ``log(1 - risk)`` as it was added up."""
    scored: dict[str, ScoredCall]
    scored_bytes: int
    source_novelty: float
    source: str | None
    previous_novelty: float
    previous_source: str | None
    evidence: float
    destinations: list[str]
    unasked_tools: list[str]
    alerted_destinations: list[str]
    unreadable: bool
    delegated: bool


_SCORING_VERSION = 1
"""Bumped whenever what a reader would make of a :class:`ScoringState` changes."""


class Detector:
    """Intent alignment, per-agent baselines, the shared multivariate model, and their fusion.

    >>> from intentwatch.models.catalogue import ToolInfo
    >>> agent = "spiffe://acme.org/agents/support/a1"
    >>> detector = Detector(ScoringConfig())
    >>> grant = Grant(grant_id="g", agent_id=agent, task_id="t1", credential_ids=["c"],
    ...     tools=["*"], targets=["*"], data_labels=["restricted"], issued_at=0, expires_at=9e9,
    ...     issuer="broker", intent="Look up the order of jane@customer.example and reply to her")
    >>> call = ToolCall(event_id="e1", ts=1.0, agent_id=agent, task_id="t1",
    ...     tool="iam.grant_admin_role", target="https://iam.acme.org/users/eve")
    >>> task = detector.open_task(agent, grant)
    >>> assessment = detector.assess(call, grant, ToolInfo("iam.grant_admin_role", "admin"), task)
    >>> assessment.score > 0.5, assessment.reasons[0].code
    (True, 'intent')
    """

    def __init__(self, config: ScoringConfig) -> None:
        self.config = config
        detectors = config.detectors
        sections = sorted(set(detectors) - {"fusion", "baseline", "multivariate", "provenance"})
        if sections:
            raise ValueError(f"unknown detector settings: {', '.join(sections)}")
        self.fusion = FusionConfig.from_dict(detectors.get("fusion", {}))
        self.baseline = Baseline(BaselineConfig.from_dict(detectors.get("baseline", {})))
        self.shared = SharedAnomalyModel(
            MultivariateConfig.from_dict(detectors.get("multivariate", {})), _FEATURES
        )
        unknown = sorted(set(config.weights) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown component weights: {', '.join(unknown)}")
        self.weights = {**DEFAULT_WEIGHTS, **config.weights}
        self.provenance = ProvenanceConfig.from_dict(detectors.get("provenance", {}))
        self.established = self._established()
        """Destinations confirmed by distinct clean tasks, per agent and role."""
        self.habits = self._established()
        """Tools used unasked in distinct clean tasks, per agent and role (the habit
        discount applies only to these)."""
        self.learning = True
        """Whether ended tasks are learned (off: the baselines are frozen, e.g. to measure
        what learning adds after a warm-up)."""
        self.learned_calls = 0
        """Calls learned since the detector was built or its population state loaded."""
        self.restored_calls = 0
        """Calls the loaded population state had learned."""
        self.settings_digest = _digest(self._learning_settings())
        """Of the settings that give learned state its meaning (learned state names it)."""
        self.task_digest = _digest({**self._learning_settings(),
                                    "fusion": detectors.get("fusion", {})})
        """Of the settings that give a :class:`ScoringState` its meaning."""
        self._agents: set[str] = set()
        """Agents something was learned of (their state is theirs, not the population's)."""
        self._changed: set[str] = set()
        """Agents whose learned state changed since :meth:`take_learned_agents`."""
        self._changed_roles: set[str] = set()
        """Roles whose learned state changed since :meth:`take_learned_roles`."""

    # -- the engine's interface ---------------------------------------------------------------

    def open_task(self, agent_id: str, grant: Grant | None) -> TaskScoring:
        """What the detector keeps of a task of ``agent_id`` approved by ``grant`` (None:
        none read yet), from its first assessed call on; the engine holds it."""
        intent = grant.intent if grant else None
        task = TaskScoring(
            self.baseline.task(agent_id, intent, self.fusion.max_task_samples),
            intent,
            TaskRisk(self.fusion.risk_floor, self.fusion.max_task_samples),
        )
        if intent is not None:
            parsed = parse_intent(intent)
            task.unreadable = not parsed.concepts
            task.delegated = parsed.delegates is not None
        return task

    def assess(
        self, call: ToolCall, grant: Grant | None, tool: ToolInfo, task: TaskScoring
    ) -> Assessment:
        """Score one call of ``task`` (in time order) and advance its running state."""
        x = task.context.observe(call, tool)
        check = x.check
        if x.unasked and x.unasked >= 0.5 and not task.unreadable:
            remember(task.unasked_tools, x.tool, self.fusion.max_task_samples)
        surprisals = self.baseline.surprisals(x)
        scores = self.baseline.score_one(x, surprisals)
        behaviour = self._approved(scores, check)
        found = destinations_of(tool, call.target, call.args)
        destination = self._provenance(found, call, grant, task)
        # until the role has taught enough clean tasks nothing could be established: the
        # destination is no evidence yet and adds nothing to the score, but it alerts
        cold = bool(destination) and (
            self.established.history(x.role) < self.provenance.min_history_tasks
        )
        if cold:
            destination = 0.0
        # A sink (external send, code execution) after reading sensitive data this agent
        # rarely reads: the taint of an unusual source, not just of sensitive data.
        novel_source = task.source_novelty if x.sink is not None else 0.0
        # Code run straight on sensitive data this agent rarely reads: a flow of unusual
        # sensitive data into a sink with no destination to check, however usual running
        # code after reading data of that label is for the agent.
        flow = behaviour["flow"]
        task.direct_source = None
        if x.action == "execute" and task.previous_novelty > flow:
            flow = task.previous_novelty
            task.direct_source = (task.previous_source, task.previous_novelty)
        self._note_source(x, behaviour, task)
        components = {
            **behaviour,
            "flow": flow,
            **self._intent_components(x, check, scores["unasked"]),
            "destination": destination,
            "cold_destination": float(cold),
            "data_destination": float(
                self.fusion.data_destination == "alert" and destination > 0.0
                and _from_data(check, task.intent, task.unresolved)
            ),
            "novel_source": novel_source,
        }
        features = self.shared.features_of(components)
        raw = self.shared.raw_score_one(features)
        hst = self.shared.calibrate(raw)
        if check is not None and check.target_named:
            hst *= 1.0 - self.fusion.named_discount * check.credit
        components["hst"] = hst
        if len(task.scored) < self.fusion.max_task_samples:
            record = ScoredCall(x, surprisals, (features, raw))
            size = len(_ENCODER.encode(record))
            if task.scored_bytes + size <= self.fusion.max_task_sample_bytes:
                task.scored[call.event_id] = record
                task.scored_bytes += size

        call_risk, contributions = fuse(components, self.weights, self.fusion)
        task_risk = task.risk.add((call.tool, call.target), call_risk)
        score = max(call_risk, task_risk)
        components["call_risk"] = call_risk
        components["task_risk"] = task_risk
        # an unasked action is no evidence when the lexicon cannot read the intent, nor for a
        # send whose every destination something vouches for (it moves nothing to where the
        # intent did not account for)
        components["unasked_evidence"] = float(not task.unreadable and not (
            x.action == "send" and found and not task.unresolved
        ))
        evidence = sum(contributions.get(name, 0.0) for name in counted_evidence(components))
        task.evidence = max(task.evidence, _sigmoid(self.fusion.bias + evidence))
        components["evidence"] = task.evidence
        components["delegated"] = float(task.delegated)
        components["narrow_grant"] = float(_narrow(grant))
        components.update(self.history(call.agent_id, x.role))
        rule = self._rule(score, components)
        if rule in HELD:
            score = hold(score, self.config.alert_threshold, self.config.revoke_threshold)
        top = self._top_reasons(contributions, call_risk, score)
        if cold and score < self.config.alert_threshold:
            top = [("cold_destination", round(self.config.alert_threshold - score, 4)), *top]
            score, rule = self.config.alert_threshold, "cold_destination"
        if score >= self.config.alert_threshold:
            if task.evidence >= self.fusion.evidence_level:
                task.alerted_destinations.update(dict.fromkeys(
                    r.destination.key for r in task.unresolved
                    if r.destination.key in task.destinations  # else never learned anyway
                ))
            reasons = self._explained(top, x, check, score, task)
            return Assessment(score=score, reasons=reasons, components=components, rule=rule)
        return Assessment(
            score=score,
            reasons=[Reason(code=name, weight=weight, detail="") for name, weight in top],
            components=components, rule=rule,
            explain=partial(self._explained, top, x, check, score, task),
        )

    def _note_source(
        self, x: Observation, behaviour: Mapping[str, float], task: TaskScoring
    ) -> None:
        """After a call: whether it was a sensitive read, and how unusual for the agent (the
        rarity of its target or tool), for the task's later sinks."""
        task.previous_novelty = 0.0
        if x.action == "read" and x.label_level >= _SENSITIVE_LEVEL:
            novelty = max(behaviour["target_rarity"], behaviour["tool_rarity"])
            low, high = _SOURCE_NOVELTY
            novelty = min(1.0, max(0.0, (novelty - low) / (high - low)))
            source = f"{x.tool}{' on ' + x.target if x.target else ''}"
            task.previous_novelty, task.previous_source = novelty, source
            if novelty > task.source_novelty:
                task.source_novelty, task.source = novelty, source

    def _rule(self, score: float, components: dict[str, float]) -> str:
        """Which rule decides a call of this score (see :data:`RULES`)."""
        if score < self.config.revoke_threshold:
            return "score"
        if components["evidence"] >= self.fusion.evidence_level:
            if components["delegated"] and self.fusion.delegated == "alert":
                return "delegated"
            return "intent"
        if components["data_destination"]:
            return "data_destination"
        if score >= self.fusion.novelty_revoke_threshold and not components["narrow_grant"]:
            return "novelty"
        return "novelty_only"

    def _provenance(
        self, found: Sequence[Destination], call: ToolCall, grant: Grant | None, task: TaskScoring
    ) -> float:
        """1 when the call moves something to a destination nothing vouches for, else 0."""
        task.unresolved = ()
        if not found:
            return 0.0
        context = task.context
        resolutions = resolve(
            found,
            parsed=parse_intent(task.intent) if task.intent else None,
            patterns=explicit_patterns(grant.targets) if grant is not None else (),
            internal=context.internal, established=self.established,
            agent_id=call.agent_id, role=context.role,
        )
        for resolution in resolutions:
            remember(task.destinations, resolution.destination.key,
                      self.fusion.max_task_samples)
        task.unresolved = tuple(r for r in resolutions if r.how is None)
        return 1.0 if task.unresolved and task.intent is not None else 0.0

    def _established(self) -> Established:
        p = self.provenance
        return Established(p.k, p.half_life_tasks, p.max_keys, self.baseline.config.level_scale)

    def end_task(
        self,
        agent_id: str,
        task: TaskScoring | None,
        calls: Sequence[tuple[ToolCall, ToolInfo]],
        *,
        learn: bool,
    ) -> None:
        """Learn what ``task`` (of ``agent_id``; None: nothing kept, e.g. its state was of
        another version) scored since it was last learned, when it ends or goes quiet: if
        ``learn``, its ``calls`` enter the baselines and the model as they were scored
        (rebuilt from the calls when the task kept fewer). A task that goes on keeps its
        running state."""
        scored: dict[str, ScoredCall] = {}
        if task is not None:  # a task that goes on learns next only what follows
            scored, destinations, unasked, alerted = (
                task.scored, task.destinations, task.unasked_tools, task.alerted_destinations)
            task.scored, task.destinations, task.unasked_tools = {}, {}, {}
            task.alerted_destinations, task.scored_bytes = {}, 0
        if not learn or not calls or not self.learning:
            return
        if task is not None:
            role = task.context.role
            self.established.learn_task(agent_id, role, [
                key for key in destinations if key not in alerted
            ])
            self.habits.learn_task(agent_id, role, list(unasked))
        if all(call.event_id in scored for call, _ in calls):
            records = [scored[call.event_id] for call, _ in calls]
        else:  # nothing kept, or fewer calls than the task's: rebuild (without the shared model)
            records = self._rebuild(agent_id, task.intent if task else None, calls)
        unreadable = task is not None and task.unreadable
        for record in records:
            x = record.x
            if unreadable and x.unasked is not None:
                x = replace(x, unasked=None)  # the lexicon could not read the intent: no habit
            self.baseline.learn_one(x, record.surprisals)
            if record.shared is not None:
                self.shared.learn_one(*record.shared)
        self.learned_calls += len(records)
        self._agents.add(agent_id)
        self._changed.add(agent_id)
        self._changed_roles.add(role_of(agent_id))

    def task_state(self, task: TaskScoring) -> ScoringState:
        """What ``task`` holds, as data: :meth:`load_task_state` goes on from it exactly."""
        risk = task.risk
        return ScoringState(
            _SCORING_VERSION, self.task_digest, task.context.state(), task.intent,
            [(tool, target, r) for (tool, target), r in risk.risks.items()], risk._log_safe,
            task.scored, task.scored_bytes, task.source_novelty, task.source,
            task.previous_novelty, task.previous_source, task.evidence, list(task.destinations),
            list(task.unasked_tools), list(task.alerted_destinations), task.unreadable,
            task.delegated,
        )

    def load_task_state(self, state: ScoringState) -> TaskScoring | None:
        """The task :meth:`task_state` gave; None for state of another version or settings
        (the task is then scored afresh, as by :meth:`open_task`).

        >>> detector = Detector(ScoringConfig())
        >>> state = detector.task_state(detector.open_task("spiffe://acme.org/agents/a1", None))
        >>> detector.task_state(detector.load_task_state(state)) == state
        True
        """
        if state.version != _SCORING_VERSION or state.settings != self.task_digest:
            return None
        config = self.baseline.config
        risk = TaskRisk(self.fusion.risk_floor, self.fusion.max_task_samples)
        risk.risks = {(tool, target): r for tool, target, r in state.risks}
        risk._log_safe = state.log_safe
        return TaskScoring(
            TaskContext.from_state(state.context, config.internal_domains,
                                   config.rate_window_seconds),
            state.intent, risk, dict(state.scored), state.scored_bytes, state.source_novelty,
            state.source, state.previous_novelty, state.previous_source, state.evidence,
            dict.fromkeys(state.destinations), dict.fromkeys(state.unasked_tools),
            dict.fromkeys(state.alerted_destinations), state.unreadable, state.delegated,
        )

    # -- how much was learned ----------------------------------------------------------------

    def history(self, agent_id: str, role: str) -> dict[str, float]:
        """How much the learned layers know of an agent, its role and the fleet (a verdict's
        ``history_*`` components): calls learned (decayed) at each level, and the role's
        clean tasks (destinations are checked once it has ``min_history_tasks``).

        >>> Detector(ScoringConfig()).history("spiffe://acme.org/support/a1",
        ...                                   "spiffe://acme.org/support")["history_role_tasks"]
        0.0
        """
        agent, of_role, fleet = self.baseline.history(agent_id, role)
        return {
            "history_agent_calls": round(agent, 1),
            "history_role_calls": round(of_role, 1),
            "history_fleet_calls": round(fleet, 1),
            "history_role_tasks": float(self.established.history(role)),
        }

    def history_summary(self, roles: int = 20) -> dict[str, Any]:
        """The fleet's learned history for ``/status``: :func:`history_summary` of this
        detector alone."""
        return history_summary([self], roles)

    # -- what was learned, as data (:mod:`~intentwatch.models.learned`) -------------------

    def agent_state(self, agent_id: str) -> bytes:
        """What was learned of ``agent_id`` alone (its baselines, destinations and habits),
        as versioned data: it moves with the agent's partition.

        >>> detector, twin = Detector(ScoringConfig()), Detector(ScoringConfig())
        >>> twin.load_agent_state(detector.agent_state("spiffe://a/r/a1"))
        'spiffe://a/r/a1'
        """
        return seal(self._agent(agent_id), settings=self.settings_digest)

    def load_agent_state(self, data: bytes) -> str:
        """Take over what :meth:`agent_state` gave; the agent's id.
        :class:`~intentwatch.models.learned.LearnedStateError` for state of another
        version or learned with other settings."""
        state = open_sealed(data, AgentState, settings=self.settings_digest)
        self._load_agent(state)
        return state.id

    def forget_agent(self, agent_id: str) -> bytes | None:
        """Forget what was learned of ``agent_id`` alone, all of it (to hold fewer agents in
        memory): its :meth:`agent_state` if that changed since :meth:`take_learned_agents`
        (the caller writes it where the agent's state is kept), else None. Loading that
        state again brings the agent back exactly as it was.

        >>> detector = Detector(ScoringConfig())
        >>> detector.forget_agent("spiffe://a/r/a1") is None
        True
        """
        state = self.agent_state(agent_id) if agent_id in self._changed else None
        self._changed.discard(agent_id)
        self._agents.discard(agent_id)
        self.baseline.forget_agent(agent_id)
        self.established.forget_scope(agent_id)
        self.habits.forget_scope(agent_id)
        return state

    def role_state(self, role: str) -> bytes:
        """What was learned of ``role`` (this detector's share of it: its baselines,
        destinations and habits, not its agents'), as versioned data, a record of its own:
        how much one role's record holds is bounded by the baselines' caps, whatever the
        number of roles.

        >>> detector, twin = Detector(ScoringConfig()), Detector(ScoringConfig())
        >>> twin.load_role_state(detector.role_state("spiffe://a/r"))
        'spiffe://a/r'
        """
        return seal(self._role(role), settings=self.settings_digest)

    def load_role_state(self, data: bytes) -> str:
        """Take over what :meth:`role_state` gave; the role's id (errors as
        :meth:`load_agent_state`)."""
        state = open_sealed(data, RoleState, settings=self.settings_digest)
        self._load_role(state)
        return state.id

    def population_state(self) -> bytes:
        """What was learned of the fleet (and the shared model), and which roles have a
        :meth:`role_state` beside it, as versioned data: a partition's detector writes it,
        its next reader takes it over."""
        return seal(self._population(), settings=self.settings_digest)

    def load_population_state(self, data: bytes) -> list[str]:
        """Take over what :meth:`population_state` gave; the roles whose
        :meth:`role_state` goes with it (errors as :meth:`load_agent_state`).

        >>> Detector(ScoringConfig()).load_population_state(
        ...     Detector(ScoringConfig()).population_state())
        []
        """
        population = open_sealed(data, Population, settings=self.settings_digest)
        self._load_population(population)
        return population.roles

    def state(self, forgotten: Mapping[str, bytes] | None = None) -> bytes:
        """Everything learned: the population and every role's and agent's state
        (``intentwatch learn`` writes it, ``worker --warm-from`` reads it); ``forgotten``:
        agent id -> :meth:`agent_state` of the agents no longer held (:meth:`forget_agent`),
        e.g. an engine's ``learned``.

        >>> detector = Detector(ScoringConfig())
        >>> twin = Detector(ScoringConfig())
        >>> twin.load_state(detector.state())
        >>> twin.restored_calls
        0
        """
        population = self._population()
        others = forgotten or {}
        return seal(Learned(
            population=population, roles=[self._role(role) for role in population.roles],
            agents=[
                self._agent(agent_id) if agent_id in self._agents
                else open_sealed(others[agent_id], AgentState, settings=self.settings_digest)
                for agent_id in sorted(self._agents | set(others))
            ],
        ), settings=self.settings_digest)

    def load_state(self, data: bytes) -> None:
        """Take over what :meth:`state` gave (errors as :meth:`load_agent_state`)."""
        learned = open_sealed(data, Learned, settings=self.settings_digest)
        self._load_population(learned.population)
        for role in learned.roles:
            self._load_role(role)
        for state in learned.agents:
            self._load_agent(state)

    def learned_agents(self) -> set[str]:
        """The agents something was learned of (or taken over)."""
        return set(self._agents)

    def take_learned_agents(self) -> set[str]:
        """The agents whose learned state changed since the last call (to write back)."""
        changed, self._changed = self._changed, set()
        return changed

    def learned_roles(self) -> set[str]:
        """The roles something was learned of (or taken over)."""
        scopes = self.established.scopes() | self.habits.scopes()
        return self.baseline.roles() | (scopes - self._agents)

    def take_learned_roles(self) -> set[str]:
        """The roles whose learned state changed since the last call (to write back)."""
        changed, self._changed_roles = self._changed_roles, set()
        return changed

    def _agent(self, agent_id: str) -> AgentState:
        return self._with_tasks(self.baseline.agent_state(agent_id))

    def _role(self, role: str) -> RoleState:
        return self._with_tasks(self.baseline.role_state(role))

    def _with_tasks(self, state: S) -> S:
        """``state`` with its scope's destinations and habits."""
        state.destinations = self.established.scope_state(state.id)
        state.habits = self.habits.scope_state(state.id)
        return state

    def _population(self) -> Population:
        return Population(
            baselines=self.baseline.population_state(), shared=self.shared.state(),
            calls=self.restored_calls + self.learned_calls, roles=sorted(self.learned_roles()),
        )

    def _load_population(self, population: Population) -> None:
        self.baseline.load_population_state(population.baselines)
        self.shared.load_state(population.shared)
        self.restored_calls, self.learned_calls = population.calls, 0

    def _load_role(self, state: RoleState) -> None:
        self.baseline.load_role_state(state)
        self._load_tasks(state)

    def _load_agent(self, state: AgentState) -> None:
        self.baseline.load_agent_state(state)
        self._load_tasks(state)
        self._agents.add(state.id)

    def _load_tasks(self, state: Scope) -> None:
        if state.destinations is not None:
            self.established.load_scope(state.id, state.destinations)
        if state.habits is not None:
            self.habits.load_scope(state.id, state.habits)

    def _learning_settings(self) -> dict[str, Any]:
        detectors = self.config.detectors
        names = ("baseline", "multivariate", "provenance")
        return {**{name: detectors.get(name, {}) for name in names}, "features": list(_FEATURES)}

    def _rebuild(
        self, agent_id: str, intent: str | None, calls: Sequence[tuple[ToolCall, ToolInfo]]
    ) -> list[ScoredCall]:
        """The task's calls observed again, in order (learned as they score now)."""
        context = self.baseline.task(agent_id, intent, self.fusion.max_task_samples)
        return [ScoredCall(context.observe(call, tool), {}, None) for call, tool in calls]

    # -- fusion -------------------------------------------------------------------------------

    def _approved(
        self, scores: Mapping[str, float], check: IntentCheck | None
    ) -> dict[str, float]:
        """The baselines' behaviour components, less what the intent approves: a new tool
        for an action it asks for, a new target it names, an unusual order of approved
        steps (to a target or domain it names). Volumes and counts are not approved by
        naming anything. (The ``unasked`` habit is an intent component.)"""
        approved = {name: value for name, value in scores.items() if name != "unasked"}
        if check is not None:
            asked = 1.0 - self.fusion.named_discount * check.credit
            keep = 1.0 - self.fusion.named_discount
            approved["tool_rarity"] *= asked
            if check.target_named or check.domain_named:
                approved["transition_rarity"] *= asked
            if check.target_named:
                for name in _TARGETED:
                    approved[name] *= keep
            if check.domain_named:
                for name in _DOMAIN:
                    approved[name] *= keep
        return approved

    def _intent_components(
        self, x: Observation, check: IntentCheck | None, unasked: float
    ) -> dict[str, float]:
        """How far the call leaves its intent (``unasked``: the habit-discounted unasked
        action, the baseline's score), and its harm potential."""
        risk = ACTION_RISK.get(x.action, ACTION_RISK["unknown"])
        # an unasked read of sensitive data deviates as far as touching that data is risky
        deviation_risk = max(risk, self.fusion.sensitive_data_risk * x.label_level)
        habitual = unasked
        if x.unasked and not self.habits.established(x.agent_id, x.role, x.tool):
            habitual = x.unasked  # a habit is discounted only once k clean tasks showed it
        harm = risk
        if x.action == "send" and x.label_level == 0.0 and not x.sensitive:
            # a send of public data from a task that has read nothing sensitive has no
            # sensitive data to leak: its harm potential is that of a write
            harm = ACTION_RISK["write"]
        return {
            "intent": deviation_risk * habitual,
            "unnamed_target": float(check is not None and (
                # a send elsewhere than to the destinations the intent names
                (x.action == "send" and bool(check.named_instead) and x.external)
                # a delete of other records, or other kinds of records, than the intent names
                or (x.action == "delete" and bool(check.named_instead or check.other_objects))
                # access handed (or a copy sent) to an outside party the intent does not name
                or bool(check.unnamed_parties)
            )),
            "privilege": float(check is not None and check.unapproved_privilege is not None),
            # an irreversible or access-changing action the intent does not ask for at all
            "unasked_harm": float(x.action in ("delete", "admin") and habitual >= 1.0),
            "action_risk": max(harm, self.fusion.sensitive_data_risk * x.label_level),
            "label_level": x.label_level,
            "external": float(x.external),
        }

    # -- explanation --------------------------------------------------------------------------

    def _top_reasons(
        self, contributions: dict[str, float], call_risk: float, score: float
    ) -> list[tuple[str, float]]:
        """The reasons' codes and weights (each component's share of the call's risk, and
        the task's risk above it), weightiest first, as many as a verdict carries."""
        minimum = self.fusion.min_reason_weight
        total = sum(contributions.values())
        weights = {
            name: call_risk * contribution / total for name, contribution in contributions.items()
        } if total > 0.0 else {}
        if score - call_risk >= minimum:
            weights["task_risk"] = score - call_risk
        top = sorted(weights.items(), key=lambda item: item[1], reverse=True)
        return [
            (name, round(weight, 4)) for name, weight in top[: self.fusion.max_reasons]
            if weight >= minimum
        ]

    def _explained(
        self,
        top: list[tuple[str, float]],
        x: Observation,
        check: IntentCheck | None,
        score: float,
        task: TaskScoring,
    ) -> list[Reason]:
        return [
            Reason(
                code=name, weight=weight,
                detail=(self._explain_task(task, score) if name == "task_risk"
                        else self._explain(name, x, check, task)),
            )
            for name, weight in top
        ]

    def _explain(
        self, name: str, x: Observation, check: IntentCheck | None, task: TaskScoring
    ) -> str:
        if name == "hst":
            return (
                "unusual combination of this call's features for the fleet's learned behaviour "
                "(shared half-space-trees model)"
            )
        if name == "novel_source":
            return (
                f"{x.sink} ({x.tool}) after a sensitive read this agent rarely makes "
                f"({task.source}; rarity {task.source_novelty:.2f})"
            )
        if name == "flow" and task.direct_source is not None:
            source, novelty = task.direct_source
            return (
                f"code execution ({x.tool}) straight after a sensitive read this agent rarely "
                f"makes ({source}; rarity {novelty:.2f})"
            )
        if name == "unnamed_target":
            assert check is not None
            if check.unnamed_parties and (x.action == "admin" or not check.named_instead):
                parties = ", ".join(p.removeprefix("mailto:") for p in check.unnamed_parties[:3])
                handed = "hands access to" if x.action == "admin" else "also sends to"
                return (
                    f"this {x.tool} {handed} {parties}, an outside party the intent does not name"
                )
            if x.action == "delete" and not check.named_instead:
                kinds = "/".join(sorted(check.other_objects))
                return (
                    f"{x.tool} deletes {kinds} records ({x.target}); the intent asks to delete "
                    f"something else: {_quote(task.intent or '')}"
                )
            named = ", ".join(sorted(check.named_instead)[:3])
            went = "deletes" if x.action == "delete" else "goes to"
            return f"the intent names {named}; this {x.tool} {went} {x.target} instead"
        if name == "destination":
            return self._explain_destination(x, task)
        if name == "cold_destination":
            taught = self.established.history(x.role)
            return (
                f"{self._explain_destination(x, task)}; its role has taught {taught} of the "
                f"{self.provenance.min_history_tasks} clean tasks after which destinations "
                f"count as evidence, so this alerts and does not revoke"
            )
        if name == "privilege":
            what = "hands out" if x.action == "admin" else "calls an interface of"
            return (
                f"{x.tool} {what} {x.privilege}-level privilege ({x.target}); the intent does "
                f"not ask for {x.privilege} rights"
            )
        if name == "unasked_harm":
            what = "deletes" if x.action == "delete" else "changes access"
            return (
                f"{x.tool} {what} ({x.target or 'no target'}), which the intent does not ask "
                f"for at all and this agent has not done unasked before: "
                f"{_quote(task.intent or '')}"
            )
        if name == "intent":
            assert check is not None and task.intent is not None
            what = "/".join(sorted(check.tool_concepts)) or x.action
            asked = ", ".join(sorted(check.asked)) or "nothing recognisable"
            if check.other_objects:
                kinds = "/".join(sorted(check.other_objects))
                detail = (
                    f"{x.tool} deletes {kinds} records; the intent asks to delete something "
                    f"else: {_quote(task.intent)}"
                )
            else:
                detail = (
                    f"{x.action} action {x.tool} ({what}) is not what the intent asks for "
                    f"({asked}): {_quote(task.intent)}"
                )
            habit = self.baseline.explain("unasked", x)
            return f"{detail}; {habit}" if habit else detail
        detail = self.baseline.explain(name, x)
        named_here = check is None or (
            check.target_named if name == "target_rarity" else check.domain_named
        )
        if name in ("target_rarity", "internal_site_rarity", *_DOMAIN) and not named_here:
            detail += "; the intent does not name it"
        return detail

    def _explain_destination(self, x: Observation, task: TaskScoring) -> str:
        k = self.provenance.k
        parts = []
        for resolution in task.unresolved[:3]:
            used = resolution.tasks
            history = (
                "never used by this agent or its role" if used < 0.5 else
                f"used in only {used:.0f} clean task{'s' if used >= 1.5 else ''} of this "
                f"agent or its role ({k} establish it)"
            )
            parts.append(f"{resolution.destination.kind} {resolution.destination.value} "
                         f"({history})")
        more = len(task.unresolved) - 3
        tail = f" and {more} more" if more > 0 else ""
        return (
            f"{x.tool} ({x.action}) moves data to {', '.join(parts)}{tail}; the intent does "
            "not name it, no explicit grant target covers it, it is outside the organisation"
        )

    @staticmethod
    def _explain_task(task: TaskScoring, score: float) -> str:
        risky = sorted(task.risk.risks.items(), key=lambda item: item[1], reverse=True)
        shown = "; ".join(
            f"{tool}{' → ' + target if target else ''} ({risk:.2f})"
            for (tool, target), risk in risky[:3] if risk > 0
        )
        count = sum(1 for _, risk in risky if risk > 0)
        return (
            f"{count} unusual behaviours in this task add up to risk {score:.2f}: {shown}"
        )


_ENCODER = msgspec.msgpack.Encoder()

_RECIPIENTS = frozenset({"email", "account", "channel", "handle"})
"""Destinations a request may leave to data (whom to reply to, which invoice to pay); a site
that data is posted to is not one of them."""


def counted_evidence(components: Mapping[str, float]) -> tuple[str, ...]:
    """The :data:`EVIDENCE` components that count for a call, by its components: not the
    unasked action where ``unasked_evidence`` is 0, not a destination that can only come
    from data (``data_destination``).

    >>> counted_evidence({"unasked_evidence": 0.0, "data_destination": 1.0})
    ('unnamed_target', 'privilege')
    """
    return tuple(
        name for name in EVIDENCE
        if not (name in ("intent", "unasked_harm")
                and not components.get("unasked_evidence", 1.0))
        and not (name == "destination" and components.get("data_destination", 0.0))
    )


def _from_data(
    check: IntentCheck | None, intent: str | None, unresolved: Sequence[Resolution]
) -> bool:
    """Whether the unvouched destinations of a call its intent asks for can only come from
    data: the intent names no destination of their kinds (``reply to the sender``, ``pay
    the invoices in the folder``), so it could not have named these; sites excepted."""
    if check is None or intent is None or check.credit < 1.0 or not unresolved:
        return False
    named = parse_intent(intent).destination_kinds
    return all(
        r.destination.kind in _RECIPIENTS and r.destination.kind not in named for r in unresolved
    )


def hold(score: float, alert: float, revoke: float) -> float:
    """A score held at alert: ``[alert, 1]`` mapped under ``revoke``, order kept.

    >>> hold(1.0, 0.5, 0.8) < 0.8 <= 0.9, hold(0.5, 0.5, 0.8)
    (True, 0.5)
    """
    return alert + (revoke - alert) * 0.999 * (score - alert) / (1.0 - alert)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def _narrow(grant: Grant | None) -> bool:
    """A grant that names its tools and targets (no ``*``, no scheme-only pattern)."""
    return grant is not None and "*" not in grant.tools and bool(grant.targets) and (
        len(explicit_patterns(grant.targets)) == len(grant.targets)
    )


def _quote(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def history_summary(detectors: Sequence[Detector], roles: int = 20) -> dict[str, Any]:
    """What ``detectors`` (e.g. each of a worker's partitions') learned, summed: calls,
    agents, and the ``roles`` roles with most calls (their calls and clean tasks);
    ``cold_roles`` counts the roles whose destinations are not checked yet (fewer than
    ``min_history_tasks`` tasks).

    >>> history_summary([Detector(ScoringConfig())] * 2)["fleet_calls"]
    0.0
    """
    agents, fleet = 0, 0.0
    by_role: dict[str, float] = {}
    tasks: dict[str, int] = {}
    for detector in detectors:
        learned, of_roles, of_fleet = detector.baseline.census()
        agents, fleet = agents + learned, fleet + of_fleet
        for role, calls in of_roles.items():
            by_role[role] = by_role.get(role, 0.0) + calls
            tasks[role] = tasks.get(role, 0) + detector.established.history(role)
    need = detectors[0].provenance.min_history_tasks if detectors else 0
    top = sorted(by_role, key=lambda role: (-by_role[role], role))[:roles]
    return {
        "fleet_calls": round(fleet, 1),
        "agents": agents,
        "roles": len(by_role),
        "cold_roles": sum(tasks[role] < need for role in by_role),
        "min_history_tasks": need,
        "by_role": {role: {"calls": round(by_role[role], 1), "tasks": tasks[role]}
                    for role in top},
    }


def _digest(settings: Mapping[str, Any]) -> str:
    """A short digest of ``settings`` (JSON data).

    >>> _digest({"baseline": {}}) == _digest({"baseline": {}}) != _digest({"baseline": {"a": 1}})
    True
    """
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
