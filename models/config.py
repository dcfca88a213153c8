"""Versioned scoring configuration: thresholds, timings and detector weights.

The pipeline loads it, notebooks tune and write it, and every verdict carries
its ``version`` so a decision can be traced to the settings that made it.

>>> config = ScoringConfig()
>>> config.revoke_threshold > config.alert_threshold
True
>>> ScoringConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_PATH", "ScoringConfig", "load_config", "settings_from"]

Settings = TypeVar("Settings", bound="DataclassInstance")


def settings_from(cls: type[Settings], data: Mapping[str, Any], what: str) -> Settings:
    """Build the settings dataclass ``cls`` from ``data``, refusing unknown keys by name.

    Every section of the config is read by this one function, so a file, a notebook's
    ``with_changes`` and a test are checked alike. JSON has no tuples: a list is taken
    as a tuple where the field's default is one.

    >>> @dataclass(frozen=True)
    ... class Window:
    ...     size: int = 10
    ...     span: tuple[float, float] = (0.0, 1.0)
    >>> settings_from(Window, {"span": [0.5, 2.0]}, "window")
    Window(size=10, span=(0.5, 2.0))
    >>> settings_from(Window, {"colour": "red"}, "window")
    Traceback (most recent call last):
    ...
    ValueError: unknown window settings: colour
    """
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} settings: {', '.join(unknown)}")
    values = {
        name: tuple(value)
        if isinstance(value, list) and isinstance(known[name].default, tuple) else value
        for name, value in data.items()
    }
    return cls(**values)

CONFIG_ENV = "INTENTWATCH_SCORING_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).with_name("scoring_config.json")


@dataclass(frozen=True)
class ScoringConfig:
    """Everything that turns signals into decisions.

    ``weights`` and ``detectors`` belong to :mod:`intentwatch.models.detection`; the engine
    itself reads only the thresholds and timings.
    """

    version: str = "dev"
    alert_threshold: float = 0.5
    revoke_threshold: float = 0.8
    grace_seconds: float = 2.0
    """How long a call whose grant has not arrived yet waits before it is judged."""
    quiet_period_seconds: float = 1800.0
    """A task with no event for this long is over: its calls are learned, if not revoked."""
    clock_skew_seconds: float = 30.0
    """How far an agent's clock may run behind the grant issuer's before a call counts as
    made before its grant was issued (expiry gets no such leeway)."""
    max_ahead_seconds: float = 300.0
    """How far past the wall clock, where it enters the worker, an event may be stamped;
    later ones are rejected (``timestamp_in_future``), so no record can hold a task's
    judgement or end."""
    weights: dict[str, float] = field(default_factory=dict)
    detectors: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    """Caps on per-agent state (:class:`~intentwatch.models.limits.StateLimits`)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alert_threshold <= self.revoke_threshold <= 1.0:
            raise ValueError("thresholds must satisfy 0 < alert_threshold <= revoke_threshold <= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoringConfig:
        """Build from a plain mapping, rejecting unknown keys with a clear message."""
        return settings_from(cls, data, "scoring config")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write as pretty JSON (what notebooks do after tuning)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def with_changes(self, **changes: Any) -> ScoringConfig:
        """A copy with ``changes``, checked as :meth:`from_dict` checks a file.

        >>> ScoringConfig().with_changes(revoke_threshold=0.4)
        Traceback (most recent call last):
        ...
        ValueError: thresholds must satisfy 0 < alert_threshold <= revoke_threshold <= 1
        """
        return settings_from(type(self), {**asdict(self), **changes}, "scoring config")


def load_config(path: str | Path | None = None) -> ScoringConfig:
    """Load ``path``, else ``$INTENTWATCH_SCORING_CONFIG``, else the shipped default."""
    chosen = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    return ScoringConfig.from_dict(json.loads(chosen.read_text()))
