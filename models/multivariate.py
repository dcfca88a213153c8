"""One shared multivariate anomaly model over agent-normalised features.

The per-agent baselines turn every call into features in [0, 1] that mean
the same for every agent (how rare for *this* agent, how far above *its*
usual volume). One river ``HalfSpaceTrees`` learns the joint shape of those
features across the fleet, so it spots unusual *combinations* (a common tool,
an unusual transition and an unusual volume at once) at the cost of one model,
not one per agent.

Half-space trees score 0 during their first window and their raw score has no
fixed scale, so the model is calibrated: a call's score is the share of
recently learned calls with a lower raw score, stretched so only the top
``1 - floor`` share of normal calls gets any score at all.

>>> model = SharedAnomalyModel(MultivariateConfig(window_size=50, seed=1), ("a", "b"))
>>> model.ready
False
>>> for i in range(200):
...     x = model.features_of({"a": (i % 10) / 100, "b": 0.05})
...     model.learn_one(x, model.raw_score_one(x))
>>> model.ready
True
>>> model.score_one({"a": 0.03, "b": 0.05}) < model.score_one({"a": 0.95, "b": 0.9})
True
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from river.anomaly import HalfSpaceTrees

from intentwatch.models.config import settings_from
from intentwatch.models.learned import LearnedStateError, Shared

__all__ = ["MultivariateConfig", "SharedAnomalyModel"]


@dataclass(frozen=True)
class MultivariateConfig:
    """Settings of the shared model (``detectors.multivariate`` in the config)."""

    n_trees: int = 10
    height: int = 8
    window_size: int = 1000
    seed: int = 42
    calibration_size: int = 4000
    """How many recent raw scores of learned calls the calibration ranks against."""
    floor: float = 0.9
    """Calibrated share under which a call scores 0 (the bulk of normal calls)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MultivariateConfig:
        return settings_from(cls, data, "multivariate")


class SharedAnomalyModel:
    """HalfSpaceTrees over a fixed feature set, with an empirical calibration.

    ``features`` fixes the feature names: every call is given all of them, in
    [0, 1] (:meth:`features_of` clips), because the trees fix their features
    on the first call they learn.
    """

    def __init__(self, config: MultivariateConfig, features: Sequence[str]) -> None:
        self.config = config
        self.features = tuple(features)
        self._trees = HalfSpaceTrees(
            n_trees=config.n_trees, height=config.height,
            window_size=config.window_size, seed=config.seed,
        )
        self._learned = 0
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []

    @property
    def ready(self) -> bool:
        """Whether the trees have a reference window and the calibration has scores."""
        return self._learned >= 2 * self.config.window_size

    def features_of(self, values: Mapping[str, float]) -> dict[str, float]:
        """The model's input from any mapping that has its features: fixed keys, in [0, 1]."""
        return {name: min(1.0, max(0.0, values[name])) for name in self.features}

    def raw_score_one(self, x: dict[str, float]) -> float | None:
        """The trees' own score (higher is more unusual); None during their first window."""
        if self._learned < self.config.window_size:
            return None
        score: float = self._trees.score_one(x)  # type: ignore[no-untyped-call]
        return score

    def calibrate(self, raw: float | None) -> float:
        """Share of recently learned calls scoring lower, stretched above ``floor``."""
        if raw is None or not self.ready or not self._sorted:
            return 0.0
        rank = bisect_left(self._sorted, raw) / len(self._sorted)
        floor = self.config.floor
        return max(0.0, (rank - floor) / (1.0 - floor))

    def score_one(self, x: dict[str, float]) -> float:
        return self.calibrate(self.raw_score_one(x))

    def learn_one(self, x: dict[str, float], raw: float | None) -> None:
        """Learn one normal call (from :meth:`features_of`); ``raw`` is its raw score then."""
        self._trees.learn_one(x)  # type: ignore[no-untyped-call]
        self._learned += 1
        if raw is None:
            return
        self._recent.append(raw)
        insort(self._sorted, raw)
        if len(self._recent) > self.config.calibration_size:
            old = self._recent.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def state(self) -> Shared:
        """What the model learned, as data: the trees' masses (their shape follows from
        the seed and the features), the window position and the calibration window."""
        trees = self._trees
        return Shared(
            self._learned, list(self._recent), trees.counter, trees._first_window,
            [[mass for node in nodes for mass in (node.l_mass, node.r_mass)]
             for nodes in trees._tree_nodes],
        )

    def load_state(self, state: Shared) -> None:
        """Take over what :meth:`state` gave (a model of the same config and features)."""
        trees = HalfSpaceTrees(
            n_trees=self.config.n_trees, height=self.config.height,
            window_size=self.config.window_size, seed=self.config.seed,
        )
        if state.masses:  # grow the same trees (the seed decides), then set their masses
            trees.learn_one(dict.fromkeys(self.features, 0.0))  # type: ignore[no-untyped-call]
            if [2 * len(nodes) for nodes in trees._tree_nodes] != [len(m) for m in state.masses]:
                raise LearnedStateError("learned shared-model trees of another shape")
            for nodes, masses in zip(trees._tree_nodes, state.masses, strict=True):
                for node, left, right in zip(nodes, masses[::2], masses[1::2], strict=True):
                    node.l_mass, node.r_mass = left, right
        trees.counter, trees._first_window = state.counter, state.first_window
        self._trees = trees
        self._learned = state.learned
        self._recent = deque(state.recent)
        self._sorted = sorted(self._recent)
