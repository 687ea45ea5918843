"""PURE JSON shapes of the WebSocket API: message summaries, the full
message view, change-log events, and the search/wait filters.

Summaries come from what the store computed once at delivery (the IMAP
ENVELOPE and the decoded header fields), so listing never re-parses a
message; only ``message`` and text filters read the content.  Filters reuse
the IMAP SEARCH evaluator, so ``search`` here and IMAP SEARCH agree.
"""

from __future__ import annotations

import base64
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from mailstack import mime
from mailstack.imap import search
from mailstack.imap.commands import SearchKey
from mailstack.store.records import Change, ChangeKind, MailboxRecord, MessageRecord
from mailstack.websocket.protocol import Criteria

# ENVELOPE positions (RFC 9051 7.5.2, mime.envelope_of).
_FROM, _TO, _CC = 2, 5, 6


def _addresses(entries: Any) -> list[str]:
    """addr-specs of an ENVELOPE address list; group markers are skipped."""
    found: list[str] = []
    for entry in entries or ():
        _name, _adl, mailbox, host = entry
        if mailbox is not None and host is not None:
            found.append(f"{mailbox}@{host}")
    return found


def _sent_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError, IndexError):
        return None


def message_summary(record: MessageRecord, mailbox: str) -> dict[str, Any]:
    envelope = record.envelope or [None] * 10
    senders = _addresses(envelope[_FROM])
    return {
        "mailbox": mailbox,
        "uid": record.uid,
        "from": senders[0] if senders else None,
        "to": _addresses(envelope[_TO]),
        "cc": _addresses(envelope[_CC]),
        "subject": record.headers.get("subject"),
        # The Date field, or the arrival time for a message without one.
        "date": _sent_date(record.headers.get("date")) or record.internal_date.isoformat(),
        "received": record.internal_date.isoformat(),
        "size": record.size,
        "flags": sorted(record.flags),
        "message_id": record.headers.get("message-id"),
    }


def mailbox_summary(mailbox: MailboxRecord) -> dict[str, Any]:
    return {
        "name": mailbox.name,
        "messages": mailbox.messages,
        "unseen": mailbox.unseen,
        "size": mailbox.size,
        "uidvalidity": mailbox.uidvalidity,
        "uidnext": mailbox.uidnext,
        "special_use": mailbox.special_use,
    }


def _param(params: list[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in params if key.lower() == name), None)


def _filename(part: mime.Part) -> str | None:
    disposition = mime.parse_disposition(part.header("content-disposition"))
    name = _param(disposition[1], "filename") if disposition else None
    name = name or _param(part.params, "name")
    return mime.decode_words(name) if name else None


def message_detail(record: MessageRecord, mailbox: str, raw: bytes, *, with_raw: bool) -> Any:
    """The summary plus the text and HTML bodies, the attachment list and
    (``with_raw``) the RFC 5322 text: ``raw`` when it is UTF-8, else
    ``raw_base64``."""
    detail = message_summary(record, mailbox)
    texts: list[str] = []
    htmls: list[str] = []
    attachments: list[dict[str, Any]] = []
    stack = [mime.parse_tree(raw)]
    while stack:
        part = stack.pop()
        if part.is_multipart:
            stack.extend(reversed(part.children))
            continue
        content_type = f"{part.type}/{part.subtype}".lower()
        filename = _filename(part)
        disposition = mime.parse_disposition(part.header("content-disposition"))
        inline_text = content_type in ("text/plain", "text/html") and not (
            filename or (disposition and disposition[0].lower() == "attachment")
        )
        if inline_text:
            (texts if content_type == "text/plain" else htmls).append(mime.text_content(raw, part))
            continue
        attachments.append(
            {
                "filename": filename,
                "content_type": content_type,
                "size": len(mime.decoded_body(raw, part)),
                "content_id": part.header("content-id"),
            }
        )
    detail["text"] = "\n".join(texts) if texts else None
    detail["html"] = "\n".join(htmls) if htmls else None
    detail["attachments"] = attachments
    if with_raw:
        try:
            detail["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            detail["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return detail


def change_event(change: Change, summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The event for one change-log row; ``summary`` is the new message's
    summary (``message.new`` only; None when it is already gone, then no
    event is sent)."""
    kind = change.kind
    if kind is ChangeKind.MESSAGE_NEW:
        if summary is None:
            return None
        return {"event": kind.value, **summary, "modseq": change.modseq}
    event: dict[str, Any] = {"event": kind.value, "mailbox": change.mailbox_name}
    if kind is ChangeKind.MESSAGE_FLAGS:
        event.update(uid=change.uid, flags=sorted(change.flags or ()), modseq=change.modseq)
    elif kind is ChangeKind.MESSAGE_EXPUNGED:
        event.update(uid=change.uid, modseq=change.modseq)
    elif kind is ChangeKind.MAILBOX_RENAMED:
        event.update(mailbox=change.detail.get("new", change.mailbox_name))
        event["old"] = change.detail.get("old")
    return event


# -- filters -------------------------------------------------------------------


def _search_key(criteria: Criteria) -> SearchKey:
    keys: list[SearchKey] = []
    if criteria.sender:
        keys.append(SearchKey("FROM", (criteria.sender,)))
    if criteria.recipient:
        # Where a recipient may be named: To, Cc or Bcc.
        to, cc, bcc = (SearchKey(op, (criteria.recipient,)) for op in ("TO", "CC", "BCC"))
        keys.append(SearchKey("OR", (to, SearchKey("OR", (cc, bcc)))))
    if criteria.subject:
        keys.append(SearchKey("SUBJECT", (criteria.subject,)))
    if criteria.text:
        keys.append(SearchKey("TEXT", (criteria.text,)))
    if criteria.unseen is not None:
        keys.append(SearchKey("UNSEEN" if criteria.unseen else "SEEN"))
    return SearchKey("AND", tuple(keys))


def needs_content(criteria: Criteria) -> bool:
    return criteria.text is not None


def matches(criteria: Criteria, record: MessageRecord, raw: bytes | None, now: datetime) -> bool:
    """Whether ``record`` passes every filter; ``raw`` is needed when
    :func:`needs_content` says so."""
    if criteria.since is not None and record.internal_date < criteria.since:
        return False
    candidate = search.Candidate(seq=0, record=record, flags=record.flags, raw=raw)
    return search.matches(_search_key(criteria), candidate, search.Scope(0, 0, now))
