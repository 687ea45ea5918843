"""The WebSocket API's requests, answered from the store for one account.

:meth:`Api.run` takes a parsed operation (protocol.py) and returns the
``result`` member of the reply, or raises :class:`ApiError` whose code and
message become the error object.  Nothing here knows about frames or JSON
text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import trio

from mailstack.store.records import (
    AlreadyExists,
    ChangeKind,
    InvalidName,
    MailboxRecord,
    MessageRecord,
    NotFound,
    OverQuota,
    StoreError,
    TemporaryFailure,
)
from mailstack.store.store import Store
from mailstack.websocket import protocol as p
from mailstack.websocket import summary

# Message contents read per query while searching text.
CONTENT_BATCH = 100


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def store_error(exc: StoreError) -> ApiError:
    """The error object a store failure becomes."""
    codes: list[tuple[type[StoreError], str]] = [
        (NotFound, "not_found"),
        (AlreadyExists, "exists"),
        (InvalidName, "bad_request"),
        (OverQuota, "over_quota"),
        (TemporaryFailure, "unavailable"),
    ]
    code = next((code for kind, code in codes if isinstance(exc, kind)), "failed")
    return ApiError(code, str(exc))


class Api:
    def __init__(self, store: Store, account_id: int) -> None:
        self._store = store
        self._account_id = account_id

    async def run(self, operation: p.Operation) -> Any:
        try:
            return await self._run(operation)
        except StoreError as exc:
            raise store_error(exc) from None

    async def _run(self, op: p.Operation) -> Any:
        if isinstance(op, p.Mailboxes):
            mailboxes = await self._store.list_mailboxes(self._account_id)
            return [summary.mailbox_summary(m) for m in mailboxes]
        if isinstance(op, p.Messages):
            return await self._messages(op)
        if isinstance(op, p.GetMessage):
            return await self._message(op)
        if isinstance(op, p.Search):
            return await self._search(op)
        if isinstance(op, p.SetFlags):
            return await self._flags(op)
        if isinstance(op, p.Move):
            return await self._move(op)
        if isinstance(op, p.Delete):
            return await self._delete(op)
        return await self._wait(op)

    async def _mailbox(self, name: str) -> MailboxRecord:
        mailbox = await self._store.get_mailbox(self._account_id, name)
        if mailbox is None:
            raise ApiError("not_found", f"no mailbox {name!r}")
        return mailbox

    async def _messages(self, op: p.Messages) -> Any:
        mailbox = await self._mailbox(op.mailbox)
        records = await self._store.list_messages_page(
            mailbox.id, after_uid=op.after_uid, limit=op.limit + 1
        )
        more = len(records) > op.limit
        records = records[: op.limit]
        return {
            "mailbox": mailbox.name,
            "total": mailbox.messages,
            "messages": [summary.message_summary(r, mailbox.name) for r in records],
            "next_after_uid": records[-1].uid if more else None,
        }

    async def _message(self, op: p.GetMessage) -> Any:
        mailbox = await self._mailbox(op.mailbox)
        records = await self._store.get_messages(mailbox.id, [op.uid])
        if not records:
            raise ApiError("not_found", f"no message with uid {op.uid} in {mailbox.name!r}")
        raw = await self._store.read_content(records[0].content_id)
        return summary.message_detail(records[0], mailbox.name, raw, with_raw=op.raw)

    async def _matching(
        self, records: Sequence[MessageRecord], criteria: p.Criteria
    ) -> list[MessageRecord]:
        now = datetime.now(UTC)
        if not summary.needs_content(criteria):
            return [r for r in records if summary.matches(criteria, r, None, now)]
        found: list[MessageRecord] = []
        for start in range(0, len(records), CONTENT_BATCH):
            batch = records[start : start + CONTENT_BATCH]
            contents = await self._store.read_contents([r.content_id for r in batch])
            found += [
                r for r in batch if summary.matches(criteria, r, contents.get(r.content_id), now)
            ]
        return found

    async def _search(self, op: p.Search) -> Any:
        mailbox = await self._mailbox(op.mailbox)
        found = await self._matching(await self._store.list_messages(mailbox.id), op.criteria)
        return {
            "mailbox": mailbox.name,
            "total": len(found),
            "messages": [summary.message_summary(r, mailbox.name) for r in found[: op.limit]],
        }

    async def _flags(self, op: p.SetFlags) -> Any:
        mailbox = await self._mailbox(op.mailbox)
        if op.add:
            await self._store.set_flags(mailbox.id, op.uids, "add", op.add)
        if op.remove:
            await self._store.set_flags(mailbox.id, op.uids, "remove", op.remove)
        records = await self._store.get_messages(mailbox.id, op.uids)
        return {"messages": [{"uid": r.uid, "flags": sorted(r.flags)} for r in records]}

    async def _move(self, op: p.Move) -> Any:
        source = await self._mailbox(op.mailbox)
        target = await self._mailbox(op.target)
        if source.id == target.id:
            raise ApiError("bad_request", "'to' is the mailbox the messages are in")
        pairs = await self._store.move_messages(source.id, op.uids, target.id)
        return {"to": target.name, "moved": [{"uid": old, "new_uid": new} for old, new in pairs]}

    async def _delete(self, op: p.Delete) -> Any:
        mailbox = await self._mailbox(op.mailbox)
        await self._store.set_flags(mailbox.id, op.uids, "add", ["\\Deleted"])
        return {"deleted": await self._store.expunge(mailbox.id, op.uids)}

    async def _wait(self, op: p.Wait) -> Any:
        """The first message in the mailbox with a UID above ``after_uid`` (by
        default: arriving after this request) that matches, within the timeout.

        Subscribing before reading the mailbox leaves no gap: a message that
        lands in between is found by the read and also announced on the
        channel (skipped there by its UID)."""
        with trio.move_on_after(op.timeout):
            last_uid = op.after_uid
            while True:
                try:
                    channel = self._store.subscribe(self._account_id)
                except RuntimeError:
                    raise ApiError("unavailable", "the server is shutting down") from None
                with channel:
                    mailbox = await self._mailbox(op.mailbox)
                    if last_uid is None:
                        last_uid = mailbox.uidnext - 1
                    records = await self._store.list_messages(mailbox.id, since_uid=last_uid)
                    found = await self._matching(records, op.criteria)
                    if found:
                        return summary.message_summary(found[0], mailbox.name)
                    if records:
                        last_uid = records[-1].uid
                    async for change in channel:
                        if (
                            change.kind is not ChangeKind.MESSAGE_NEW
                            or change.mailbox_id != mailbox.id
                            or change.uid is None
                            or change.uid <= last_uid
                        ):
                            continue
                        last_uid = change.uid
                        records = await self._store.get_messages(mailbox.id, [change.uid])
                        found = await self._matching(records, op.criteria)
                        if found:
                            return summary.message_summary(found[0], mailbox.name)
                # The channel ended (this wait fell behind): subscribe again
                # and read what arrived meanwhile.
        raise ApiError("timeout", f"no matching message within {op.timeout:g} seconds")
