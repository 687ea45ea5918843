"""Delivery for the SMTP listeners: recipient and sender policy, trace
headers, the hop limit, and the durable hand-over to the store.

The policy answers the core's CheckSender/CheckRecipient events; ``deliver``
answers MessageReceived and returns only after the store committed (group
commit), so the core's 250 always means "on disk".  On submission with
``[outbound] enabled``, recipients of other domains are accepted with no
local targets and :func:`hand_over` queues them in the same commit as the
local copies.
"""

from __future__ import annotations

import email.utils
import functools
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from mailstack import mime
from mailstack.smtp import commands, replies
from mailstack.smtp.protocol import MessageReceived, Session
from mailstack.smtp.replies import Reply
from mailstack.store.records import (
    AccountRecord,
    Outgoing,
    OverQuota,
    StoreError,
    TemporaryFailure,
    TooBig,
)
from mailstack.store.store import Store

# What may come between a field name and its colon (blanks: RFC 5322 4.5,
# the obsolete syntax that receivers still accept).
_BEFORE_COLON = re.compile(rb"[ \t]*:")


# Not frozen, made per session or message: see smtp/commands.py.
@dataclass(slots=True)
class Connection:
    """What the Received header says about the client side."""

    session_id: str
    peer_ip: str
    tls_version: str | None
    tls_cipher: str | None


@dataclass(slots=True)
class RecipientDecision:
    reply: Reply
    targets: tuple[int, ...] = ()


def split_address(address: str) -> tuple[str, str] | None:
    """(unquoted local part, domain) of a mailbox, or None when the local
    part hides another routing (``%``/``!`` hacks, a quoted ``@``) — never
    delivered here nor relayed anywhere."""
    local, _, domain = address.rpartition("@")
    local = commands.unquote_local_part(local)
    if not local or any(char in local for char in "@%!"):
        return None
    return local, domain


def _over_quota(account: AccountRecord, usage_bytes: int, usage_messages: int) -> bool:
    if account.quota_bytes is not None and usage_bytes >= account.quota_bytes:
        return True
    return account.quota_messages is not None and usage_messages >= account.quota_messages


class RecipientCache:
    """Recently accepted recipients -> account ids, shared by a listener's sessions.

    Resolving an address is a database read in a worker thread, the most
    expensive step of an inbound message after the commit itself; an MX sees
    the same few addresses again and again.  Only positive answers for
    accounts without a quota are kept, for ``ttl`` seconds: a new account or
    alias is never refused because of the cache, and a deleted one is at
    worst tried once more (its delivery then fails with a 4xx and is retried
    by the client after the entry expired).
    """

    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, tuple[int, ...]]] = {}

    def get(self, key: str, now: float) -> tuple[int, ...] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, targets: tuple[int, ...], now: float) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # rare; cheaper than tracking recency
        self._entries[key] = (now + self._ttl, targets)


async def _postmaster(store: Store, hostname: str) -> str:
    """RFC 5321 4.1.1.3: <Postmaster> without a domain must be accepted; it is
    postmaster@ our hostname when that is deliverable, else of the first
    local domain that has one."""
    candidates = [hostname] + [d.name for d in await store.list_domains()]
    for domain in candidates:
        if await store.resolve_recipient(f"postmaster@{domain}") is not None:
            return f"postmaster@{domain}"
    return f"postmaster@{hostname}"


def cached_recipient(cache: RecipientCache, address: str, now: float) -> RecipientDecision | None:
    """The cache's answer for ``address`` when it has one: no store read."""
    targets = cache.get(address.lower(), now)
    return None if targets is None else RecipientDecision(replies.RECIPIENT_OK, targets)


