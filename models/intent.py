"""Intent alignment: does a tool call do what the approved intent asks for?

The grant's ``intent`` is free text a human approved ("Reply to
jane.doe@customer-co.com about her refund"). Two questions are asked of every
call, lexically and without any model download:

* **Is the target named?** An e-mail address, host, domain, IBAN or
  identifier that the intent names is approved; a domain named approves its
  hosts.
* **Is the action asked for?** The tool's name and description are mapped to
  action concepts (send a message, delete, change access, …) through verb
  synonym sets and light stemming; a concept the intent does not ask for is a
  deviation, weighted by the action's risk (reads weigh least).

Everything is cached per intent, per tool and per (intent, tool), so a call
costs a few dictionary look-ups.

>>> intent = "Reply to jane.doe@customer-co.com about her refund"
>>> send = ToolInfo("gmail.send_email", "send", "Send an email")
>>> check = align(intent, send, "mailto:jane.doe@customer-co.com")
>>> check.target_named, check.deviation
(True, 0.0)
>>> align(intent, ToolInfo("drive.delete_file", "delete"), None).deviation
0.9
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import tldextract

from intentwatch.models.catalogue import ACTION_RISK, ToolInfo

__all__ = [
    "CONCEPTS",
    "IntentCheck",
    "ParsedIntent",
    "TargetParts",
    "admin_interface",
    "align",
    "concepts_of",
    "is_public_suffix",
    "parse_intent",
    "parse_target",
    "parties_of",
    "privilege_of",
    "public_host",
    "stem",
]

# Action concepts: the things an intent can ask for, with the words that ask for them.
# A word may name several concepts ("open" a file / "open" a ticket).
CONCEPTS: dict[str, tuple[str, ...]] = {
    "read": (
        "read", "get", "fetch", "retrieve", "open", "view", "show", "display", "look", "lookup",
        "see", "check", "inspect", "review", "examine", "summarise", "summary", "digest",
        "analyse", "analysis", "investigate", "research", "search", "find", "query", "list",
        "browse", "scan", "monitor", "watch", "count", "compare", "describe", "explain",
        "track", "status", "verify", "report", "download", "triage", "read-only", "audit",
        "answer", "understand", "locate", "collect", "gather", "stat", "diff", "log",
    ),
    "create": (
        "create", "add", "new", "make", "draft", "compose", "generate", "write", "prepare",
        "insert", "append", "register", "raise", "submit", "enter", "record", "log",
        "save", "store", "upsert", "document",
    ),
    "update": (
        "update", "edit", "modify", "change", "set", "fix", "correct", "patch", "amend",
        "rename", "move", "tag", "label", "assign", "comment", "annotate", "note", "resolve",
        "close", "reopen", "merge", "commit", "push", "adjust", "apply", "mark", "approve",
        "sync", "upsert", "save", "replace", "refactor", "configure",
    ),
    "schedule": (
        "schedule", "reschedule", "book", "calendar", "meeting", "appointment", "remind",
        "reminder",
    ),
    "message": (
        "send", "email", "mail", "reply", "respond", "forward", "message", "notify",
        "notification", "contact", "tell", "inform", "ping", "chat", "announce", "invite",
        "cc", "escalate", "dm", "sms", "follow-up", "followup", "post", "answer",
    ),
    "share": ("share", "publish", "post", "upload", "attach", "link", "distribute"),
    "export": (
        "export", "upload", "transfer", "backup", "dump", "extract", "copy", "archive",
        "exfiltrate", "mirror", "replicate", "sync",
    ),
    "pay": (
        "pay", "payment", "wire", "refund", "remit", "payout", "charge", "disburse", "money",
        "fund", "funds", "reimburse", "settle", "purchase", "buy", "transfer", "remittance",
        "donate",
    ),
    "delete": (
        "delete", "remove", "purge", "drop", "erase", "wipe", "destroy", "clean", "cleanup",
        "clear", "prune", "truncate", "discard", "trash", "unlink", "rm", "shred", "cancel",
    ),
    "access": (
        "password", "passwd", "permission", "privilege", "role", "iam", "admin", "apikey",
        "credential", "secret", "mfa", "2fa", "sso", "sudo", "rbac", "acl",
        "grant", "revoke", "elevate", "impersonate", "token", "rotate", "deactivate",
        "reactivate", "suspend", "onboard", "offboard", "provision", "deprovision",
    ),
    "run": (
        "run", "execute", "exec", "deploy", "launch", "restart", "trigger", "invoke",
        "compile", "install", "shell", "command", "script", "bash", "eval", "rollout",
        "rollback",
    ),
}
"""Action concept -> the words (stemmed on use) that ask for it."""

# A tool concept -> intent concepts that half approve it (asking to send a message half
# approves creating a draft; asking to schedule half approves sending the invitation).
_RELATED: dict[str, frozenset[str]] = {
    "create": frozenset({"update", "schedule", "message"}),
    "update": frozenset({"create", "schedule"}),
    "schedule": frozenset({"create", "update"}),
    "message": frozenset({"share", "schedule"}),
    "share": frozenset({"message", "export"}),
    "export": frozenset({"share"}),
}
_RELATED_CREDIT = 0.5
_IMPLIED_READ_CREDIT = 0.5
"""Any intent implies some reading: a read that is not asked for is half a deviation."""

# The concept families that carry each action class; used to pick the tool's own concept.
_CLASS_CONCEPTS: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"create", "update", "schedule"}),
    "send": frozenset({"message", "share", "export", "pay"}),
    "delete": frozenset({"delete"}),
    "admin": frozenset({"access"}),
    "execute": frozenset({"run"}),
}

_WORD = re.compile(r"[a-z0-9][a-z0-9-]*")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>),;]+", re.IGNORECASE)
_HOST = re.compile(r"\b(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}\b", re.IGNORECASE)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_IDENT = re.compile(r"(?<![\w@.])[#]?[A-Za-z0-9_/-]*\d[A-Za-z0-9_/-]*")
_PATH = re.compile(r"(?<![\w:/])(?:~|\.{1,2})?/[\w.-]+(?:/[\w.-]+)+")
_QUOTED = re.compile(r"[\"'`“‘]([^\"'`”’]{3,120})[\"'`”’]")
_ACCESS_PHRASE = re.compile(
    r"\b(give|grant|remove|revoke|provide|add|request|restore|change)\b[^.;]{0,40}\baccess\b",
    re.IGNORECASE,
)
"""Asking for access changes in so many words ("give Marco read-only access to ...")."""
_CHANNEL = re.compile(r"(?<![\w#])#[a-z][\w-]{1,79}", re.IGNORECASE)
_FILE_EXTENSIONS = frozenset(
    {"csv", "pdf", "txt", "doc", "docx", "xls", "xlsx", "json", "md", "py", "png", "jpg", "zip"}
)
_PRIVILEGED = re.compile(
    r"admin|superuser|\broot\b|\bowners?\b|full[-_ ]?access|\bsudo(ers)?\b", re.IGNORECASE
)
"""Words that mark an administrative privilege level (``AdministratorAccess``,
``super-admins``, ``ACCOUNTADMIN``, ``permission: admin``, ``owner``)."""
_PRIVILEGED_SEGMENT = re.compile(
    r"(super[-_]?)?admin(istrator)?s?|root|superuser|sudo(ers)?", re.IGNORECASE
)
"""A host label or path segment that is an administrative interface (``/api/admin/``,
``admin.acme.org``, ``/acl/root``), as a whole word."""
_extract = tldextract.TLDExtract(suffix_list_urls=())
_HANDLE_IN_TEXT = re.compile(r"(?<![\w@])@[a-z0-9][\w.-]{1,63}", re.IGNORECASE)
_DELEGATION = re.compile(
    r"\b(?:do|complete|handle|finish|work through|go through|carry out|execute|perform|"
    r"follow|action|process|take care of)\b[^;!?\n]{0,40}?\b(?:tasks?|to-?dos?|"
    r"instructions?|steps?|requests?|items?|actions?|list|checklist)\b[^;!?\n]{0,60}?"
    r"\b(?:in|from|on|of|listed|described|written)\b"
    r"|\b(?:do|follow|handle)\s+(?:what|whatever)\b[^.;!?]{0,40}?"
    r"\b(?:says?|asks?|tells?|requests?|wants?)\b",
    re.IGNORECASE,
)
"""A request that hands its choices to data: it asks to do what a file, an e-mail or a
list says, so what it permits is whatever that data says (an injection looks the same)."""


def _delegation(text: str) -> str | None:
    """The words of ``text`` that delegate to data, if any.

    >>> _delegation("Please do the tasks in my to-do list for today.")
    'do the tasks in'
    >>> _delegation("Follow the instructions in the email from Ana"), _delegation("Pay bill 12")
    ('Follow the instructions in', None)
    """
    match = _DELEGATION.search(text)
    return match.group(0) if match else None


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light, consistent stem: plural and tense endings off, British ``-ise`` spelling.

    >>> [stem(w) for w in ("emails", "deleted", "summarizes", "policies", "addresses")]
    ['email', 'delet', 'summaris', 'policy', 'address']
    """
    word = word.replace("iz", "is")
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def _words(text: str) -> list[str]:
    """Lower-case words of ``text``, splitting camelCase, snake_case and dotted names."""
    text = _CAMEL.sub(" ", text).replace("_", " ").replace(".", " ").lower()
    return _WORD.findall(text)


