"""PURE WebSocket API protocol (docs/websocket.md, version 1).

Text frames carry one JSON object each.  The client sends requests
``{"id": ..., "type": ..., ...}``; the server answers each with
``{"id": <same>, "ok": true, "result": ...}`` or
``{"id": <same>, "ok": false, "error": {"code": ..., "message": ...}}`` and
pushes events ``{"event": ..., ...}`` (no ``id``) as the account's mailboxes
change.  This module turns request text into typed requests (or a
:class:`RequestError` carrying the reply it implies), renders replies, and
reads HTTP Basic credentials from the handshake (RFC 7617).  No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mailstack.secret import Secret

PROTOCOL_VERSION = 1
# Ids are echoed verbatim; anything else than these JSON scalars is refused.
JsonId = str | int | float | None

DEFAULT_PAGE_SIZE = 50
DEFAULT_WAIT_SECONDS = 30.0


class RequestError(Exception):
    """A request that cannot be served; ``reply()`` is the error object to send."""

    def __init__(self, request_id: JsonId, code: str, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.code = code
        self.message = message

    def reply(self) -> dict[str, Any]:
        return error_reply(self.request_id, self.code, self.message)


@dataclass(frozen=True, slots=True)
class Criteria:
    """Filters of ``search`` and ``wait``: case-insensitive substrings, all must match."""

    sender: str | None = None
    recipient: str | None = None
    subject: str | None = None
    text: str | None = None
    since: datetime | None = None
    unseen: bool | None = None


@dataclass(frozen=True, slots=True)
class Mailboxes:
    pass


@dataclass(frozen=True, slots=True)
class Messages:
    mailbox: str
    after_uid: int
    limit: int


@dataclass(frozen=True, slots=True)
class GetMessage:
    mailbox: str
    uid: int
    raw: bool


@dataclass(frozen=True, slots=True)
class Search:
    mailbox: str
    criteria: Criteria
    limit: int


@dataclass(frozen=True, slots=True)
class SetFlags:
    mailbox: str
    uids: tuple[int, ...]
    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Move:
    mailbox: str
    uids: tuple[int, ...]
    target: str


@dataclass(frozen=True, slots=True)
class Delete:
    mailbox: str
    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    mailbox: str
    criteria: Criteria
    timeout: float
    after_uid: int | None  # None: only messages arriving after the request


Operation = Mailboxes | Messages | GetMessage | Search | SetFlags | Move | Delete | Wait


@dataclass(frozen=True, slots=True)
class Request:
    id: JsonId
    type: str
    operation: Operation


@dataclass(frozen=True, slots=True)
class Limits:
    max_page_size: int
    max_wait_seconds: float


@dataclass(slots=True)
class _Params:
    """Typed access to a request's members; every mistake names the member."""

    request_id: JsonId
    body: Mapping[str, Any]
    used: set[str] = field(default_factory=lambda: {"id", "type"})

    def _bad(self, message: str) -> RequestError:
        return RequestError(self.request_id, "bad_request", message)

    def _get(self, name: str) -> Any:
        self.used.add(name)
        return self.body.get(name)

    def string(self, name: str, default: str | None = None) -> str:
        value = self._get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or not value:
            raise self._bad(f"{name!r} must be a non-empty string")
        return value

    def optional_string(self, name: str) -> str | None:
        return None if self._get(name) is None else self.string(name)

    def integer(self, name: str, default: int | None = None, *, minimum: int = 0) -> int:
        value = self._get(name)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(f"{name!r} must be an integer >= {minimum}")
        return value

    def optional_integer(self, name: str) -> int | None:
        return None if self._get(name) is None else self.integer(name)

    def number(self, name: str, default: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self._bad(f"{name!r} must be a non-negative number of seconds")
        return float(value)

    def optional_bool(self, name: str) -> bool | None:
        value = self._get(name)
        if value is not None and not isinstance(value, bool):
            raise self._bad(f"{name!r} must be true or false")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._bad(f"{name!r} must be a list of non-empty strings")
        return tuple(value)

    def uids(self) -> tuple[int, ...]:
        """``uids`` (a list) or ``uid`` (one number)."""
        if self.body.get("uid") is not None:
            return (self.integer("uid", minimum=1),)
        value = self._get("uids")
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise self._bad("give 'uid' (a number) or 'uids' (a non-empty list of numbers)")
        self.used.add("uid")
        return tuple(value)

    def timestamp(self, name: str) -> datetime | None:
        value = self._get(name)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                try:
                    day = date.fromisoformat(value)
                except ValueError:
                    raise self._bad(f"{name!r} must be an ISO 8601 date or time") from None
                parsed = datetime(day.year, day.month, day.day)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        raise self._bad(f"{name!r} must be an ISO 8601 date or time string")

    def criteria(self) -> Criteria:
        return Criteria(
            sender=self.optional_string("from"),
            recipient=self.optional_string("to"),
            subject=self.optional_string("subject"),
            text=self.optional_string("text"),
            since=self.timestamp("since"),
            unseen=self.optional_bool("unseen"),
        )

    def finish(self) -> None:
        unknown = sorted(set(self.body) - self.used)
        if unknown:
            raise self._bad(f"unknown member(s): {', '.join(unknown)}")


def _operation(kind: str, p: _Params, limits: Limits) -> Operation:
    def page(name: str = "limit") -> int:
        return min(p.integer(name, DEFAULT_PAGE_SIZE, minimum=1), limits.max_page_size)

    if kind == "mailboxes":
        return Mailboxes()
    if kind == "messages":
        return Messages(p.string("mailbox", "INBOX"), p.integer("after_uid", 0), page())
    if kind == "message":
        raw = p.optional_bool("raw")
        return GetMessage(
            p.string("mailbox", "INBOX"), p.integer("uid", minimum=1), raw is not False
        )
    if kind == "search":
        return Search(p.string("mailbox", "INBOX"), p.criteria(), page())
    if kind == "flags":
        mailbox, uids = p.string("mailbox", "INBOX"), p.uids()
        add, remove = p.strings("add"), p.strings("remove")
        if not add and not remove:
            raise RequestError(p.request_id, "bad_request", "give 'add' and/or 'remove' flags")
        return SetFlags(mailbox, uids, add, remove)
    if kind == "move":
        return Move(p.string("mailbox", "INBOX"), p.uids(), p.string("to"))
    if kind == "delete":
        return Delete(p.string("mailbox", "INBOX"), p.uids())
    if kind == "wait":
        mailbox, criteria = p.string("mailbox", "INBOX"), p.criteria()
        timeout = p.number("timeout", DEFAULT_WAIT_SECONDS)
        if timeout > limits.max_wait_seconds:
            raise RequestError(
                p.request_id,
                "bad_request",
                f"'timeout' must be at most {limits.max_wait_seconds:g} seconds",
            )
        return Wait(mailbox, criteria, timeout, p.optional_integer("after_uid"))
    raise RequestError(p.request_id, "unknown_type", f"unknown request type {kind!r}")


REQUEST_TYPES = ("mailboxes", "messages", "message", "search", "flags", "move", "delete", "wait")


def parse_request(text: str | bytes, limits: Limits) -> Request:
    """One client frame -> a Request; raises RequestError (with the id when
    one could be read) for malformed JSON, a missing type or bad members."""
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(None, "bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(None, "bad_request", "a request is a JSON object")
    request_id = body.get("id")
    if isinstance(request_id, dict | list):
        raise RequestError(None, "bad_request", "'id' must be a string or a number")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise RequestError(request_id, "bad_request", "'type' must be a string")
    params = _Params(request_id, body)
    operation = _operation(kind, params, limits)
    params.finish()
    return Request(request_id, kind, operation)


# -- replies -----------------------------------------------------------------


def encode(message: Mapping[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def result_reply(request_id: JsonId, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_reply(request_id: JsonId, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def hello_event(account: str, server_version: str) -> dict[str, Any]:
    """The first frame after the handshake: the feed is live from here on."""
    return {
        "event": "hello",
        "version": PROTOCOL_VERSION,
        "account": account,
        "server": f"mailstack {server_version}",
    }


# -- handshake ---------------------------------------------------------------


def basic_credentials(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, Secret[str]] | None:
    """``Authorization: Basic base64(user ":" password)`` (RFC 7617 2, UTF-8
    per 2.1), or None when absent or malformed."""
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        user, colon, password = decoded.partition(":")
        if not colon or not user:
            return None
        return user, Secret(password)
    return None


def basic_authorization(user: str, password: str) -> tuple[bytes, bytes]:
    """The header a client sends (used by ``mailstack watch`` and the tests)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return b"Authorization", f"Basic {token}".encode("ascii")
