"""intentwatch: runtime enforcement for AI agents' access.

The client SDK, for agent code and for credential brokers and tool gateways:

- :class:`TelemetryPublisher` publishes tool calls, grants and task events, and
  instruments tool functions (``@publisher.instrument(...)``, ``publisher.tool_call(...)``);
- :class:`RevocationSubscriber` delivers verified, deduplicated revocations.

Names are imported on first use, so ``import intentwatch`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intentwatch.instrument import TaskScope, ToolCallRecord
    from intentwatch.publisher import PublishError, TelemetryPublisher
    from intentwatch.subscriber import RejectedRevocation, RevocationSubscriber
    from models.contracts import ContractError, Revocation

__all__ = [
    "ContractError",
    "PublishError",
    "RejectedRevocation",
    "Revocation",
    "RevocationSubscriber",
    "TaskScope",
    "TelemetryPublisher",
    "ToolCallRecord",
]

_HOMES = {
    "ContractError": "models.contracts",
    "PublishError": "intentwatch.publisher",
    "RejectedRevocation": "intentwatch.subscriber",
    "Revocation": "models.contracts",
    "RevocationSubscriber": "intentwatch.subscriber",
    "TaskScope": "intentwatch.instrument",
    "TelemetryPublisher": "intentwatch.publisher",
    "ToolCallRecord": "intentwatch.instrument",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'intentwatch' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