_STEM_CONCEPTS: dict[str, frozenset[str]] = {}
for _concept, _words_of_concept in CONCEPTS.items():
    for _word in _words_of_concept:
        _key = stem(_word)
        _STEM_CONCEPTS[_key] = _STEM_CONCEPTS.get(_key, frozenset()) | {_concept}


def concepts_of(text: str) -> frozenset[str]:
    """The action concepts that the words of ``text`` ask for.

    >>> sorted(concepts_of("Summarise the open tickets and email the summary to Jane"))
    ['message', 'read']
    """
    found: set[str] = set()
    for word in _words(text):
        found |= _word_concepts(word)
    return frozenset(found)


def _word_concepts(word: str) -> frozenset[str]:
    found = _STEM_CONCEPTS.get(stem(word), frozenset())
    if "-" in word:
        for part in word.split("-"):
            found |= _STEM_CONCEPTS.get(stem(part), frozenset())
    return found


_NOUN_BEFORE = frozenset({
    "the", "a", "an", "this", "that", "these", "those", "my", "your", "our", "their", "his",
    "her", "its", "each", "every", "any", "some", "no", "of", "in", "on", "for", "with",
    "from", "by", "about", "at", "via", "per", "whose", "which", "same", "other", "last",
    "next", "first", "recent", "unread", "latest", "new", "old", "own",
})
"""Words after which a word is a noun (``the email``, ``my payment``), not an order."""
_NOUN_AFTER = frozenset({
    "address", "addresses", "details", "list", "notes", "thread", "threads", "history",
    "settings", "id", "ids", "template", "link", "links", "record", "records", "log", "logs",
    "summary", "file", "files", "draft", "drafts", "inbox", "body", "subject", "signature",
    "attachment", "attachments", "content", "contents", "text", "policy", "status",
})
"""Words before which a word is a modifier (``email addresses``, ``payment details``)."""
_PARTICIPLE_OBJECTS = frozenset({
    "the", "a", "an", "this", "that", "these", "those", "it", "them", "him", "her", "me",
    "us", "all", "any", "every", "each", "to", "from", "by", "in", "on", "at", "for", "with",
    "of", "into", "onto", "before", "after", "and", "or", "but", "if", "when", "as", "so",
    "then", "now", "today", "yesterday", "tomorrow", "again", "back", "please",
})
"""Words after which a word ending in ``-ed`` may still ask (``deleted by Friday``); before
any other word it describes a noun (``elevated error rates``) and asks for nothing."""
_NOUN_CONCEPTS = frozenset({"access", "pay"})
"""Concepts that even a noun asks for: an intent about a password, a role or a payment
asks for access changes or money moves (``reset the password``, ``process the refund``)."""
_NOUN_SCHEDULE = frozenset(stem(w) for w in (
    "meeting", "appointment", "calendar", "reminder", "booking", "reservation",
))
"""Schedule nouns that ask for scheduling (``a meeting with Ana on Friday``)."""
_SENTENCE = re.compile(r"[.!?;:,()\n]+")