async def check_recipient(
    store: Store,
    address: str,
    *,
    hostname: str,
    remote_reply: Reply,
    cache: RecipientCache | None = None,
    now: float = 0.0,
    full_reply: Reply = replies.MAILBOX_FULL,
) -> RecipientDecision:
    """Local recipients only: ``remote_reply`` for any other domain (relay
    denied on the MX, "relaying is not configured" on submission);
    ``full_reply`` for a recipient over quota (``over_quota`` in the config).
    A positive answer is remembered in ``cache``; the caller asks
    :func:`cached_recipient` first, which needs no store and no await."""
    key = address.lower()
    try:
        if address == "postmaster":
            address = await _postmaster(store, hostname)
        parts = split_address(address)
        if parts is None:
            return RecipientDecision(replies.RELAY_DENIED)
        local, domain = parts
        if domain.startswith("["):
            return RecipientDecision(remote_reply)  # address literals are never local here
        accounts = await store.resolve_recipient(f"{local}@{domain}")
        if accounts is None:
            if await store.is_local_domain(domain):
                return RecipientDecision(replies.UNKNOWN_USER)
            return RecipientDecision(remote_reply)
        for account in accounts:
            if account.quota_bytes is None and account.quota_messages is None:
                continue
            usage = await store.quota_usage(account.id)
            if _over_quota(account, usage.bytes_used, usage.messages_used):
                return RecipientDecision(full_reply)
    except StoreError:
        return RecipientDecision(replies.STORE_UNAVAILABLE)
    targets = tuple(a.id for a in accounts)
    if cache is not None and all(
        a.quota_bytes is None and a.quota_messages is None for a in accounts
    ):
        cache.put(key, targets, now)
    return RecipientDecision(replies.RECIPIENT_OK, targets)


async def check_sender(store: Store, account_id: int, sender: str) -> Reply:
    """Submission (RFC 6409 6.1): MAIL FROM must be an address the account owns."""
    parts = split_address(sender) if sender else None
    if parts is None:
        return replies.SENDER_NOT_OWNED
    try:
        owned = await store.addresses_owned_by(account_id)
    except StoreError:
        return replies.STORE_UNAVAILABLE
    wanted = f"{parts[0]}@{parts[1]}".lower()
    if wanted in (address.lower() for address in owned):
        return replies.SENDER_OK
    return replies.SENDER_NOT_OWNED


def date_field(now: datetime) -> str:
    """RFC 5322 3.3 date-time of ``now`` (UTC): formatted once per second,
    as every message's Received line needs it."""
    return _date_of_second(int(now.timestamp()))


@functools.lru_cache(maxsize=2)
def _date_of_second(second: int) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(second, UTC))


def received_header(
    session: Session,
    connection: Connection,
    event: MessageReceived,
    *,
    hostname: str,
    now: datetime,
) -> bytes:
    """RFC 5321 4.4 trace line; TLS and the authenticated user as comments
    (RFC 3848 WITH keywords say that much too)."""
    mail = event.mail
    base = "UTF8SMTP" if mail.smtputf8 else ("ESMTP" if session.esmtp else "SMTP")
    if base != "SMTP":
        base += ("S" if session.tls else "") + ("A" if session.user else "")
    lines = [f"Received: from {session.helo} ([{connection.peer_ip}])"]
    lines.append(f"\tby {hostname} (mailstack) with {base} id {connection.session_id}")
    if connection.tls_version:
        lines.append(f"\t(using {connection.tls_version} with cipher {connection.tls_cipher})")
    if session.user:
        lines.append(f"\t(authenticated as {session.user})")
    for_clause = f"for <{event.recipients[0].address}>" if len(event.recipients) == 1 else ""
    lines.append(f"\t{for_clause}; {date_field(now)}")
    return "\r\n".join(lines).encode("utf-8") + b"\r\n"


def _header_block(content: bytes) -> bytes:
    """The header up to and including the empty line that ends it (RFC 5322
    2.1), or all of ``content`` when it has none."""
    return content[: mime.split_header(content, 0, len(content))]


def _count_fields(header_block: bytes, name: bytes) -> int:
    """How many fields called ``name`` (lower case) ``header_block`` holds.

    Bytes methods find the candidate lines (the name at a line start, in any
    case) and a regular expression only checks what follows the name: a
    multi-line, case-insensitive search would try every position of the
    header, and hop_count runs for every message received."""
    block = b"\n" + header_block.lower()
    start = b"\n" + name
    count = 0
    at = block.find(start)
    while at >= 0:
        at += len(start)
        if _BEFORE_COLON.match(block, at):
            count += 1
        at = block.find(start, at)
    return count


def hop_count(content: bytes) -> int:
    """RFC 5321 6.3: the number of Received fields, to stop mail loops."""
    return _count_fields(_header_block(content), b"received")


