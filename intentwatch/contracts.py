"""The v1 wire contracts: typed structs, strict decoding, topic names.

Every record on an intentwatch topic is UTF-8 JSON keyed by the agent's SPIFFE ID.
Decoding is strict about what matters (required fields, types, SPIFFE ID syntax,
time zones) and lenient about the rest (unknown fields are ignored), and every
failure names the field and the problem.

>>> call = decode_toolcall(b'{"event_id": "e1", "ts": "2026-11-02T08:00:00Z",'
...     b' "agent_id": "spiffe://acme.org/agents/support/a1", "task_id": "t1",'
...     b' "tool": "gmail.send_email", "target": "mailto:jane@customer.example"}')
>>> call.ts
1793606400.0
>>> try:
...     decode_toolcall(b'{"event_id": "e1"}')
... except ContractError as error:
...     print(error)
tool call: Object missing required field `ts`
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

__all__ = [
    "ACTIONS",
    "DLQ_HEADERS",
    "KIND_HEADER",
    "LABEL_LEVELS",
    "LIMITS",
    "REASON_CODES",
    "TOPICS",
    "Action",
    "AuditRecord",
    "ContractError",
    "DeadLetterHeaders",
    "Decision",
    "Event",
    "Grant",
    "InputKind",
    "JwtId",
    "Limits",
    "Reason",
    "ReasonCode",
    "RecordRejected",
    "Revocation",
    "TaskEvent",
    "ToolCall",
    "Verdict",
    "check_size",
    "decode_grant_payload",
    "decode_replay_record",
    "decode_task_event",
    "decode_toolcall",
    "encode",
    "format_ts",
    "is_spiffe_id",
    "parse_bootstrap",
    "role_of",
    "shorten",
]

TOPICS = {
    "events": "intentwatch.events.v1",
    "verdicts": "intentwatch.verdicts.v1",
    "revocations": "intentwatch.revocations.v1",
    "audit": "intentwatch.audit.v1",
    "dlq": "intentwatch.dlq.v1",
}
"""Logical topic name -> Kafka topic name. ``events`` is the one input topic: an agent's
tool calls, grants and task events in one log, so they are judged in the order they were
published (a task's end after the calls made before it)."""

KIND_HEADER = "intentwatch-kind"
"""Header of an input record naming its kind: ``toolcall``, ``grant`` or ``task``
(``tick``: a worker's clock record). Without it the kind is read from the value."""
InputKind = Literal["toolcall", "grant", "task", "tick"]


def parse_bootstrap(servers: str) -> list[str]:
    """Kafka bootstrap servers, ``host:port[,host:port]``, as a list; a
    :class:`ValueError` names the part that is not ``host:port``.

    >>> parse_bootstrap("127.0.0.1:9092, kafka-2:9093")
    ['127.0.0.1:9092', 'kafka-2:9093']
    >>> parse_bootstrap("127.0.0.1:9092x")
    Traceback (most recent call last):
    ValueError: Kafka address '127.0.0.1:9092x' is not host:port (port '9092x' is not a number)
    """
    found = []
    for server in (part.strip() for part in servers.split(",")):
        host, _, port = server.rpartition(":")
        if not host:
            why = "no port"
        elif not port.isdigit():
            why = f"port {port!r} is not a number"
        elif not 0 < int(port) < 65536:
            why = f"port {port} is out of range"
        else:
            found.append(server)
            continue
        raise ValueError(f"Kafka address {server!r} is not host:port ({why})")
    return found


class Limits:
    """The caps every contract enforces: a record past one is rejected, naming it.

    They keep one record from filling memory, state or an output record (a verdict,
    revocation or dead letter must stay far below the broker's 1 MB message limit).
    """

    RECORD_BYTES = 64 * 1024
    """Bytes of one encoded input record (a grant's JWS included)."""
    ID_CHARS = 1024
    """Characters of an id, a tool name or a grant pattern."""
    TEXT_CHARS = 4096
    """Characters of a tool description or a target."""
    INTENT_CHARS = 16 * 1024
    """Characters of a grant's intent."""
    LABELS = 32
    """Data labels on one call."""
    LABEL_CHARS = 64
    """Characters of one data label."""
    ARGS = 64
    """Top-level arguments of one call (their values count towards ``RECORD_BYTES``)."""
    GRANT_ITEMS = 256
    """Tools, targets or data labels of one grant."""
    GRANT_CREDENTIALS = 64
    """Credential ids of one grant (a revocation names every one)."""
    DETAIL_CHARS = 1000
    """Characters of a reason's detail or a revocation's reason (longer ones are shortened)."""
    EARLIEST, LATEST = 0.0, 253402300799.0
    """Epoch seconds a timestamp may take: 1970-01-01 to 9999-12-31T23:59:59Z."""


LIMITS = Limits

# SPIFFE ID (github.com/spiffe/spiffe standards/SPIFFE-ID.md, 2): scheme `spiffe`, a trust
# domain of [a-z0-9._-], and for a workload a path of segments of [A-Za-z0-9._-], none empty,
# `.` or `..`, no trailing slash, no query, fragment, port or user info; at most 2048 bytes.
_SPIFFE_PATTERN = r"^spiffe://[a-z0-9._-]+(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)+$"
_spiffe_re = re.compile(_SPIFFE_PATTERN.removeprefix("^").removesuffix("$").replace("$", r"\Z"))
_SPIFFE_MAX_BYTES, _TRUST_DOMAIN_MAX = 2048, 255
SpiffeId = Annotated[
    str,
    Meta(
        max_length=_SPIFFE_MAX_BYTES,
        description="SPIFFE ID of the agent workload: spiffe://trust-domain/path",
        extra_json_schema={"pattern": _SPIFFE_PATTERN},
    ),
]
NonEmpty = Annotated[str, Meta(min_length=1, max_length=Limits.ID_CHARS)]
Text = Annotated[str, Meta(max_length=Limits.TEXT_CHARS)]
Label = Annotated[str, Meta(min_length=1, max_length=Limits.LABEL_CHARS)]
HexId = Annotated[str, Meta(max_length=64)]
Count = Annotated[int, Meta(ge=0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
if TYPE_CHECKING:
    Timestamp = float
else:
    Timestamp = (
        Annotated[datetime, Meta(tz=True)]
        | Annotated[float, Meta(ge=Limits.EARLIEST, le=Limits.LATEST)]
    )
"""RFC 3339 with a time zone, or epoch seconds (1970 to 9999), on the wire; epoch seconds
once decoded (so the type checker sees ``float``)."""
GrantItems = Annotated[list[NonEmpty], Meta(max_length=Limits.GRANT_ITEMS)]
SemconvVersion = Annotated[str, Meta(max_length=32, description=(
    "only on calls read from OpenTelemetry spans: the OpenTelemetry semantic conventions "
    "version they were read by, e.g. 1.41.0"))]
"""Absent (not null) on calls that did not come from a span, and on their verdicts."""

Action = Literal["read", "write", "delete", "send", "execute", "admin"]
ACTIONS: tuple[str, ...] = ("read", "write", "delete", "send", "execute", "admin")
LABEL_LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
Decision = Literal["allow", "alert", "revoke"]
ReasonCode = Literal[
    "intent_violation", "anomaly", "ttl_expired", "task_completed", "credential_reuse", "policy"
]
REASON_CODES: tuple[str, ...] = get_args(ReasonCode)


class ContractError(ValueError):
    """A record does not meet its contract; the message names the field and the problem."""


class RecordRejected(ContractError):
    """A record is refused by a rule rather than for its shape; ``code`` names the rule.

    >>> str(RecordRejected("too_large", "70,000 bytes"))
    'too_large: 70,000 bytes'
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _epoch(value: datetime | float, name: str) -> float:
    epoch = value.timestamp() if isinstance(value, datetime) else float(value)
    if not Limits.EARLIEST <= epoch <= Limits.LATEST:
        raise ValueError(f"`{name}` must be between 1970 and 9999, got {value}")
    return epoch


def is_spiffe_id(value: str) -> bool:
    """Whether ``value`` is a workload SPIFFE ID, exactly as the SPIFFE specification says.

    >>> is_spiffe_id("spiffe://acme.org/agents/a1"), is_spiffe_id("spiffe://acme.org/a1\\n")
    (True, False)
    >>> is_spiffe_id("spiffe://acme.org/a/../b"), is_spiffe_id("spiffe://Acme.org/a")
    (False, False)
    """
    return (
        _spiffe_re.fullmatch(value) is not None
        and len(value.encode()) <= _SPIFFE_MAX_BYTES
        and len(value[len("spiffe://"):].split("/", 1)[0]) <= _TRUST_DOMAIN_MAX
    )


def _check_spiffe_id(value: str) -> None:
    if not is_spiffe_id(value):
        raise ValueError(
            "`agent_id` must be a SPIFFE ID (spiffe://trust-domain/path), "
            f"got {shorten(value, 200)!r}"
        )


def shorten(text: str, limit: int = Limits.DETAIL_CHARS) -> str:
    """``text``, cut to at most ``limit`` characters with a count of what was left out.

    >>> shorten("a" * 50, 30)
    'aaaaaaaaaaaa… (+38 characters)'
    """
    if len(text) <= limit:
        return text
    suffix_room = len(f"… (+{len(text):,} characters)")
    kept = max(limit - suffix_room, 0)
    return f"{text[:kept]}… (+{len(text) - kept:,} characters)"


def format_ts(epoch: float) -> str:
    """RFC 3339 UTC text for epoch seconds, e.g. ``2026-11-02T08:00:00Z``."""
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def role_of(agent_id: str) -> str:
    """The agent's role: its SPIFFE ID without the last path segment."""
    return agent_id.rsplit("/", 1)[0]


class ToolCall(Struct, kw_only=True):
    """One tool call made by an agent (``intentwatch.events.v1``, kind ``toolcall``)."""

    event_id: NonEmpty
    ts: Timestamp
    agent_id: SpiffeId
    task_id: NonEmpty
    tool: NonEmpty
    credential_id: NonEmpty | None = None
    tool_description: Text | None = None
    action: Action | None = None
    target: Text | None = None
    args: Annotated[dict[str, Any], Meta(max_length=Limits.ARGS)] | None = None
    data_labels: Annotated[list[Label], Meta(max_length=Limits.LABELS)] = []
    bytes_out: Count | None = None
    bytes_in: Count | None = None
    outcome: Literal["ok", "error", "denied"] | None = None
    trace_id: HexId | None = None
    span_id: HexId | None = None
    parent_span_id: HexId | None = None
    tool_type: Annotated[str, Meta(max_length=Limits.ID_CHARS, description=(
        "OpenTelemetry gen_ai.tool.type: function, extension, datastore"))] | None = None
    result: Annotated[Any, Meta(description=(
        "what the tool returned (OpenTelemetry gen_ai.tool.call.result), possibly cut"))] = None
    conversation_id: Annotated[str, Meta(max_length=Limits.ID_CHARS, description=(
        "OpenTelemetry gen_ai.conversation.id"))] | None = None
    semconv_version: SemconvVersion | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_spiffe_id(self.agent_id)
        self.ts = _epoch(self.ts, "ts")


class JwtId(Struct, kw_only=True):
    """A JWT named by its issuer and id (RFC 7519 ``iss`` and ``jti``), e.g. a task's token."""

    iss: NonEmpty
    jti: NonEmpty


class Grant(Struct, kw_only=True):
    """The approved intent for one task (the payload of a ``grant`` record's JWS).

    ``token`` names the task's access token when it is a JWT: its ``jti`` is one
    of ``credential_ids``, and revocations name it as the session they end.
    """

    grant_id: NonEmpty
    agent_id: SpiffeId
    task_id: NonEmpty
    credential_ids: Annotated[list[NonEmpty], Meta(max_length=Limits.GRANT_CREDENTIALS)]
    tools: GrantItems
    targets: GrantItems
    data_labels: GrantItems
    issued_at: Timestamp
    expires_at: Timestamp
    issuer: NonEmpty
    intent: Annotated[str, Meta(max_length=Limits.INTENT_CHARS)] = ""
    token: JwtId | None = None

    def __post_init__(self) -> None:
        _check_spiffe_id(self.agent_id)
        self.issued_at = _epoch(self.issued_at, "issued_at")
        self.expires_at = _epoch(self.expires_at, "expires_at")
        if self.expires_at <= self.issued_at:
            raise ValueError("`expires_at` must be later than `issued_at`")
        if self.token is not None and self.token.jti not in self.credential_ids:
            raise ValueError("`token.jti` must be one of `credential_ids`")


class TaskEvent(Struct, kw_only=True):
    """A task's lifecycle step (``intentwatch.events.v1``, kind ``task``)."""

    event_id: NonEmpty
    ts: Timestamp
    agent_id: SpiffeId
    task_id: NonEmpty
    status: Literal["started", "completed", "failed", "cancelled"]

    def __post_init__(self) -> None:
        _check_spiffe_id(self.agent_id)
        self.ts = _epoch(self.ts, "ts")


Event = ToolCall | Grant | TaskEvent


class Reason(Struct, kw_only=True):
    """One cause of a verdict: a stable code, its weight in the score, a sentence."""

    code: str
    weight: float
    detail: str


class Verdict(Struct, kw_only=True):
    """The judgement of one tool call (``intentwatch.verdicts.v1``)."""

    event_id: str
    agent_id: str
    task_id: str
    tool: str
    ts: str
    score: Probability
    decision: Decision
    reasons: list[Reason] = []
    components: dict[str, float] = {}
    model_version: str = ""
    rule: str = ""
    """What decided: ``grant`` (a conformance violation), ``task_revoked``, ``intent``
    (intent or destination evidence), ``novelty`` (past the novelty level),
    ``novelty_only``, ``delegated`` or ``data_destination`` (held at alert), ``score`` (below
    the revoke level)."""
    semconv_version: SemconvVersion | UnsetType = UNSET


class Revocation(Struct, kw_only=True):
    """A decision to revoke a task's credentials, before it is signed as a CAEP SET.

    ``revocation_id`` is deterministic: the same cause gives the same id, so
    receivers can deduplicate.
    """

    revocation_id: str
    agent_id: str
    task_id: str
    credential_ids: list[str]
    reason_code: ReasonCode
    reason: str
    score: Probability
    evidence: list[str] = []
    event_ts: float
    reason_user: str | None = None
    """A sentence for the agent's user (CAEP ``reason_user``), when there is one."""
    session_token: JwtId | None = None
    """The task's access token, when its grant names one (the SET's session subject)."""


class AuditRecord(Struct, kw_only=True):
    """Approved versus actual for one task (``intentwatch.audit.v1``)."""

    agent_id: str
    task_id: str
    grant_id: str | None
    intent: str
    granted: dict[str, list[str]]
    used: dict[str, dict[str, int]]
    unused: dict[str, list[str]]
    out_of_grant: list[dict[str, str]]
    calls: int
    max_score: float
    revoked: bool
    revocation_reasons: list[str]
    ended: Literal["completed", "failed", "cancelled", "expired", "revoked"]
    started_at: str | None
    ended_at: str


class DeadLetterHeaders:
    """Header names on ``intentwatch.dlq.v1`` records (the value is the original bytes)."""

    SOURCE_TOPIC = "dlq.source.topic"
    SOURCE_PARTITION = "dlq.source.partition"
    SOURCE_OFFSET = "dlq.source.offset"
    ERROR_CLASS = "dlq.error.class"
    ERROR_MESSAGE = "dlq.error.message"
    ORIGINAL_SIZE = "dlq.original.size"
    """Bytes of the original value (the dead letter keeps at most ``RECORD_BYTES`` of it)."""
    ORIGINAL_SHA256 = "dlq.original.sha256"
    """Hex SHA-256 of the original value."""
    ORIGINAL_KEY_SIZE = "dlq.original.key.size"
    """Bytes of the original key; present only when the key was cut."""


DLQ_HEADERS = DeadLetterHeaders

_toolcall_decoder = msgspec.json.Decoder(ToolCall)
_grant_decoder = msgspec.json.Decoder(Grant)
_task_decoder = msgspec.json.Decoder(TaskEvent)
_encoder = msgspec.json.Encoder()


def check_size(data: bytes | str, what: str) -> None:
    """Raise :class:`RecordRejected` (``too_large``) if ``data`` is past ``RECORD_BYTES``."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > Limits.RECORD_BYTES:
        raise RecordRejected(
            "too_large", f"{what}: {size:,} bytes, more than the {Limits.RECORD_BYTES:,} allowed"
        )


def _decode(decoder: msgspec.json.Decoder, data: bytes | str, what: str):
    check_size(data, what)
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ContractError(f"{what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ContractError(f"{what}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ContractError(f"{what}: nested too deeply") from None


def decode_toolcall(data: bytes | str) -> ToolCall:
    """Decode a tool call value, or raise :class:`ContractError`."""
    return _decode(_toolcall_decoder, data, "tool call")


def decode_task_event(data: bytes | str) -> TaskEvent:
    """Decode a task event value, or raise :class:`ContractError`."""
    return _decode(_task_decoder, data, "task event")


def decode_grant_payload(data: bytes | str | dict[str, Any]) -> Grant:
    """Decode a grant's payload (the JSON inside the JWS), or raise :class:`ContractError`."""
    if isinstance(data, dict):
        return _convert(data, Grant, "grant")
    return _decode(_grant_decoder, data, "grant")


def _convert(obj: dict[str, Any], kind: type, what: str):
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as exc:
        raise ContractError(f"{what}: {exc}") from None


_REPLAY_KINDS: dict[str, tuple[type, str]] = {
    "toolcall": (ToolCall, "tool call"),
    "grant": (Grant, "grant"),
    "task": (TaskEvent, "task event"),
}


def decode_replay_record(obj: dict[str, Any]) -> Event:
    """Turn one parsed replay line (a dict with ``kind``) into its contract struct."""
    kind = obj.get("kind")
    if kind not in _REPLAY_KINDS:
        raise ContractError(
            f"replay record: `kind` must be one of {sorted(_REPLAY_KINDS)}, got {kind!r}"
        )
    struct, what = _REPLAY_KINDS[kind]
    return _convert(obj, struct, what)


def encode(record: Struct | dict[str, Any]) -> bytes:
    """JSON bytes for any contract struct."""
    return _encoder.encode(record)