@lru_cache(maxsize=8192)
def ordered_concepts(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """The words of a request that ask for an action, in order, with their concepts.

    A word asks when it is used as a verb: not after an article, possessive or
    preposition (``the email addresses``), not as a modifier (``email addresses``),
    nor as a participle before its noun (``elevated error rates``). Nouns still ask for
    access and money concepts, and meetings for scheduling.

    >>> [w for w, _ in ordered_concepts("Please send the email addresses in the file to Ana.")]
    ['send']
    >>> [w for w, _ in ordered_concepts("Hey, what is in my inbox? Pay the bill in it.")]
    ['pay']
    >>> [w for w, _ in ordered_concepts("Look into it (auth: elevated 5xx rates)")]
    ['look']
    """
    found: list[tuple[str, frozenset[str]]] = []
    for sentence in _SENTENCE.split(text):
        words = _words(sentence)
        for i, word in enumerate(words):
            concepts = _word_concepts(word)
            if not concepts:
                continue
            before = words[i - 1] if i else ""
            after = words[i + 1] if i + 1 < len(words) else ""
            if word.endswith("ed") and after and after not in _PARTICIPLE_OBJECTS:
                continue
            if before in _NOUN_BEFORE or after in _NOUN_AFTER:
                kept = concepts & _NOUN_CONCEPTS
                if stem(word) in _NOUN_SCHEDULE:
                    kept |= concepts & {"schedule"}
                if not kept:
                    continue
                concepts = kept
            found.append((word, concepts))
    return tuple(found)


def asked_concepts(text: str) -> frozenset[str]:
    """The action concepts a request asks for (:func:`ordered_concepts`, merged).

    >>> sorted(asked_concepts("Summarise the email from Bob"))
    ['read']
    """
    found: set[str] = set()
    for _, concepts in ordered_concepts(text):
        found |= concepts
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class TargetParts:
    """A call target taken apart.

    ``address`` is the whole target (lower case); ``host`` its DNS host if
    it has one; ``site`` where it points (the host, else the scheme and first
    part, e.g. ``slack:#ops``); ``endpoint`` the target with identifiers
    replaced by ``{id}`` (``…/tickets/{id}``), so calls to the same API route
    or recipient count as one destination; ``domain`` the registrable domain
    (``iban:CC`` for bank accounts).
    """

    scheme: str
    address: str
    host: str | None
    site: str
    endpoint: str
    domain: str | None

    @property
    def terms(self) -> frozenset[str]:
        """The words and identifiers in the target (for matching values an intent names)."""
        return _terms(self.address)


@lru_cache(maxsize=16384)
def _terms(address: str) -> frozenset[str]:
    return frozenset(t for t in re.split(r"[^a-z0-9_#-]+", address.lower()) if len(t) >= 3)


def _is_identifier(segment: str) -> bool:
    """A path segment that names one record rather than a route (ids, dates, hashes)."""
    return len(segment) >= 24 or (len(segment) > 3 and any(c.isdigit() for c in segment))


def _shape(identifier: str) -> str:
    """Character classes of an identifier: ``51796`` → ``99999``, ``INV-2026-1`` →
    ``aaa-9999-9``; mixed letters and digits (random ids) → ``x`` each."""
    shape = "".join("9" if c.isdigit() else "a" if c.isalpha() else c for c in identifier)
    return re.sub("[a9]", "x", shape) if "a" in shape and "9" in shape else shape


def _template(path: str) -> str:
    return "/".join("{id}" if _is_identifier(part) else part for part in path.split("/"))


@lru_cache(maxsize=65536)
def parse_target(target: str) -> TargetParts:
    """Scheme, address, host, site, endpoint and registrable domain (bundled suffix list only).

    >>> parts = parse_target("https://Acme.Zendesk.com/api/v2/tickets/96695?x=1")
    >>> parts.site, parts.endpoint, parts.domain
    ('acme.zendesk.com', 'https://acme.zendesk.com/api/v2/tickets/{id}', 'zendesk.com')
    >>> parse_target("mailto:Jane.Doe@mail.customer-co.com").domain
    'customer-co.com'
    >>> parse_target("https://paste.evil.example/upload").domain
    'evil.example'
    >>> parse_target("iban:DE89370400440532013000").domain
    'iban:DE'
    """
    lowered = target.strip().lower()
    scheme, sep, rest = lowered.partition(":")
    if not sep or "." in scheme or "/" in scheme or "@" in scheme:
        scheme, rest = "", lowered
    host: str | None = None
    if scheme == "mailto":
        address = rest.split("?", 1)[0]
        host = address.rpartition("@")[2] or None
        endpoint = "mailto:" + address
    elif rest.startswith("//"):
        parts = urlsplit(lowered if scheme else "x:" + rest)
        address, host = lowered, parts.hostname
        endpoint = f"{scheme}://{parts.netloc}{_template(parts.path)}"
    elif scheme == "iban":
        address = rest.replace(" ", "").upper()
        endpoint = "iban:" + address
    elif scheme:
        address = lowered
        endpoint = f"{scheme}:{_template(rest)}"
    else:
        address = rest
        candidate = rest.split("/", 1)[0].rpartition("@")[2].split(":", 1)[0]
        host = candidate if "." in candidate else None
        endpoint = _template(rest)
    if scheme == "iban":
        domain: str | None = "iban:" + address[:2]
    elif host is not None:
        domain = _registrable(host)
    else:
        domain = None
    if host:
        site = host
    elif scheme and scheme != "iban":
        site = f"{scheme}:{rest.split('/', 1)[0]}"
    else:
        site = endpoint
    return TargetParts(scheme, address, host, site, endpoint, domain)


@lru_cache(maxsize=65536)
def _registrable(host: str) -> str:
    """The registrable domain of a host; the last two labels when no public suffix applies."""
    found = _extract(host).top_domain_under_public_suffix
    if found:
        return found
    if host.replace(".", "").isdigit() or ":" in host:
        return host  # an IP address is its own domain
    return ".".join(host.rsplit(".", 2)[-2:])


_RESERVED_TLDS = frozenset({"example", "test", "internal", "local", "localhost"})
"""Special-use top-level names (RFC 2606, 6761): no public suffix, but hosts all the same."""


@lru_cache(maxsize=65536)
def public_host(text: str) -> str | None:
    """``text`` as a host under a public suffix (lower case), trailing words that are no
    suffix dropped (a missing space after a full stop); None when it is no such host.

    >>> public_host("www.Example-Shop.com.Then"), public_host("report.pdf"), public_host("e.g")
    ('www.example-shop.com', None, None)
    >>> public_host("api.shop.co.uk"), public_host("mail.customer.example")
    ('api.shop.co.uk', 'mail.customer.example')
    """
    host = text.strip().strip(".").lower()
    if not host or " " in host:
        return None
    if host.replace(".", "").isdigit():
        return host if host.count(".") == 3 else None
    labels = host.split(".")
    while len(labels) >= 2:
        last = labels[-1]
        if last in _RESERVED_TLDS:
            return ".".join(labels)
        if last not in _FILE_EXTENSIONS:
            found = _extract(".".join(labels))
            if found.suffix and found.domain and found.suffix.split(".")[-1] == last:
                return ".".join(labels)
        labels.pop()
    return None


@lru_cache(maxsize=4096)
def is_public_suffix(text: str) -> bool:
    """Whether ``text`` is a public suffix itself (``com``, ``co.uk``), owned by nobody.

    >>> is_public_suffix("co.uk"), is_public_suffix("acme.org")
    (True, False)
    """
    text = text.strip(".").lower()
    return bool(text) and _extract("x." + text).suffix == text


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    """The string values in a call's arguments (nested at most two levels)."""
    if isinstance(value, str):
        yield value
    elif depth < 2 and isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif depth < 2 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, depth + 1)