def submission_fields(content: bytes, *, hostname: str, now: datetime) -> bytes:
    """RFC 6409 8.3: Message-ID and Date added when the client left them out."""
    block = _header_block(content)
    added = b""
    if not _count_fields(block, b"date"):
        added += b"Date: " + date_field(now).encode() + b"\r\n"
    if not _count_fields(block, b"message-id"):
        added += f"Message-ID: <{secrets.token_hex(16)}@{hostname}>\r\n".encode()
    return added


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submitted message at the point it is handed over: the bytes as
    they will leave (trace and RFC 6409 fields added, no Return-Path), the
    local accounts that get a copy and the remote recipients to queue."""

    sender: str
    raw: bytes
    local_targets: tuple[int, ...]
    remote_recipients: tuple[str, ...]
    smtputf8: bool
    eight_bit: bool


def needs_smtputf8(
    mail_smtputf8: bool, sender: str, recipients: tuple[str, ...], raw: bytes
) -> bool:
    """RFC 6531: the next hop must offer SMTPUTF8 only when an address or
    the header really is UTF-8, not merely because the client asked."""
    if not mail_smtputf8:
        return False
    addresses = (sender, *recipients)
    return not all(a.isascii() for a in addresses) or not _header_block(raw).isascii()


async def hand_over(store: Store, submitted: Submitted, *, now: datetime) -> None:
    """The one point where submission commits a message: local copies and
    the outbound queue entry in one durable commit (what the 250 after DATA
    promises).  ``submitted.raw`` is final here: DKIM signing happened
    before (mailauth.prepare), so local copies and the queued copy carry the
    same signature.  Raises the store's errors."""
    return_path = b"Return-Path: <" + submitted.sender.encode("utf-8") + b">\r\n"
    outgoing = None
    if submitted.remote_recipients:
        outgoing = Outgoing(
            sender=submitted.sender,
            recipients=submitted.remote_recipients,
            smtputf8=submitted.smtputf8,
            eight_bit=submitted.eight_bit,
        )
    await store.submit(
        submitted.local_targets,
        return_path + submitted.raw,
        outgoing,
        queued_raw=submitted.raw,
        internal_date=now,
    )


async def deliver(
    store: Store,
    session: Session,
    connection: Connection,
    event: MessageReceived,
    *,
    hostname: str,
    submission: bool,
    max_hops: int,
    full_reply: Reply = replies.MAILBOX_FULL,
) -> Reply:
    """Store one copy per final mailbox (and, on submission, queue the
    remote recipients); the reply for the end of DATA/BDAT.

    Store.deliver is all-or-nothing, so an over-quota mailbox fails the whole
    message with 452 4.2.2 (RFC 5321 4.2.5): nobody has a copy, the client
    retries, and the RCPT-time quota check then refuses just that recipient.
    ``full_reply`` (the permanent 552 5.2.2) is used instead only when that
    mailbox is the message's one destination: the reply covers every
    recipient, and the others must not bounce.
    """
    if hop_count(event.content) > max_hops:
        return replies.TOO_MANY_HOPS  # RFC 5321 6.3: a loop
    now = datetime.now(UTC)
    targets = tuple(sorted({t for recipient in event.recipients for t in recipient.targets}))
    trace = received_header(session, connection, event, hostname=hostname, now=now)
    if submission:
        trace += submission_fields(event.content, hostname=hostname, now=now)
    raw = trace + event.content
    try:
        if submission:
            remote = tuple(r.address for r in event.recipients if not r.targets)
            await hand_over(
                store,
                Submitted(
                    sender=event.mail.sender,
                    raw=raw,
                    local_targets=targets,
                    remote_recipients=remote,
                    smtputf8=needs_smtputf8(event.mail.smtputf8, event.mail.sender, remote, raw),
                    # What the bytes are, not what BODY= claimed (RFC 6152).
                    eight_bit=not raw.isascii(),
                ),
                now=now,
            )
        else:
            return_path = b"Return-Path: <" + event.mail.sender.encode("utf-8") + b">\r\n"
            await store.deliver(targets, return_path + raw, internal_date=now)
    except OverQuota:
        return full_reply if len(targets) == 1 else replies.MAILBOX_FULL
    except TooBig:
        return replies.SIZE_EXCEEDED
    except (TemporaryFailure, StoreError):
        return replies.STORE_UNAVAILABLE
    return replies.MESSAGE_ACCEPTED
