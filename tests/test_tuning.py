"""Fitting weights: re-scoring reproduces the engine, and the figures match evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from intentwatch.evaluation.metrics import evaluate, truths_of
from intentwatch.evaluation.tuning import FIT_COMPONENTS, TuningData
from intentwatch.models.config import load_config
from intentwatch.models.detection import Detector
from intentwatch.models.engine import Engine
from intentwatch.models.replay import replay
from intentwatch.simulation.fleet import FleetSpec, generate


@pytest.fixture(scope="module")
def replayed():
    config = load_config()
    records = generate(FleetSpec(seed=3, agents_per_role=1, history_days=3.0, attack_days=2.0))
    verdicts = [v for outcome in replay(records, Engine(config)) for v in outcome.verdicts]
    targets = {r["event_id"]: r.get("target") for r in records if r["kind"] == "toolcall"}
    return config, verdicts, truths_of(records), targets


def test_rescoring_reproduces_the_engine_and_its_figures(replayed) -> None:
    config, verdicts, truths, targets = replayed
    detector = Detector(config)
    data = TuningData(verdicts, truths, targets, detector.fusion)
    weights = np.array([detector.weights[n] for n in FIT_COMPONENTS])
    scores = data.scores(detector.fusion.bias, weights)
    kept = [v for v in verdicts
            if v.event_id in truths and not any(r.code == "task_revoked" for r in v.reasons)]
    assert len(kept) == len(data)
    assert np.allclose(scores, [v.score for v in kept], atol=1e-9)
    report = evaluate(verdicts, truths)
    assert data.figures(scores, config.revoke_threshold) == pytest.approx(
        (report.caught_in_time, report.benign_revoked, report.roc_auc))


def test_fit_stays_in_bounds_and_does_not_get_worse(replayed) -> None:
    config, verdicts, truths, targets = replayed
    detector = Detector(config)
    data = TuningData(verdicts, truths, targets, detector.fusion, auc_pairs=20_000)
    start = np.array([detector.fusion.bias, *(detector.weights[n] for n in FIT_COMPONENTS)])
    before = data.objective(start, config.revoke_threshold, 4.0, 2.0)
    fit = data.fit(detector.fusion.bias, detector.weights, config.revoke_threshold, rounds=1)
    after = data.objective(np.array([fit.bias, *fit.weights.values()]),
                           config.revoke_threshold, 4.0, 2.0)
    assert after <= before + 1e-3
    assert set(fit.weights) == set(FIT_COMPONENTS)
    assert all(0.2 <= w <= 8.0 for w in fit.weights.values()) and -6.0 <= fit.bias <= -0.5