def parties_of(args: dict[str, Any] | None) -> tuple[str, ...]:
    """The parties a call's arguments name: e-mail addresses, URLs and bank accounts.

    They are where a call sends data or hands access beside its target (``cc``,
    ``login``, ``send_email_to``, ``owner``).

    >>> parties_of({"login": "Eve@Evil.example", "note": "see https://x.example/a", "n": 3})
    ('mailto:eve@evil.example', 'https://x.example/a')
    """
    if not args:
        return ()
    found: dict[str, None] = {}
    for text in _strings(args):
        for email in _EMAIL.findall(text):
            found["mailto:" + email.lower()] = None
        for url in _URL.findall(text):
            found[url] = None
        for iban in _IBAN.findall(text):
            found["iban:" + iban.replace(" ", "")] = None
    return tuple(found)


def privilege_of(target: str | None, args: dict[str, Any] | None) -> str | None:
    """The administrative privilege level a call's target or arguments name, if any.

    >>> privilege_of("https://acme.okta.com/api/v1/groups/super-admins/users/42", None)
    'admin'
    >>> privilege_of(None, {"policy": "AdministratorAccess"}), privilege_of(None, {"role": "x"})
    ('admin', None)
    """
    texts = [target] if target else []
    texts += _strings(args or {})
    for text in texts:
        match = _PRIVILEGED.search(text)
        if match:
            word = match.group(0).lower()
            return "admin" if "admin" in word else word
    return None


