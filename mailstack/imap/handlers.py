"""The IMAP commands that touch the store (RFC 9051 6), run by server.py.

Each handler sends its untagged responses through ``send`` as it goes (a
FETCH of 10,000 messages is never held whole in memory) and returns the
tagged completion.  Parsing, state rules and serialization are in the PURE
modules; this file only joins them to the Store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import trio

from mailstack import mime
from mailstack.imap import bodystructure, condstore, responses
from mailstack.imap import commands as c
from mailstack.imap.mailbox_view import MailboxView
from mailstack.imap.mutf7 import Mutf7Error
from mailstack.imap.protocol import (
    ENABLEABLE,
    SessionState,
    State,
    list_matches,
    valid_mailbox_name,
)
from mailstack.imap.search import Candidate, Scope, matches, needs_content
from mailstack.imap.sequence import SequenceSet, from_numbers
from mailstack.secret import Secret
from mailstack.service import ServiceContext
from mailstack.store.records import (
    SYSTEM_FLAGS,
    AccountRecord,
    AlreadyExists,
    Change,
    ChangeKind,
    InvalidName,
    MailboxRecord,
    MessageRecord,
    NotFound,
    OverQuota,
    TooBig,
)
from mailstack.store.store import Store

Send = Callable[[bytes], Awaitable[None]]
SYSTEM_FLAG_LIST = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
# RFC 5258 / 6154 / 5819 LIST options we know.
LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"})
# Serialized ENVELOPEs kept (about 300 bytes each).
MAX_CACHED_ENVELOPES = 100_000
# Messages whose content SEARCH reads in one store round trip.
SEARCH_BATCH = 200
# Threads decoding message bodies for SEARCH at once (the GIL makes more useless).
SEARCH_LIMITER = trio.CapacityLimiter(2)
# Message contents FETCH reads in one store round trip (bounds memory too).
FETCH_BATCH = 50


class RecordCache:
    """The message list of recently read mailboxes, shared by all sessions of
    this process: ten clients fetching ``1:*`` of the same 10,000 messages
    cost one store read, not ten.  An entry is used only while the mailbox's
    HIGHESTMODSEQ, UIDNEXT and message count are unchanged (every change to
    its messages moves one of them), so it is never stale.  Serialized
    ENVELOPEs are kept too, by message row id (a message never changes)."""

    def __init__(self, max_mailboxes: int = 4) -> None:
        self.max_mailboxes = max_mailboxes
        self._entries: dict[int, tuple[tuple[int, int, int], list[MessageRecord]]] = {}
        self._locks: dict[int, trio.Lock] = {}
        self._envelopes: dict[tuple[int, bool], bytes] = {}

    def envelope(self, record: MessageRecord, utf8: bool) -> bytes:
        """A message's serialized ENVELOPE (it never changes: computed once)."""
        key = (record.id, utf8)
        data = self._envelopes.get(key)
        if data is None:
            if len(self._envelopes) >= MAX_CACHED_ENVELOPES:
                self._envelopes.clear()
            data = responses.envelope(record.envelope, utf8=utf8)
            self._envelopes[key] = data
        return data

    def cached(self, mailbox: MailboxRecord) -> list[MessageRecord] | None:
        """The entry for a just-read ``mailbox`` record, if still current (no store read)."""
        entry = self._entries.get(mailbox.id)
        version = (mailbox.highestmodseq, mailbox.uidnext, mailbox.messages)
        return entry[1] if entry is not None and entry[0] == version else None

    async def records(self, store: Store, mailbox: MailboxRecord) -> list[MessageRecord]:
        lock = self._locks.setdefault(mailbox.id, trio.Lock())
        async with lock:  # one reader per mailbox; the others then hit
            current = await store.get_mailbox(mailbox.account_id, mailbox.name)
            if current is None or current.id != mailbox.id:
                return await store.list_messages(mailbox.id)
            version = (current.highestmodseq, current.uidnext, current.messages)
            entry = self._entries.get(mailbox.id)
            if entry is not None and entry[0] == version:
                return entry[1]
            records = await store.list_messages(mailbox.id)
            self._entries.pop(mailbox.id, None)
            while len(self._entries) >= self.max_mailboxes:
                del self._entries[next(iter(self._entries))]
            self._entries[mailbox.id] = (version, records)
            if len(self._locks) > 4 * self.max_mailboxes:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return records


