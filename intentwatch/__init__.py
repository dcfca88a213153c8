"""intentwatch: runtime enforcement for AI agents' access.

The client SDK, for agent code and for credential brokers and tool gateways:

- :class:`TelemetryPublisher` publishes tool calls, grants and task events, and
  instruments tool functions (``@publisher.instrument(...)``, ``publisher.tool_call(...)``);
- :class:`RevocationSubscriber` delivers verified, deduplicated revocations;
- :class:`IntentwatchError` (and its :class:`PublishError`) is what both raise when Kafka
  cannot do what they need, with a ``hint`` saying what to do.

Names are imported on first use, so ``import intentwatch`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intentwatch.contracts import ContractError, Revocation
    from intentwatch.sdk.errors import IntentwatchError, PublishError
    from intentwatch.sdk.instrument import TaskScope, ToolCallRecord
    from intentwatch.sdk.publisher import TelemetryPublisher
    from intentwatch.sdk.subscriber import RejectedRevocation, RevocationSubscriber

__all__ = [
    "ContractError",
    "IntentwatchError",
    "PublishError",
    "RejectedRevocation",
    "Revocation",
    "RevocationSubscriber",
    "TaskScope",
    "TelemetryPublisher",
    "ToolCallRecord",
]

_HOMES = {
    "ContractError": "intentwatch.contracts",
    "IntentwatchError": "intentwatch.sdk.errors",
    "PublishError": "intentwatch.sdk.errors",
    "RejectedRevocation": "intentwatch.sdk.subscriber",
    "Revocation": "intentwatch.contracts",
    "RevocationSubscriber": "intentwatch.sdk.subscriber",
    "TaskScope": "intentwatch.sdk.instrument",
    "TelemetryPublisher": "intentwatch.sdk.publisher",
    "ToolCallRecord": "intentwatch.sdk.instrument",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'intentwatch' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