@lru_cache(maxsize=16384)
def admin_interface(url: str) -> str | None:
    """``admin`` when a URL's host or path names an administrative interface, else None.

    >>> admin_interface("https://grafana.acme.org/api/admin/users")
    'admin'
    >>> admin_interface("https://vault.acme.org/v1/sys/policies/acl/root")
    'admin'
    >>> admin_interface("https://news.example/2026/root-cause-of-the-outage") is None
    True
    """
    parts = urlsplit(url)
    segments = [*(parts.hostname or "").split("."), *parts.path.split("/")]
    return "admin" if any(_PRIVILEGED_SEGMENT.fullmatch(s) for s in segments if s) else None


@dataclass(frozen=True, slots=True)
class ParsedIntent:
    """What an intent asks for (action concepts) and names (targets and values)."""

    text: str
    concepts: frozenset[str]
    emails: frozenset[str]
    hosts: frozenset[str]
    """Hosts and domains written in the intent; each approves itself and its subdomains."""
    domains: frozenset[str]
    """Registrable domains of everything named, e-mail addresses included."""
    ibans: frozenset[str]
    channels: frozenset[str]
    identifiers: frozenset[str]
    paths: frozenset[str]
    words: frozenset[str]
    """Lower-case words, to recognise a service named by its brand (VerifyHire → verifyhire.com)."""
    privileged: bool = False
    """The intent asks for an administrative privilege level in so many words."""
    handles: frozenset[str] = frozenset()
    """``@handles`` written in the intent."""
    delegates: str | None = None
    """The words with which the request hands its choices to data (``do the tasks in my
    to-do list``), if it does."""

    def names_target(self, parts: TargetParts) -> bool:
        """The intent names this exact recipient, a host it is on, or a value it contains."""
        if parts.address in self.emails or parts.address in self.ibans:
            return True
        if self.channels and not self.channels.isdisjoint(parts.terms):
            return True
        host = parts.host
        if host is not None and (
            host in self.hosts or any(host.endswith("." + h) for h in self.hosts)
        ):
            return True
        if any(path in parts.address for path in self.paths):
            return True
        return bool(self.identifiers) and not self.identifiers.isdisjoint(parts.terms)

    def names_domain(self, parts: TargetParts) -> bool:
        """The intent names the target's registrable domain, by address, host or brand."""
        domain = parts.domain
        if domain is None:
            return False
        label = domain.split(".", 1)[0]
        brand, head = label.replace("-", ""), label.split("-", 1)[0]
        return domain in self.domains or any(
            len(name) >= 4 and name in self.words for name in (brand, head)
        )

    def records_like(self, parts: TargetParts) -> frozenset[str]:
        """Record identifiers the intent names that look like the target's (ticket 51796
        for ``…/tickets/93336``; not a date for a file id)."""
        if not self.identifiers:
            return frozenset()
        shapes = {_shape(term) for term in parts.terms if _is_identifier(term)}
        return frozenset(i for i in self.identifiers if _shape(i) in shapes)

    @property
    def destination_kinds(self) -> frozenset[str]:
        """The kinds of destination the intent names (as :mod:`~intentwatch.models.provenance`
        calls them).

        >>> paying = parse_intent("Pay DE89370400440532013000 and mail bob@partner.example")
        >>> sorted(paying.destination_kinds)
        ['account', 'email']
        >>> parse_intent("Reply to the sender").destination_kinds
        frozenset()
        """
        named = {"email": self.emails, "account": self.ibans, "url": self.hosts,
                 "channel": self.channels, "handle": self.handles}
        return frozenset(kind for kind, values in named.items() if values)

    def destinations(self, parts: TargetParts) -> frozenset[str]:
        """Destinations of the target's kind the intent names: recipients for an e-mail,
        channels for a chat message, accounts for a transfer, hosts for a URL."""
        if parts.scheme == "mailto":
            return self.emails
        if parts.scheme == "iban":
            return self.ibans
        if "#" in parts.address:
            return self.channels
        return self.hosts if parts.host is not None else frozenset()


