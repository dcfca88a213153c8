"""A reference tool gateway: the choke point between agents and their tools.

Every tool call goes through :meth:`ToolGateway.call` with the agent's task
token. The gateway asks the :class:`~intentwatch.reference.broker.CredentialBroker`
whether the token is still good *before* running the tool: a revoked, expired
or unknown token raises :class:`AccessDenied` and the tool does not run. Each
call, allowed or denied, is published as tool-call telemetry (outcome ``ok``,
``error`` or ``denied``), which is what intentwatch judges, and handed with its
timing to the ``on_call`` hook, if any.

Example::

    gateway = ToolGateway(broker, publisher)

    @gateway.tool("crm.lookup_customer", action="read", target_arg="customer_id",
                  data_labels=["internal", "pii"])
    def lookup_customer(customer_id: str) -> dict:
        return crm.get(customer_id)

    gateway.call(credential.token, "crm.lookup_customer", customer_id="c-17")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from intentwatch.contracts import format_ts
from intentwatch.reference.broker import CredentialBroker, CredentialCheck
from intentwatch.sdk.instrument import size_of
from intentwatch.sdk.publisher import TelemetryPublisher

__all__ = ["AccessDenied", "GatewayCall", "ToolGateway"]

F = TypeVar("F", bound=Callable[..., Any])
Labels = Sequence[str] | Callable[[Mapping[str, Any]], Sequence[str]]


class AccessDenied(PermissionError):
    """The gateway refused a tool call; ``status`` is ``revoked``, ``expired`` or ``unknown``."""

    def __init__(self, tool: str, check: CredentialCheck) -> None:
        self.tool = tool
        self.status = check.status
        self.check = check
        if check.revoked is not None:
            revocation = check.revoked.revocation
            why = (f"credential {check.revoked.credential_id} was revoked "
                   f"({revocation.reason_code}: {revocation.reason})")
        elif check.credential is not None:
            why = (f"credential {check.credential.credential_id} expired at "
                   f"{format_ts(check.credential.expires_at)}")
        else:
            why = "the token is not one the broker issued"
        super().__init__(f"{tool} denied: {why}")


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One call through the gateway, for measurements and audits."""

    event_id: str | None
    """Id of the published tool-call event (``None`` for an unknown token: nothing is published)."""
    agent_id: str | None
    task_id: str | None
    tool: str
    target: str | None
    status: str
    """The broker's answer: ``valid``, ``expired``, ``revoked`` or ``unknown``."""
    outcome: str
    """``ok``, ``error`` or ``denied``."""
    started: float
    """Epoch seconds when the call reached the gateway."""
    duration: float
    """Seconds from arrival to answer, tool included."""


@dataclass(frozen=True, slots=True)
class _Tool:
    function: Callable[..., Any]
    fields: dict[str, str]
    target_arg: str | None
    data_labels: Labels


class ToolGateway:
    """Run registered tools for agents holding a valid task token, and publish every call.

    Parameters
    ----------
    broker
        Answers whether a token is valid, expired or revoked.
    publisher
        Where the tool-call telemetry goes.
    on_call
        Called with a :class:`GatewayCall` after every call, allowed or denied, from the
        calling thread (metrics, audit logs).
    """

    def __init__(
        self,
        broker: CredentialBroker,
        publisher: TelemetryPublisher,
        *,
        on_call: Callable[[GatewayCall], None] | None = None,
    ) -> None:
        self.broker = broker
        self.publisher = publisher
        self.on_call = on_call
        self._tools: dict[str, _Tool] = {}

    def register(
        self,
        name: str,
        function: Callable[..., Any],
        *,
        action: str | None = None,
        description: str | None = None,
        target_arg: str | None = None,
        data_labels: Labels = (),
    ) -> None:
        """Expose ``function`` as tool ``name``.

        ``action`` (read, write, delete, send, execute, admin) and ``description`` are
        published with each call; ``target_arg`` names the keyword argument holding the
        call's target; ``data_labels`` are the labels of the data the tool touches, or a
        function of the call's arguments that returns them.
        """
        fields = {"action": action, "tool_description": description}
        known = {key: value for key, value in fields.items() if value is not None}
        self._tools[name] = _Tool(function, known, target_arg, data_labels)

    def tool(
        self,
        name: str,
        *,
        action: str | None = None,
        description: str | None = None,
        target_arg: str | None = None,
        data_labels: Labels = (),
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`register`."""
        def decorate(function: F) -> F:
            self.register(name, function, action=action, description=description,
                          target_arg=target_arg, data_labels=data_labels)
            return function

        return decorate

    def call(self, token: str, tool: str, /, **arguments: Any) -> Any:
        """Run ``tool`` if ``token`` is valid now, else raise :class:`AccessDenied`.

        The tool's own exceptions propagate (the call is published as ``error``).
        """
        spec = self._tools.get(tool)
        if spec is None:
            raise KeyError(f"no tool {tool!r} is registered with this gateway")
        started = time.time()
        check = self.broker.check(token)
        credential = check.credential
        target = arguments.get(spec.target_arg) if spec.target_arg is not None else None
        target = None if target is None else str(target)
        if credential is None:  # no agent to attribute the call to: nothing to publish
            self._record(GatewayCall(None, None, None, tool, target, check.status, "denied",
                                     started, time.time() - started))
            raise AccessDenied(tool, check)

        labels = spec.data_labels(arguments) if callable(spec.data_labels) else spec.data_labels
        record = None
        try:
            with self.publisher.tool_call(
                tool, agent_id=credential.agent_id, task_id=credential.task_id,
                credential_id=credential.credential_id, target=target, data_labels=list(labels),
                bytes_out=size_of(arguments), ts=started, **spec.fields,
            ) as record:
                if check.status != "valid":
                    record.outcome = "denied"
                    raise AccessDenied(tool, check)
                result = spec.function(**arguments)
                record.bytes_in = size_of(result)
                return result
        finally:
            if record is not None:
                self._record(GatewayCall(
                    record.event_id, credential.agent_id, credential.task_id, tool, target,
                    check.status, record.outcome or "error", started, time.time() - started,
                ))

    def _record(self, call: GatewayCall) -> None:
        if self.on_call is not None:
            self.on_call(call)