class CommandFailed(Exception):
    """Answered with a tagged NO (or BAD) carrying ``code`` and ``text``."""

    def __init__(self, text: str, code: str = "", status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


class Handlers:
    def __init__(
        self, ctx: ServiceContext, session: SessionState, send: Send, cache: RecordCache
    ) -> None:
        self.ctx = ctx
        self.cache = cache
        self.store = ctx.store
        self.session = session
        self.send = send
        self.account: AccountRecord | None = None
        self.mailbox: MailboxRecord | None = None
        self.view: MailboxView | None = None
        self.readonly = False
        self.saved: tuple[int, ...] = ()  # RFC 5182 search result (UIDs)

    # -- helpers -------------------------------------------------------------
    @property
    def account_id(self) -> int:
        assert self.account is not None
        return self.account.id

    def _name(self, wire: str) -> str:
        try:
            return self.session.decode_name(wire)
        except Mutf7Error:
            raise CommandFailed("Mailbox name is not valid modified UTF-7", "CANNOT") from None

    async def _mailbox(self, wire: str, missing_code: str = "NONEXISTENT") -> MailboxRecord:
        mailbox = await self.store.get_mailbox(self.account_id, self._name(wire))
        if mailbox is None:
            raise CommandFailed("No such mailbox", missing_code)
        return mailbox

    def _quote_name(self, name: str) -> bytes:
        return responses.astring(self.session.encode_name(name), utf8=self.session.utf8)

    def _selected(self) -> tuple[MailboxRecord, MailboxView]:
        assert self.mailbox is not None and self.view is not None
        return self.mailbox, self.view

    def _target_uids(self, seqs: SequenceSet, uid: bool) -> list[int]:
        _, view = self._selected()
        if seqs.saved:
            return [u for u in self.saved if view.seq_of(u) is not None]
        if uid:
            return seqs.select_uids(view.uids.to_list())
        if view.exists == 0:
            return []
        numbers = seqs.sequence_numbers(view.exists)
        if numbers is None:
            raise CommandFailed("Invalid message sequence number", status="BAD")
        return [view.uid_of(n) for n in numbers]

    async def _records(self, uids: list[int]) -> list[MessageRecord]:
        if not uids:
            return []
        mailbox, view = self._selected()
        if len(uids) * 2 < view.exists:
            return await self.store.get_messages(mailbox.id, uids)
        # Most of the mailbox: one ordered scan beats many UID lookups.
        wanted = set(uids)
        records = await self.cache.records(self.store, mailbox)
        return [r for r in records if r.uid in wanted]

    def note_change(self, change: Change) -> None:
        """A change from the store's channel (other sessions, deliveries)."""
        if self.view is None or change.mailbox_id != self.view.mailbox_id or change.uid is None:
            return
        if change.kind is ChangeKind.MESSAGE_NEW:
            self.view.message_added(change.uid)
        elif change.kind is ChangeKind.MESSAGE_EXPUNGED:
            self.view.message_expunged(change.uid, change.modseq)
        elif change.kind is ChangeKind.MESSAGE_FLAGS and change.flags is not None:
            self.view.flags_changed(change.uid, change.flags, change.modseq)

    async def flush(self, *, expunges_allowed: bool) -> None:
        if self.view is not None and self.view.has_pending:
            lines = self.view.flush(
                expunges_allowed=expunges_allowed,
                condstore=condstore.condstore_on(self.session),
                qresync=condstore.qresync_on(self.session),
            )
            for line in lines:
                await self.send(line)

    async def announce_expunged(self, uids: list[int]) -> None:
        """This session's own EXPUNGE/MOVE: EXPUNGE responses, or one VANISHED
        once QRESYNC is on (RFC 7162 3.2.10)."""
        assert self.view is not None
        shown = sorted(u for u in set(uids) if self.view.seq_of(u) is not None)
        numbers = self.view.remove_now(shown)
        if condstore.qresync_on(self.session):
            if shown:
                await self.send(b"* VANISHED %s\r\n" % from_numbers(shown).encode())
            return
        for seq in numbers:
            await self.send(b"* %d EXPUNGE\r\n" % seq)

    # -- commands ---------------------------------------------------------------
    async def login(self, username: str, password: str, peer_ip: str) -> AccountRecord | None:
        return await self.ctx.auth.verify(username, Secret(password), peer_ip=peer_ip)

    async def enable(self, cmd: c.Enable) -> str:

        newly = [
            cap for cap in cmd.capabilities if cap in ENABLEABLE and cap not in self.session.enabled
        ]
        for cap in newly:
            condstore.enable(self.session, cap)
        names = {
            "IMAP4REV2": "IMAP4rev2",
            "UTF8=ACCEPT": "UTF8=ACCEPT",
            "CONDSTORE": "CONDSTORE",
            "QRESYNC": "QRESYNC",
        }
        await self.send(responses.untagged(" ".join(["ENABLED", *(names[n] for n in newly)])))
        return "Enabled"

    async def select(self, cmd: c.Select) -> tuple[str, str]:
        problem = condstore.select_problem(self.session, cmd)
        if problem is not None:
            raise CommandFailed(problem, status="BAD")
        if self.mailbox is not None:
            self.mailbox = None
            self.view = None
            self.session.state = State.AUTHENTICATED
            # RFC 9051 7.1 / RFC 7162 3.2.11: CLOSED marks where the old
            # mailbox's responses end.
            if self.session.rev2 or condstore.qresync_on(self.session):
                await self.send(responses.untagged("OK [CLOSED] Previous mailbox closed"))
        mailbox = await self._mailbox(cmd.mailbox)
        resync = await condstore.select_snapshot(self, mailbox, cmd)
        cached = self.cache.cached(mailbox)
        if resync is not None:
            mailbox = resync.mailbox
            messages = resync.uid_flags
        elif cached is not None:
            messages = [(r.uid, r.flags) for r in cached]
        else:
            messages = await self.store.list_uid_flags(mailbox.id)
        view = MailboxView(mailbox.id, (uid for uid, _ in messages))
        out = [
            f"FLAGS {SYSTEM_FLAG_LIST}",
            f"OK [PERMANENTFLAGS {SYSTEM_FLAG_LIST[:-1]} \\*)] Flags permitted",
            f"{view.exists} EXISTS",
        ]
        if not self.session.rev2:
            out.append("0 RECENT")
            first_unseen = next(
                (i + 1 for i, (_, flags) in enumerate(messages) if "\\Seen" not in flags), None
            )
            if first_unseen is not None:
                out.append(f"OK [UNSEEN {first_unseen}] First unseen")
        out += [
            f"OK [UIDVALIDITY {mailbox.uidvalidity}] UIDs valid",
            f"OK [UIDNEXT {mailbox.uidnext}] Predicted next UID",
            f"OK [HIGHESTMODSEQ {mailbox.highestmodseq}] Highest",
        ]
        if self.session.rev2:
            out.append('LIST () "/" ' + self._quote_name(mailbox.name).decode("utf-8", "replace"))
        for line in out:
            await self.send(responses.untagged(line))
        self.mailbox = mailbox
        self.view = view
        self.readonly = cmd.readonly
        self.saved = ()
        self.session.state = State.SELECTED
        if resync is not None and cmd.qresync is not None:
            await condstore.send_resync(self, resync, cmd.qresync)
        return ("READ-ONLY" if cmd.readonly else "READ-WRITE"), "Selected"

    async def create(self, cmd: c.Create) -> str:
        name = self._name(cmd.mailbox)
        if not valid_mailbox_name(name) or name == "INBOX":
            raise CommandFailed("Invalid or reserved mailbox name", "CANNOT")
        special = cmd.special_use
        if special is not None and special not in (
            "\\Archive",
            "\\Drafts",
            "\\Junk",
            "\\Sent",
            "\\Trash",
            "\\All",
            "\\Flagged",
        ):
            raise CommandFailed("Unknown special use", "USEATTR")
        try:
            await self.store.create_mailbox(self.account_id, name, special)
        except AlreadyExists:
            raise CommandFailed("Mailbox exists", "ALREADYEXISTS") from None
        except InvalidName as exc:
            raise CommandFailed(str(exc) or "Invalid name", "CANNOT") from None
        return "Created"

    async def delete(self, cmd: c.Delete) -> str:
        name = self._name(cmd.mailbox)
        if name == "INBOX":
            raise CommandFailed("INBOX cannot be deleted", "CANNOT")
        try:
            await self.store.delete_mailbox(self.account_id, name)
        except NotFound:
            raise CommandFailed("No such mailbox", "NONEXISTENT") from None
        if self.mailbox is not None and self.mailbox.name == name:
            self.mailbox = None
            self.view = None
            self.session.state = State.AUTHENTICATED
        return "Deleted"

    async def rename(self, cmd: c.Rename) -> str:
        old, new = self._name(cmd.old), self._name(cmd.new)
        if not valid_mailbox_name(new) or new == "INBOX":
            raise CommandFailed("Invalid or reserved mailbox name", "CANNOT")
        try:
            await self.store.rename_mailbox(self.account_id, old, new)
        except NotFound:
            raise CommandFailed("No such mailbox", "NONEXISTENT") from None
        except AlreadyExists:
            raise CommandFailed("Target exists", "ALREADYEXISTS") from None
        except InvalidName as exc:
            raise CommandFailed(str(exc) or "Invalid name", "CANNOT") from None
        return "Renamed"

    async def subscribe(self, cmd: c.Subscribe) -> str:
        try:
            await self.store.set_subscribed(self.account_id, self._name(cmd.mailbox), cmd.subscribe)
        except NotFound:
            raise CommandFailed("No such mailbox", "NONEXISTENT") from None
        return "Done"

    async def list(self, cmd: c.ListCmd) -> str:
        # RFC 5258 3: unknown options, and RECURSIVEMATCH alone, are errors.
        unknown = set(cmd.selection) - LIST_SELECTION | (set(cmd.returns) - LIST_RETURN)
        if unknown or cmd.selection == ("RECURSIVEMATCH",):
            raise CommandFailed("Unsupported LIST option", status="BAD")
        if not cmd.lsub and cmd.patterns == ("",):
            # RFC 9051 6.3.9: an empty pattern asks for the delimiter.
            await self.send(responses.untagged('LIST (\\Noselect) "/" ""'))
            return "List completed"
        mailboxes = await self.store.list_mailboxes(self.account_id)
        by_name = {m.name: m for m in mailboxes}
        names = set(by_name)
        for name in list(names):
            parts = name.split("/")
            names.update("/".join(parts[:i]) for i in range(1, len(parts)))
        reference = self._name(cmd.reference) if cmd.reference else ""
        patterns = [reference + self._name(p) if p else reference for p in cmd.patterns]
        subscribed_only = cmd.lsub or "SUBSCRIBED" in cmd.selection
        special_only = "SPECIAL-USE" in cmd.selection
        keyword = "LSUB" if cmd.lsub else "LIST"
        for name in sorted(names, key=lambda n: (n != "INBOX", n)):
            if not any(list_matches(p, name) for p in patterns):
                continue
            mailbox = by_name.get(name)
            if subscribed_only and (mailbox is None or not mailbox.subscribed):
                continue
            if special_only and (mailbox is None or mailbox.special_use is None):
                continue
            attrs: list[str] = []
            if mailbox is None:
                attrs += ["\\NonExistent", "\\Noselect"] if not cmd.lsub else ["\\Noselect"]
            has_children = any(other.startswith(name + "/") for other in names)
            if not cmd.lsub:
                attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
                if mailbox is not None and mailbox.special_use:
                    attrs.append(mailbox.special_use)
                if (
                    mailbox is not None
                    and mailbox.subscribed
                    and (subscribed_only or "SUBSCRIBED" in cmd.returns)
                ):
                    attrs.append("\\Subscribed")
            line = b'* %s (%s) "/" %s\r\n' % (
                keyword.encode(),
                " ".join(attrs).encode(),
                self._quote_name(name),
            )
            await self.send(line)
            if cmd.status_items and mailbox is not None:
                await self._send_status(mailbox, cmd.status_items)
        return f"{keyword} completed"

    async def namespace(self) -> str:
        await self.send(responses.untagged('NAMESPACE (("" "/")) NIL NIL'))
        return "Namespace completed"

    async def _send_status(self, mailbox: MailboxRecord, items: tuple[str, ...]) -> None:
        values: list[str] = []
        deleted: int | None = None
        for item in items:
            if item == "MESSAGES":
                value = mailbox.messages
            elif item == "UIDNEXT":
                value = mailbox.uidnext
            elif item == "UIDVALIDITY":
                value = mailbox.uidvalidity
            elif item == "UNSEEN":
                value = mailbox.unseen
            elif item == "SIZE":
                value = mailbox.size
            elif item == "RECENT":
                value = 0
            elif item == "HIGHESTMODSEQ":
                value = mailbox.highestmodseq
            elif item == "DELETED":
                if deleted is None:
                    messages = await self.store.list_uid_flags(mailbox.id)
                    deleted = sum(1 for _, flags in messages if "\\Deleted" in flags)
                value = deleted
            elif item == "DELETED-STORAGE":
                # RFC 9208 4.2: what EXPUNGE would free, in 1024-octet units.
                records = await self.cache.records(self.store, mailbox)
                value = -(-sum(r.size for r in records if "\\Deleted" in r.flags) // 1024)
            else:
                raise CommandFailed(f"Unknown status item {item}", status="BAD")
            values.append(f"{item} {value}")
        await self.send(
            b"* STATUS %s (%s)\r\n" % (self._quote_name(mailbox.name), " ".join(values).encode())
        )

    async def status(self, cmd: c.Status) -> str:
        mailbox = await self._mailbox(cmd.mailbox)
        await self._send_status(mailbox, cmd.items)
        return "Status completed"

    async def append(self, cmd: c.Append) -> tuple[str, str]:
        mailbox = await self._mailbox(cmd.mailbox, missing_code="TRYCREATE")
        # MULTIAPPEND (RFC 3502): every message or none.
        messages = [(cmd.message, cmd.flags, cmd.date)]
        messages += [(m.message, m.flags, m.date) for m in cmd.more]
        if any(len(raw) > self.ctx.config.imap.max_literal_bytes for raw, _, _ in messages):
            raise CommandFailed("Message too big", "TOOBIG")
        try:
            stored = await self.store.append_all(
                mailbox.id,
                [(raw, [f for f in fl if f != "\\Recent"], when) for raw, fl, when in messages],
            )
        except TooBig:
            raise CommandFailed("Message too big", "TOOBIG") from None
        except OverQuota:
            raise CommandFailed("Quota exceeded", "OVERQUOTA") from None
        if self.view is not None and self.view.mailbox_id == mailbox.id:
            for where in stored:
                self.view.message_added(where.uid)
        uids = from_numbers([where.uid for where in stored])
        return f"APPENDUID {stored[0].uidvalidity} {uids}", "Append completed"

    async def close(self, *, expunge: bool) -> str:
        mailbox, _ = self._selected()
        if expunge and not self.readonly:
            # RFC 9051 6.4.1: CLOSE expunges silently.
            await self.store.expunge(mailbox.id)
        self.mailbox = None
        self.view = None
        self.session.state = State.AUTHENTICATED
        return "Closed"

    async def expunge(self, cmd: c.Expunge) -> str:
        mailbox, _ = self._selected()
        if self.readonly:
            raise CommandFailed("Mailbox is read-only", "CANNOT")
        uids = None if cmd.uids is None else self._target_uids(cmd.uids, uid=True)
        if uids == []:
            return "Expunge completed"
        removed = await self.store.expunge(mailbox.id, uids)
        await self.announce_expunged(removed)
        return "Expunge completed"

    async def search_uids(self, key: c.SearchKey, charset: str | None) -> Sequence[int]:
        """UIDs of the messages matching ``key``, in mailbox order (SEARCH, SORT, THREAD)."""
        mailbox, view = self._selected()
        if charset not in (None, "UTF-8", "US-ASCII"):
            raise CommandFailed("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
        records = await self.cache.records(self.store, mailbox)
        scope = Scope(view.exists, view.uids.max, datetime.now(UTC), self.saved)
        content = needs_content(key)
        found: list[int] = []  # UIDs in mailbox order
        visible = [r for r in records if view.seq_of(r.uid) is not None]
        for start in range(0, len(visible), SEARCH_BATCH):
            batch = [
                Candidate(view.seq_of(r.uid) or 0, r, r.flags)
                for r in visible[start : start + SEARCH_BATCH]
            ]
            if content:
                raws = await self.store.read_contents([c.record.content_id for c in batch])
                for candidate in batch:
                    candidate.raw = raws.get(candidate.record.content_id)
                # Decoding bodies is CPU work: off the event loop, so other
                # sessions (IDLE pushes) keep going meanwhile.
                found += await trio.to_thread.run_sync(
                    _matching, key, batch, scope, limiter=SEARCH_LIMITER
                )
            else:
                found += _matching(key, batch, scope)
        return found

    async def search(self, cmd: c.Search, tag: str) -> str:
        _, view = self._selected()
        found = await self.search_uids(cmd.key, cmd.charset)
        numbers = found if cmd.uid else [view.seq_of(u) or 0 for u in found]
        returns = cmd.returns
        if returns is None and self.session.rev2:
            returns = ("ALL",)
        highest = await condstore.search_modseq(self, cmd.key, found, returns)
        if returns is None:
            tail = [f"(MODSEQ {highest})"] if highest else []
            await self.send(responses.untagged(" ".join(["SEARCH", *map(str, numbers), *tail])))
            return "Search completed"
        if "SAVE" in returns:
            self.saved = tuple(found)
            if found and not {"ALL", "COUNT"} & set(returns) and {"MIN", "MAX"} & set(returns):
                # RFC 5182 2.4: SAVE with MIN and/or MAX alone keeps just those.
                kept = [found[0]] if "MIN" in returns else []
                self.saved = tuple(dict.fromkeys(kept + ([found[-1]] if "MAX" in returns else [])))
            returns = tuple(r for r in returns if r != "SAVE")
            if not returns:
                return "Search completed"
        await self.send(responses.esearch(tag, cmd.uid, returns, numbers, modseq=highest))
        return "Search completed"

    async def fetch(self, cmd: c.Fetch) -> str:
        mailbox, view = self._selected()
        problem = condstore.fetch_problem(self.session, cmd)
        if problem is not None:
            raise CommandFailed(problem, status="BAD")
        uids = self._target_uids(cmd.sequence, cmd.uid)
        items = list(cmd.items)
        if cmd.uid and not any(i.name == "UID" for i in items):
            items.insert(0, c.FetchAtt("UID"))
        needs_raw = any(
            i.section is not None or i.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT")
            for i in items
        )
        sets_seen = not self.readonly and any(
            (i.name in ("BODY", "BINARY") and i.section is not None)
            or i.name in ("RFC822", "RFC822.TEXT")
            for i in items
        )
        records = await self._records(uids)
        if cmd.changed_since is not None:
            records = [r for r in records if r.modseq > cmd.changed_since]
        if cmd.vanished:
            await condstore.send_fetch_vanished(self, cmd)
        if sets_seen:
            unseen = [r.uid for r in records if "\\Seen" not in r.flags]
            if unseen:
                changed, _ = await self.store.set_flags(mailbox.id, unseen, "add", ["\\Seen"])
                now = {record.uid: record for record in changed}
                for record in changed:
                    view.own_flags(record.uid, record.flags)
                records = [now.get(r.uid, r) for r in records]
                if not any(i.name == "FLAGS" for i in items):
                    items.append(c.FetchAtt("FLAGS"))
        condstore.fetch_items(self.session, cmd, items)
        utf8 = self.session.utf8
        for start in range(0, len(records), FETCH_BATCH):
            batch = records[start : start + FETCH_BATCH]
            raws: dict[int, bytes] = {}
            if needs_raw:
                raws = await self.store.read_contents([r.content_id for r in batch])
            for record in batch:
                seq = view.seq_of(record.uid)
                raw = raws.get(record.content_id, b"")
                if seq is None or (needs_raw and record.content_id not in raws):
                    continue  # expunged meanwhile (RFC 9051 7.4.1 lets us omit it)
                tree = mime.parse_tree(raw) if needs_raw else None
                try:
                    parts = [self._fetch_item(i, record, view, raw, tree, utf8) for i in items]
                except bodystructure.UnknownEncoding:
                    raise CommandFailed("Cannot decode this part", "UNKNOWN-CTE") from None
                await self.send(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts)))
        return "Fetch completed"

    def _fetch_item(
        self,
        item: c.FetchAtt,
        record: MessageRecord,
        view: MailboxView,
        raw: bytes,
        tree: mime.Part | None,
        utf8: bool,
    ) -> bytes:
        name = item.name
        if name == "UID":
            return b"UID %d" % record.uid
        if name == "FLAGS":
            return b"FLAGS " + responses.flag_list(record.flags)
        if name == "INTERNALDATE":
            return b"INTERNALDATE " + responses.date_time(record.internal_date)
        if name == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % record.size
        if name == "MODSEQ":
            return b"MODSEQ (%d)" % record.modseq
        if name == "ENVELOPE":
            return b"ENVELOPE " + self.cache.envelope(record, utf8)
        if name == "BODYSTRUCTURE":
            return b"BODYSTRUCTURE " + responses.bodystructure(
                record.bodystructure, extensible=True, utf8=utf8
            )
        if name == "BODY" and item.section is None:
            return b"BODY " + responses.bodystructure(
                record.bodystructure, extensible=False, utf8=utf8
            )
        assert tree is not None
        if name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            section = {"RFC822": c.Section(), "RFC822.HEADER": c.Section(text="HEADER")}.get(
                name, c.Section(text="TEXT")
            )
            return name.encode() + b" " + _literal(bodystructure.extract(raw, tree, section))
        assert item.section is not None
        if name == "BINARY.SIZE":
            data = bodystructure.binary(raw, tree, item.section)
            return b"BINARY.SIZE[%s] %d" % (str(item.section).encode(), len(data or b""))
        if name.startswith("BINARY"):
            data = bodystructure.binary(raw, tree, item.section)
            label = b"BINARY[%s]" % str(item.section).encode()
        else:
            data = bodystructure.extract(raw, tree, item.section)
            label = b"BODY[%s]" % str(item.section).encode()
        if item.partial is not None and data is not None:
            start, count = item.partial
            data = data[start : start + count]
            label += b"<%d>" % start
        if name.startswith("BINARY") and data is not None and b"\0" in data:
            return label + b" ~{%d}\r\n" % len(data) + data
        return label + b" " + _literal(data)

    async def store_flags(self, cmd: c.Store) -> tuple[str, str]:
        mailbox, view = self._selected()
        if self.readonly:
            raise CommandFailed("Mailbox is read-only", "CANNOT")
        uids = self._target_uids(cmd.sequence, cmd.uid)
        flags = [f for f in cmd.flags if f != "\\Recent"]
        for flag in flags:
            if flag.startswith("\\") and flag not in SYSTEM_FLAGS:
                raise CommandFailed(f"Flag {flag} cannot be set", status="BAD")
        if not uids:
            return "", "Store completed"
        changed, failed = await self.store.set_flags(
            mailbox.id, uids, cmd.mode, flags, unchanged_since=cmd.unchanged_since
        )
        for record in changed:
            view.own_flags(record.uid, record.flags)
        code = await condstore.store_responses(self, cmd, uids, changed, failed)
        return code, ("Conditional STORE failed" if code else "Store completed")

    async def copy(self, cmd: c.Copy) -> tuple[str, str]:
        mailbox, view = self._selected()
        if cmd.move and self.readonly:
            raise CommandFailed("Mailbox is read-only", "CANNOT")
        dest = await self._mailbox(cmd.mailbox, missing_code="TRYCREATE")
        uids = self._target_uids(cmd.sequence, cmd.uid)
        if not uids:
            return "", "Nothing to do"
        try:
            if cmd.move:
                pairs = await self.store.move_messages(mailbox.id, uids, dest.id)
            else:
                pairs = await self.store.copy_messages(mailbox.id, uids, dest.id)
        except OverQuota:
            raise CommandFailed("Quota exceeded", "OVERQUOTA") from None
        code = ""
        if pairs:
            src = from_numbers(sorted(p[0] for p in pairs))
            new = ",".join(str(p[1]) for p in sorted(pairs))
            code = f"COPYUID {dest.uidvalidity} {src} {new}"
        if dest.id == mailbox.id:
            for _, new_uid in pairs:
                view.message_added(new_uid)
        if cmd.move:
            # RFC 6851 4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
            if code:
                await self.send(responses.untagged(f"OK [{code}] Moved"))
            await self.announce_expunged([p[0] for p in pairs])
            return "", "Move completed"
        return code, "Copy completed"

    async def id(self) -> str:
        await self.send(responses.untagged('ID ("name" "mailstack")'))
        return "ID completed"


def _matching(key: c.SearchKey, batch: list[Candidate], scope: Scope) -> list[int]:
    return [candidate.record.uid for candidate in batch if matches(key, candidate, scope)]


def _literal(data: bytes | None) -> bytes:
    if data is None:
        return b"NIL"
    return b"{%d}\r\n" % len(data) + data