@lru_cache(maxsize=8192)
def parse_intent(text: str) -> ParsedIntent:
    """Concepts asked for and values named by an intent (cached per text).

    >>> parsed = parse_intent("Email the Q3 report to bob@partner.example; post on wiki.acme.org")
    >>> sorted(parsed.concepts), sorted(parsed.emails), sorted(parsed.domains)
    (['message', 'read', 'share'], ['bob@partner.example'], ['acme.org', 'partner.example'])
    """
    emails = {m.lower() for m in _EMAIL.findall(text)}
    urls = _URL.findall(text)
    rest = _URL.sub(" ", _EMAIL.sub(" ", text))
    paths = {m.lower() for m in _PATH.findall(rest)}
    rest = _PATH.sub(" ", rest)
    hosts = {host for host in map(public_host, _HOST.findall(rest)) if host is not None}
    for url in urls:
        parts = parse_target(url)
        if parts.host:
            hosts.add(parts.host)
    domains = {_registrable(h) for h in hosts} | {e.rpartition("@")[2] for e in emails}
    domains |= {_registrable(e.rpartition("@")[2]) for e in emails}
    ibans = {m.replace(" ", "") for m in _IBAN.findall(text)}
    identifiers = {
        m.lower().lstrip("#") for m in _IDENT.findall(rest) if len(m.lstrip("#")) >= 3
    }
    identifiers |= {
        t for quoted in _QUOTED.findall(text) for t in re.split(r"[^a-z0-9_#-]+", quoted.lower())
        if len(t) >= 4 and not _STEM_CONCEPTS.get(stem(t))
    }
    channels = {channel.lower() for channel in _CHANNEL.findall(rest)}
    concepts = asked_concepts(rest)
    if _ACCESS_PHRASE.search(rest):
        concepts |= {"access"}
    return ParsedIntent(
        text=text,
        concepts=concepts,
        emails=frozenset(emails),
        hosts=frozenset(hosts),
        domains=frozenset(domains),
        ibans=frozenset(ibans),
        channels=frozenset(channels),
        identifiers=frozenset(identifiers),
        paths=frozenset(paths),
        words=frozenset(
            w.replace("-", "") for w in re.findall(r"[a-z0-9-]+", rest.lower()) if len(w) >= 4
        ),
        privileged=bool(_PRIVILEGED.search(text)),
        handles=frozenset(h.lower() for h in _HANDLE_IN_TEXT.findall(rest)),
        delegates=_delegation(text),
    )


