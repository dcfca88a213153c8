"""The reference credential broker and tool gateway: how to close the loop with intentwatch.

:class:`CredentialBroker` issues per-task tokens, publishes signed grants and
obeys revocations; :class:`ToolGateway` checks every call's token with the
broker before running the tool, and publishes the call. ``intentwatch demo``
runs them against a live worker; ``docs/integration.md`` walks through them.
"""

from intentwatch.reference.broker import (
    CredentialBroker,
    CredentialCheck,
    RevokedCredential,
    TaskCredential,
)
from intentwatch.reference.gateway import AccessDenied, GatewayCall, ToolGateway

__all__ = [
    "AccessDenied",
    "CredentialBroker",
    "CredentialCheck",
    "GatewayCall",
    "RevokedCredential",
    "TaskCredential",
    "ToolGateway",
]
