"""SORT, ESORT and THREAD (RFC 5256, RFC 5267, RFC 5957) joined to the store.

The matching messages come from the same search as SEARCH; what they are
ordered by comes from the keys stored with each message at delivery
(``sort_keys.py``), so no message is read or parsed here.  The ordering
itself is in the PURE modules sort.py and thread.py.
"""

from __future__ import annotations

from typing import Any

from mailstack import mime
from mailstack.imap import commands as c
from mailstack.imap import responses, sort_keys, thread
from mailstack.imap.handlers import CommandFailed, Handlers
from mailstack.imap.sort import Sortable, order
from mailstack.store.records import MessageRecord

# Keys derived for messages stored before they were kept (bounded memory).
MAX_DERIVED = 100_000
_derived: dict[int, dict[str, Any]] = {}
ESORT_RETURNS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})


def keys_of(record: MessageRecord) -> dict[str, Any]:
    """The stored keys, or (older messages) keys derived from the stored
    headers and ENVELOPE, once per process."""
    if record.sort_keys is not None:
        return record.sort_keys
    keys = _derived.get(record.id)
    if keys is None:
        if len(_derived) >= MAX_DERIVED:
            _derived.clear()
        keys = sort_keys.derive(record.headers, record.envelope, mime.decode_words)
        _derived[record.id] = keys
    return keys


async def _matching(h: Handlers, key: c.SearchKey, charset: str, uid: bool) -> list[Sortable]:
    mailbox, view = h._selected()
    found: set[int] = set(await h.search_uids(key, charset))
    records = await h.cache.records(h.store, mailbox)
    items: list[Sortable] = []
    for record in records:
        if record.uid not in found:
            continue
        seq = view.seq_of(record.uid)
        if seq is None:
            continue
        items.append(
            Sortable(
                number=record.uid if uid else seq,
                position=seq,
                # Whole seconds, as clients see INTERNALDATE.
                arrival=int(record.internal_date.timestamp()),
                size=record.size,
                keys=keys_of(record),
            )
        )
    return items


async def sort(h: Handlers, cmd: c.Sort, tag: str) -> str:
    items = order(await _matching(h, cmd.key, cmd.charset, cmd.uid), cmd.criteria)
    numbers = [item.number for item in items]
    if cmd.returns is None:
        await h.send(responses.untagged(" ".join(["SORT", *map(str, numbers)])))
        return "Sort completed"
    # RFC 5267 3: ESORT answers with ESEARCH; MIN/MAX are the first and last
    # in sort order and ALL keeps the sort order.
    returns = set(cmd.returns)
    if returns - ESORT_RETURNS:
        raise CommandFailed("Unsupported RETURN option", status="BAD")
    if "SAVE" in returns:
        # RFC 5182: the saved result is a set; kept in mailbox order.
        _, view = h._selected()
        h.saved = tuple(view.uid_of(i.position) for i in sorted(items, key=lambda i: i.position))
        returns.discard("SAVE")
        if not returns:
            return "Sort completed"
    await h.send(responses.esearch(tag, cmd.uid, returns, numbers, in_sort_order=True))
    return "Sort completed"


async def thread_command(h: Handlers, cmd: c.Thread) -> str:
    if cmd.algorithm not in thread.ALGORITHMS:
        raise CommandFailed(f"Unknown threading algorithm {cmd.algorithm}", status="BAD")
    items = await _matching(h, cmd.key, cmd.charset, cmd.uid)
    if cmd.algorithm == "ORDEREDSUBJECT":
        roots = thread.ordered_subject(items)
    else:
        roots = thread.references(items)
    text = thread.serialize(roots)
    await h.send(responses.untagged(f"THREAD {text}" if text else "THREAD"))
    return "Thread completed"