@lru_cache(maxsize=8192)
def _tool_concepts(name: str, description: str, action: str) -> frozenset[str]:
    """The concepts that describe what a tool does, preferring those of its action class."""
    found = concepts_of(name) | concepts_of(description)
    own = found & _CLASS_CONCEPTS.get(action, frozenset())
    if own:
        return own
    named = concepts_of(name)
    return named or found


@dataclass(frozen=True, slots=True)
class IntentCheck:
    """How one call relates to its intent.

    ``credit`` is how far the intent asks for the tool's action (1 asked, 0.5
    related or an implied read, 0 not asked); ``deviation`` is ``(1 - credit)``
    times the action's risk; ``asked`` lists the intent's concepts and
    ``tool_concepts`` the tool's, for explanations. ``named_instead`` lists,
    for a send or delete to a target the intent does not name, the destinations
    or records of the same kind it does name (an e-mail to x@evil.example when
    the intent names jane@customer-co.com; a post to #general when it names
    #sales-pipeline; ticket 93336 deleted when it names tickets 51796 and 44970).
    """

    credit: float
    deviation: float
    target_named: bool
    domain_named: bool
    asked: frozenset[str]
    tool_concepts: frozenset[str]
    named_instead: frozenset[str] = frozenset()
    unnamed_parties: tuple[str, ...] = ()
    """Parties in the call's arguments (recipients, logins, owners) the intent does not name:
    for an admin call any, for a send only when the intent names its parties at all."""
    unapproved_privilege: str | None = None
    """An administrative privilege level the call hands out that the intent does not ask for."""
    other_objects: frozenset[str] = frozenset()
    """For a delete the intent asks for: the kinds of thing the tool deletes when the intent
    mentions none of them (asked to delete branches, deletes deployments)."""


def align(
    intent: str,
    tool: ToolInfo,
    target: str | None,
    parties: tuple[str, ...] = (),
    privilege: str | None = None,
) -> IntentCheck:
    """Compare one call (its tool, target and the parties its arguments name) with the intent.

    An empty intent cannot approve or disapprove anything: its deviation is 0
    and nothing is named (grant conformance still applies). A send to a
    recipient or service the intent names is at least half asked for.

    >>> check = align("Add Lena to the sales group", ToolInfo("okta.add_user_to_group", "admin"),
    ...     "https://acme.okta.com/groups/super-admins", ("mailto:eve@evil.example",), "admin")
    >>> check.unnamed_parties, check.unapproved_privilege
    (('mailto:eve@evil.example',), 'admin')
    """
    parsed = parse_intent(intent)
    if not intent.strip():
        parties, privilege = (), None
    credit, concepts, others = _action_credit(intent, tool.name, tool.description, tool.action)
    named = domain_named = False
    instead: frozenset[str] = frozenset()
    if target:
        parts = parse_target(target)
        named = parsed.names_target(parts)
        domain_named = named or parsed.names_domain(parts)
        if not named and tool.action == "send":
            instead = parsed.destinations(parts)
        elif not named and tool.action == "delete":  # deleting other records than named
            instead = parsed.destinations(parts) | parsed.records_like(parts)
        if domain_named and tool.action == "send":
            credit = max(credit, _RELATED_CREDIT)  # sending to whom the intent names
    risk = ACTION_RISK.get(tool.action, ACTION_RISK["unknown"])
    return IntentCheck(
        credit=credit,
        deviation=round((1.0 - credit) * risk, 6),
        target_named=named,
        domain_named=domain_named,
        asked=parsed.concepts,
        tool_concepts=concepts,
        named_instead=instead,
        unnamed_parties=tuple(p for p in parties if not _names_party(parsed, p)) if (
            tool.action == "admin" or parsed.emails or parsed.hosts or parsed.ibans
        ) else (),
        unapproved_privilege=None if parsed.privileged else privilege,
        other_objects=others,
    )


