"""CONDSTORE and QRESYNC (RFC 7162) against the store, called by handlers.py.

The rules (which commands enable CONDSTORE, UID-range arithmetic, the
sequence match data) are PURE in ``modseq.py``; this module reads the store
and writes the untagged responses.

What a resynchronising client is told (RFC 7162 3.2.5.2):

* ``VANISHED (EARLIER)``: the UIDs within its known-uids (default
  ``1:UIDNEXT-1``) expunged after its MODSEQ, from the change log.  When
  ``[imap] expunged_retention_days`` pruned part of that history the exact
  list is unknown, and the answer is every UID in the known range that is
  not in the mailbox now, less the UIDs the sequence match data proves were
  kept (``modseq.seq_match_bound``): a superset the RFC allows, never a
  miss.
* ``FETCH (UID FLAGS MODSEQ)`` for every message within known-uids whose
  MODSEQ is above the client's: flag changes and new messages alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailstack.imap import commands as c
from mailstack.imap import modseq, responses
from mailstack.imap.protocol import SessionState
from mailstack.imap.sequence import from_numbers
from mailstack.store.records import MailboxRecord, MessageRecord
from mailstack.store.resync import ResyncSnapshot

if TYPE_CHECKING:
    from mailstack.imap.handlers import Handlers


def condstore_on(session: SessionState) -> bool:
    return "CONDSTORE" in session.enabled


def qresync_on(session: SessionState) -> bool:
    return "QRESYNC" in session.enabled


def enable(session: SessionState, capability: str) -> None:
    """ENABLE or a CONDSTORE-enabling command (RFC 7162 3.1, 3.2.3: QRESYNC
    implies CONDSTORE)."""
    session.enabled.add(capability)
    if capability == "QRESYNC":
        session.enabled.add("CONDSTORE")


def select_problem(session: SessionState, cmd: c.Select) -> str | None:
    """RFC 7162 3.2.5: QRESYNC parameters need ENABLE QRESYNC first and
    well-formed sequence match data; the text of the BAD otherwise."""
    if cmd.qresync is None:
        return None
    if not qresync_on(session):
        return "ENABLE QRESYNC first"
    if cmd.qresync.seq_match is not None:
        return modseq.seq_match_problem(cmd.qresync.seq_match)
    return None


async def select_snapshot(
    h: Handlers, mailbox: MailboxRecord, cmd: c.Select
) -> ResyncSnapshot | None:
    """The store's state for a QRESYNC SELECT whose UIDVALIDITY matches (else
    None: RFC 7162 3.2.5.2, a plain SELECT then)."""
    params = cmd.qresync
    if params is None or params.uidvalidity != mailbox.uidvalidity:
        return None
    snapshot = await h.store.resync_snapshot(mailbox.id, params.modseq)
    if snapshot is None or snapshot.mailbox.uidvalidity != params.uidvalidity:
        return None
    return snapshot


async def send_resync(h: Handlers, snapshot: ResyncSnapshot, params: c.Qresync) -> None:
    """VANISHED (EARLIER) then FETCH of what changed (the view is set up)."""
    _, view = h._selected()
    known = modseq.uid_ranges(params.known_uids, snapshot.mailbox.uidnext - 1)
    if snapshot.vanished is not None:
        gone = modseq.uids_to_ranges([u for u in snapshot.vanished if modseq.contains(known, u)])
    else:
        bound = 0
        if params.seq_match is not None:
            bound = modseq.seq_match_bound(params.seq_match, view.exists, view.uid_of)
        gone = modseq.missing(modseq.above(known, bound), view.uids.to_list())
    for line in modseq.vanished_lines(gone, earlier=True):
        await h.send(line)
    for record in snapshot.changed:
        seq = view.seq_of(record.uid)
        if seq is not None and modseq.contains(known, record.uid):
            await h.send(_flags_fetch(seq, record, uid=True))


def _flags_fetch(seq: int, record: MessageRecord, *, uid: bool) -> bytes:
    uid_part = b"UID %d " % record.uid if uid else b""
    return b"* %d FETCH (%sFLAGS %s MODSEQ (%d))\r\n" % (
        seq,
        uid_part,
        responses.flag_list(record.flags),
        record.modseq,
    )


def fetch_problem(session: SessionState, cmd: c.Fetch) -> str | None:
    """RFC 7162 3.2.6: the VANISHED modifier needs ENABLE QRESYNC first."""
    if cmd.vanished and not qresync_on(session):
        return "ENABLE QRESYNC first"
    return None


def fetch_items(session: SessionState, cmd: c.Fetch, items: list[c.FetchAtt]) -> None:
    """CHANGEDSINCE implies MODSEQ (RFC 7162 3.1.4.1); with CONDSTORE on,
    every FETCH carrying FLAGS carries MODSEQ too (3.2.4)."""
    wants_flags = any(i.name == "FLAGS" for i in items)
    if any(i.name == "MODSEQ" for i in items):
        return
    if cmd.changed_since is not None or (wants_flags and condstore_on(session)):
        items.append(c.FetchAtt("MODSEQ"))


async def send_fetch_vanished(h: Handlers, cmd: c.Fetch) -> None:
    """``UID FETCH set (CHANGEDSINCE n VANISHED)``: the UIDs of ``set``
    expunged after ``n`` (RFC 7162 3.2.6), before the FETCH responses.

    UIDs this session still shows (an expunge not yet announced) are left
    to the VANISHED that announces them."""
    assert cmd.changed_since is not None
    mailbox, view = h._selected()
    uid_max = max(mailbox.uidnext - 1, view.uids.max)
    if cmd.sequence.saved:
        asked = modseq.uids_to_ranges(list(h.saved))
    else:
        asked = modseq.uid_ranges(cmd.sequence, uid_max)
    expunged = await h.store.expunged_since(mailbox.id, cmd.changed_since)
    if expunged is None:
        gone = modseq.missing(asked, view.uids.to_list())
    else:
        gone = modseq.uids_to_ranges(
            [u for u in expunged if modseq.contains(asked, u) and view.seq_of(u) is None]
        )
    for line in modseq.vanished_lines(gone, earlier=True):
        await h.send(line)


async def store_responses(
    h: Handlers,
    cmd: c.Store,
    uids: list[int],
    changed: list[MessageRecord],
    failed: list[int],
) -> str:
    """The untagged FETCHes of a STORE and the MODIFIED code (RFC 7162 3.1.3).

    Messages that failed UNCHANGEDSINCE get no FETCH (the code names them);
    with .SILENT and CONDSTORE on, each changed message still gets
    ``FETCH (MODSEQ (n))`` so the client's cache learns its new MODSEQ."""
    _, view = h._selected()
    condstore = condstore_on(h.session)
    refused = set(failed)
    if cmd.silent:
        if condstore:
            for record in changed:
                seq = view.seq_of(record.uid)
                if seq is not None:
                    uid_part = b"UID %d " % record.uid if cmd.uid else b""
                    await h.send(b"* %d FETCH (%sMODSEQ (%d))\r\n" % (seq, uid_part, record.modseq))
    else:
        # RFC 9051 6.4.6: the new flags of every message in the set.
        current = {r.uid: r for r in changed}
        unchanged = [u for u in uids if u not in current and u not in refused]
        current.update((r.uid, r) for r in await h._records(unchanged))
        for uid in uids:
            seq = view.seq_of(uid)
            now = current.get(uid)
            if seq is None or now is None:
                continue
            if condstore:
                await h.send(_flags_fetch(seq, now, uid=cmd.uid))
            else:
                uid_part = b"UID %d " % uid if cmd.uid else b""
                await h.send(
                    b"* %d FETCH (%sFLAGS %s)\r\n" % (seq, uid_part, responses.flag_list(now.flags))
                )
    if not failed:
        return ""
    numbers = sorted(failed) if cmd.uid else sorted(view.seq_of(u) or 0 for u in failed)
    return "MODIFIED " + from_numbers([n for n in numbers if n])


async def search_modseq(
    h: Handlers, key: c.SearchKey, found: Sequence[int], returns: tuple[str, ...] | None
) -> int | None:
    """The MODSEQ a SEARCH/ESEARCH result carries (RFC 7162 3.1.5, 3.1.10):
    the highest of the messages returned, when the criteria used MODSEQ and
    something matched.  With only MIN/MAX returned, of those messages."""
    if not found or not modseq.uses_modseq(key):
        return None
    reported: Sequence[int] = found
    if returns is not None and not {"ALL", "COUNT"} & set(returns):
        picked = []
        if "MIN" in returns:
            picked.append(found[0])
        if "MAX" in returns:
            picked.append(found[-1])
        reported = picked
    if not reported:
        return None
    mailbox, _ = h._selected()
    wanted = set(reported)
    records = await h.cache.records(h.store, mailbox)
    return max((r.modseq for r in records if r.uid in wanted), default=None)
