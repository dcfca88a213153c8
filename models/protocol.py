"""The shape every per-call detector has, as river's estimators do.

``score_one(x)`` judges one observation against what was learned, without
changing anything; ``learn_one(x)`` learns it (only calls of tasks that ended
without revocation reach it); ``explain(x)`` says in a sentence why the score
is what it is. ``tests/test_detector_contract.py`` checks every detector of
the baseline (and the whole :class:`~intentwatch.models.detection.Detector`)
against it: determinism, ``score_one`` without side effects, state that
survives a round trip, bounded memory under a stream of distinct values.

>>> from intentwatch.models.baseline import Baseline
>>> all(isinstance(d, OnlineDetector) for d in Baseline().detectors.values())
True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["OnlineDetector"]


@runtime_checkable
class OnlineDetector(Protocol):
    """A detector that scores, learns and explains one observation at a time."""

    def score_one(self, x: Any) -> float:
        """How unusual ``x`` is, in [0, 1]; changes nothing."""
        ...

    def learn_one(self, x: Any) -> None:
        """Learn ``x`` as normal."""
        ...

    def explain(self, x: Any) -> str:
        """Why ``x`` scores what it does, in one sentence."""
        ...