def _names_party(parsed: ParsedIntent, party: str) -> bool:
    parts = parse_target(party)
    return parsed.names_target(parts) or parsed.names_domain(parts)


@lru_cache(maxsize=16384)
def _action_credit(
    intent: str, name: str, description: str, action: str
) -> tuple[float, frozenset[str], frozenset[str]]:
    """How far ``intent`` asks for what the tool does, the tool's concepts, and the kinds
    of thing a delete it asks for acts on when the intent names others (cached per
    intent and tool)."""
    asked = parse_intent(intent).concepts
    concepts = _tool_concepts(name, description, action)
    none: frozenset[str] = frozenset()
    if not intent.strip():
        return 1.0, concepts, none
    if concepts & asked:
        others = _other_objects(intent, name) if action == "delete" else none
        # asked to delete, but something else: half credit
        return (_RELATED_CREDIT if others else 1.0), concepts, others
    if any(asked & _RELATED.get(c, frozenset()) for c in concepts):
        return _RELATED_CREDIT, concepts, none
    # every intent implies some reading, but not a bulk export nobody asked for
    if concepts == {"read"} or (not concepts and action in ("read", "unknown")) or (
        action == "read" and "export" not in concepts
    ):
        return _IMPLIED_READ_CREDIT, concepts, none
    return 0.0, concepts, none


_GENERIC_OBJECTS = frozenset(
    stem(w) for w in ("object", "objects", "record", "item", "entry", "resource", "data", "all")
)
"""Object words that stand for anything (``s3.delete_object``): they never mismatch."""


_OBJECT_SYNONYMS: tuple[frozenset[str], ...] = tuple(
    frozenset(stem(w) for w in group) for group in (
        ("file", "document", "doc", "attachment", "upload", "report", "sheet", "spreadsheet"),
        ("ticket", "case", "issue", "request", "incident"),
        ("branch", "ref", "tag"),
        ("user", "account", "member", "login", "identity", "employee", "person"),
        ("message", "email", "mail"),
        ("deployment", "workload"),
        ("candidate", "applicant", "application"),
        ("invoice", "bill"),
        ("contact", "lead", "customer", "prospect"),
        ("event", "meeting", "invite"),
    )
)
"""Kinds of thing that an intent may name in other words (purge documents → delete_file)."""


def _other_objects(intent: str, name: str) -> frozenset[str]:
    """The kinds of thing a tool acts on (``k8s.delete_deployment`` → deployment) when the
    intent mentions none of them; empty when it does or the tool names no specific kind.

    >>> sorted(_other_objects("Delete merged branches in acme/app", "k8s.delete_deployment"))
    ['deployment']
    >>> _other_objects("Delete merged branches in acme/app", "github.delete_branch")
    frozenset()
    """
    objects = _tool_objects(name)
    if not objects:
        return frozenset()
    kinds = set(objects)
    for group in _OBJECT_SYNONYMS:
        if not group.isdisjoint(objects):
            kinds |= group
    return frozenset() if not kinds.isdisjoint(_intent_stems(intent)) else objects


@lru_cache(maxsize=4096)
def _tool_objects(name: str) -> frozenset[str]:
    operation = name.rsplit(".", 1)[-1]
    return frozenset(
        stem(word) for word in _words(operation)
        if len(word) >= 3 and not _STEM_CONCEPTS.get(stem(word))
        and stem(word) not in _GENERIC_OBJECTS
    )


@lru_cache(maxsize=8192)
def _intent_stems(intent: str) -> frozenset[str]:
    stems = set()
    for word in _words(intent):
        stems.add(stem(word))
        stems.update(stem(part) for part in word.split("-") if part)
    return frozenset(stems)
