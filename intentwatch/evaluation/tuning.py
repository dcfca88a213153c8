"""Fitting the fusion bias and weights to labelled verdicts, without replaying.

A replay records every call's components (:attr:`Verdict.components`). For
other weights, the detector's score of each call can be recomputed from
them in one vectorised pass (call risk, then the task's noisy-OR over its
distinct behaviours), so a derivative-free search can try thousands of
weight vectors. The objective is what the targets ask for: the share of
attack tasks revoked by their first harmful call, minus a penalty on benign
tasks revoked, plus a smooth per-call ROC AUC (revocations softened with a
steep sigmoid so the search can move).

Learning follows the decisions, so a fit is approximate: confirm it by
replaying (``python -m bench.quality``). Used by ``notebooks/tuning.ipynb``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from intentwatch.contracts import Verdict
from intentwatch.evaluation.metrics import CallTruth
from intentwatch.models.detection import (
    BEHAVIOUR,
    EVIDENCE,
    INTENT,
    FusionConfig,
    counted_evidence,
    hold,
)

__all__ = ["FIT_COMPONENTS", "Fit", "TuningData"]

FIT_COMPONENTS = (*BEHAVIOUR, *INTENT)
"""The components whose weights are fitted, in parameter order (after the bias)."""
_DETECTOR_CODES = frozenset({*FIT_COMPONENTS, "task_risk", "cold_destination"})


@dataclass(frozen=True)
class Fit:
    """A fitted bias and weights, with the figures they reach on the data."""

    bias: float
    weights: dict[str, float]
    caught_in_time: float
    benign_revoked: float
    roc_auc: float


class TuningData:
    """Verdict components and ground truth, arranged for fast re-scoring.

    ``verdicts`` are the engine's, in stream order; calls judged after their
    task was revoked are left out (their components were never needed).
    ``targets`` gives each call's target by event id (a behaviour is a tool
    on a target within a task).
    """

    def __init__(
        self,
        verdicts: Iterable[Verdict],
        truths: Mapping[str, CallTruth],
        targets: Mapping[str, str | None],
        fusion: FusionConfig,
        *,
        auc_pairs: int = 200_000,
        seed: int = 0,
        alert_threshold: float = 0.5,
        revoke_threshold: float = 0.8,
    ) -> None:
        # An attack task must be revoked at or before its first harmful call (or, without
        # one, its first attack call): which calls came in time is decided on the whole
        # stream, before the calls judged after a revocation are left out.
        harmful_tasks = {(t.agent_id, t.task_id) for t in truths.values() if t.harmful}
        passed: set[tuple[str, str]] = set()
        rows, in_time = [], []
        for v in verdicts:
            truth = truths.get(v.event_id)
            if truth is None:
                continue
            key = (truth.agent_id, truth.task_id)
            if not any(r.code == "task_revoked" for r in v.reasons):
                rows.append(v)
                in_time.append(key not in passed)
            if truth.harmful or (truth.attack and key not in harmful_tasks):
                passed.add(key)
        self.fusion = fusion
        self.thresholds = (alert_threshold, revoke_threshold)
        self.delegated = np.array([v.components.get("delegated", 0.0) > 0 for v in rows])
        self.data_destination = np.array(
            [v.components.get("data_destination", 0.0) > 0 for v in rows])
        self.cold_destination = np.array(
            [v.components.get("cold_destination", 0.0) > 0 for v in rows])
        self._evidence = np.array([FIT_COMPONENTS.index(name) for name in EVIDENCE])
        self._counted = np.array(
            [[name in counted_evidence(v.components) for name in EVIDENCE] for v in rows],
            dtype=float,
        ).reshape(len(rows), len(EVIDENCE))
        self.narrow = np.array([v.components.get("narrow_grant", 0.0) > 0 for v in rows])
        self.conformance = np.array(
            [any(r.code not in _DETECTOR_CODES for r in v.reasons) for v in rows]
        )
        floor = fusion.action_floor
        scale = np.array([floor + (1 - floor) * v.components["action_risk"] for v in rows])
        self.X = np.array([[v.components.get(n, 0.0) for n in FIT_COMPONENTS] for v in rows])
        self.X[:, : len(BEHAVIOUR)] *= scale[:, None]
        called = [truths[v.event_id] for v in rows]
        task_keys = [f"{t.agent_id}|{t.task_id}" for t in called]
        self.task = np.unique(task_keys, return_inverse=True)[1]
        behaviour = np.unique(
            [f"{k}|{v.tool}|{targets.get(v.event_id)}" for k, v in zip(task_keys, rows,
                                                                       strict=True)],
            return_inverse=True,
        )[1]
        self.attack = np.array([t.attack for t in called])
        n, tasks = len(rows), int(self.task.max()) + 1 if rows else 0
        self.attack_task = np.bincount(self.task, weights=self.attack, minlength=tasks) > 0
        self.in_time = np.array(in_time, dtype=bool)
        self._by_behaviour = np.lexsort((np.arange(n), behaviour))
        self._behaviour = behaviour[self._by_behaviour]
        self._behaviour_start = np.r_[True, self._behaviour[1:] != self._behaviour[:-1]]
        self._by_task = np.lexsort((np.arange(n), self.task))
        task_sorted = self.task[self._by_task]
        self._task_first = np.maximum.accumulate(
            np.where(np.r_[True, task_sorted[1:] != task_sorted[:-1]], np.arange(n), 0)
        )
        rng = np.random.default_rng(seed)
        positives = np.flatnonzero(self.attack & self.in_time)
        negatives = np.flatnonzero(~self.attack)
        self._pairs = (rng.choice(positives, auc_pairs), rng.choice(negatives, auc_pairs))

    def __len__(self) -> int:
        return len(self.X)

    def scores(self, bias: float, weights: np.ndarray) -> np.ndarray:
        """The detector's score of every call under ``bias`` and ``weights``."""
        risk = 1.0 / (1.0 + np.exp(-(bias + self.X @ np.maximum(weights, 0.0))))
        floor = self.fusion.risk_floor
        excess = np.clip((risk - floor) / (1.0 - floor), 0.0, 0.999)
        # each behaviour counts at its highest risk so far ...
        offset = 2.0 * self._behaviour
        best = np.maximum.accumulate(excess[self._by_behaviour] + offset) - offset
        before = np.r_[0.0, best[:-1]]
        before[self._behaviour_start] = 0.0
        step = np.empty_like(excess)
        step[self._by_behaviour] = np.log1p(-best) - np.log1p(-before)
        # ... and the task's risk is the noisy-OR of its behaviours so far
        ordered = step[self._by_task]
        total = np.cumsum(ordered)
        start = (total - ordered)[self._task_first]
        task_risk = np.empty_like(excess)
        task_risk[self._by_task] = 1.0 - np.exp(total - start)
        score = np.maximum(risk, task_risk)
        # the rules (models.detection.RULES): intent or destination evidence in the task so
        # far may revoke (unless the request delegates); a destination from data and novelty
        # alone do not, novelty past its level excepted
        counted = self.X[:, self._evidence] * self._counted
        evidence = 1.0 / (1.0 + np.exp(-(bias + counted @ np.maximum(
            weights[self._evidence], 0.0))))
        offset = 2.0 * self.task[self._by_task]
        ordered = np.maximum.accumulate(evidence[self._by_task] + offset) - offset
        evidence[self._by_task] = ordered
        alert, revoke = self.thresholds
        delegated_held = self.delegated & (self.fusion.delegated == "alert")
        held = (score >= revoke) & np.where(
            evidence >= self.fusion.evidence_level, delegated_held,
            self.data_destination | (score < self.fusion.novelty_revoke_threshold) | self.narrow,
        )
        score = np.where(held, hold(score, alert, revoke), score)
        # a destination nothing vouches for in a role too new to establish any alerts
        score = np.where(self.cold_destination & (score < alert), alert, score)
        return np.where(self.conformance, 1.0, score)

    def figures(self, scores: np.ndarray, threshold: float) -> tuple[float, float, float]:
        """(attack tasks caught in time, benign tasks revoked, per-call ROC AUC)."""
        from sklearn.metrics import roc_auc_score

        revoke = scores >= threshold
        tasks = len(self.attack_task)
        caught = np.bincount(self.task[revoke & self.in_time], minlength=tasks) > 0
        revoked = np.bincount(self.task[revoke], minlength=tasks) > 0
        first = np.full(tasks, len(scores))
        np.minimum.at(first, self.task[revoke], np.flatnonzero(revoke))
        judged = np.arange(len(scores)) <= first[self.task]
        auc = float(roc_auc_score(self.attack[judged], scores[judged]))
        return (float(caught[self.attack_task].mean()),
                float(revoked[~self.attack_task].mean()), auc)

    def objective(self, params: np.ndarray, threshold: float, penalty: float,
                  auc_weight: float, steepness: float = 25.0) -> float:
        scores = self.scores(params[0], params[1:])
        soft = 1.0 / (1.0 + np.exp(-steepness * (scores - threshold)))
        log_spared = np.log1p(-np.clip(soft, 0.0, 1.0 - 1e-6))
        tasks = len(self.attack_task)
        caught = 1.0 - np.exp(np.bincount(self.task, np.where(self.in_time, log_spared, 0.0),
                                          minlength=tasks))
        revoked = 1.0 - np.exp(np.bincount(self.task, log_spared, minlength=tasks))
        positive, negative = self._pairs
        auc = (1.0 / (1.0 + np.exp(-30.0 * (scores[positive] - scores[negative])))).mean()
        return (-caught[self.attack_task].mean() + penalty * revoked[~self.attack_task].mean()
                - auc_weight * auc)

    def fit(
        self,
        bias: float,
        weights: Mapping[str, float],
        threshold: float,
        *,
        penalty: float = 4.0,
        auc_weight: float = 2.0,
        rounds: int = 2,
        bounds: Sequence[tuple[float, float]] = ((-6.0, -0.5), (0.2, 8.0)),
    ) -> Fit:
        """Search bias and weights (Powell, ``rounds`` sweeps) from a starting point.

        Weights stay within ``bounds[1]``, so every component can only raise the
        score and none is switched off by one fleet's quirks.
        """
        start = np.array([bias, *(weights[n] for n in FIT_COMPONENTS)])
        limits = [bounds[0]] + [bounds[1]] * len(FIT_COMPONENTS)
        found = start
        for _ in range(rounds):
            found = minimize(
                self.objective, found, args=(threshold, penalty, auc_weight),
                method="Powell", bounds=limits, options={"maxiter": 1, "xtol": 1e-2},
            ).x
        caught, benign, auc = self.figures(self.scores(found[0], found[1:]), threshold)
        fitted = {n: round(float(w), 2) for n, w in zip(FIT_COMPONENTS, found[1:], strict=True)}
        return Fit(round(float(found[0]), 2), fitted, caught, benign, auc)
