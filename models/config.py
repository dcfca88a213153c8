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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_PATH", "ScoringConfig", "load_config"]

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
    weights: dict[str, float] = field(default_factory=dict)
    detectors: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringConfig:
        """Build from a plain mapping, rejecting unknown keys with a clear message."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown scoring config keys: {', '.join(unknown)}")
        config = cls(**data)
        if not 0.0 < config.alert_threshold <= config.revoke_threshold <= 1.0:
            raise ValueError("thresholds must satisfy 0 < alert_threshold <= revoke_threshold <= 1")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write as pretty JSON (what notebooks do after tuning)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def with_changes(self, **changes: Any) -> ScoringConfig:
        return replace(self, **changes)


def load_config(path: str | Path | None = None) -> ScoringConfig:
    """Load ``path``, else ``$INTENTWATCH_SCORING_CONFIG``, else the shipped default."""
    chosen = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    return ScoringConfig.from_dict(json.loads(chosen.read_text()))
