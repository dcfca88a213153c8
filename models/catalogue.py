"""What a tool does: its action class and description.

A call may say its own ``action`` and ``tool_description``; otherwise the tool
catalogue (operator supplied) is asked; otherwise the action is guessed from the
verbs in the tool's name, and ``unknown`` when nothing matches.

>>> catalogue = ToolCatalogue({"crm.lookup_customer": ToolInfo("crm.lookup_customer", "read")})
>>> catalogue.describe("crm.lookup_customer").action
'read'
>>> catalogue.describe("gmail.send_email").action
'send'
>>> catalogue.describe("zzz.frobnicate").action
'unknown'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from intentwatch.contracts import ToolCall

__all__ = ["ACTION_RISK", "ToolCatalogue", "ToolInfo", "guess_action"]

ACTION_RISK: dict[str, float] = {
    "read": 0.2,
    "unknown": 0.5,
    "write": 0.6,
    "execute": 0.8,
    "send": 0.9,
    "delete": 0.9,
    "admin": 1.0,
}
"""How much harm an action class can do, in [0, 1]; used to weigh deviations."""

_VERBS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Order matters: the first class whose verb appears in the name wins.
    ("admin", ("password", "role", "permission", "privilege", "iam", "admin", "apikey",
               "api_key", "token", "grant", "policy", "mfa")),
    ("delete", ("delete", "remove", "drop", "purge", "destroy", "wipe", "truncate", "erase")),
    ("send", ("send", "email", "mail", "post", "upload", "share", "export", "publish",
              "transfer", "forward", "reply", "message", "notify", "webhook", "pay")),
    ("execute", ("exec", "run", "shell", "bash", "eval", "invoke", "deploy", "script")),
    ("write", ("create", "update", "write", "put", "set", "edit", "modify", "insert",
               "add", "patch", "commit", "merge", "append", "save", "upsert", "close")),
    ("read", ("get", "read", "list", "search", "fetch", "query", "lookup", "find", "view",
              "describe", "download", "browse", "open", "summar", "check", "show", "stat")),
)
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A tool's name, action class (``read`` … ``admin`` or ``unknown``) and description."""

    name: str
    action: str
    description: str = ""


@lru_cache(maxsize=4096)
def guess_action(tool: str) -> str:
    """The action class suggested by the words of a tool name, or ``unknown``."""
    words = _WORD.findall(tool.lower())
    for action, verbs in _VERBS:
        if any(word.startswith(verb) for word in words for verb in verbs):
            return action
    return "unknown"


class ToolCatalogue:
    """Operator knowledge of tools, with a fallback guess from the tool name."""

    def __init__(self, tools: Mapping[str, ToolInfo] | None = None) -> None:
        self._tools = dict(tools or {})

    def describe(self, tool: str) -> ToolInfo:
        """Everything known about ``tool`` without looking at a particular call."""
        known = self._tools.get(tool)
        return known if known is not None else ToolInfo(tool, guess_action(tool))

    def resolve(self, call: ToolCall) -> ToolInfo:
        """The tool as this call describes it, filled in from the catalogue."""
        known = self.describe(call.tool)
        if call.action is None and call.tool_description is None:
            return known
        return ToolInfo(
            call.tool,
            call.action or known.action,
            call.tool_description or known.description,
        )
