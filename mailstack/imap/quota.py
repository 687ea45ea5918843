"""QUOTA (RFC 9208) joined to the store: one quota root per account.

The root is named "" and covers every mailbox of the account; its
resources are STORAGE (units of 1024 octets) and MESSAGE, as set with
``mailstack user quota``.  An account without limits has no quota root.
Limits are the administrator's: SETQUOTA is refused.
"""

from __future__ import annotations

from mailstack.imap import commands as c
from mailstack.imap import responses
from mailstack.imap.handlers import CommandFailed, Handlers
from mailstack.store.records import QuotaUsage

ROOT = ""
KIB = 1024


def _kib(octets: int) -> int:
    """Octets in STORAGE units (RFC 9208 5.1), rounded up: any use shows."""
    return -(-octets // KIB)


def resources(usage: QuotaUsage) -> list[str]:
    """The quota-resource list of the account's root (RFC 9208 7.1 QUOTA)."""
    out: list[str] = []
    if usage.quota_bytes is not None:
        out.append(f"STORAGE {_kib(usage.bytes_used)} {usage.quota_bytes // KIB}")
    if usage.quota_messages is not None:
        out.append(f"MESSAGE {usage.messages_used} {usage.quota_messages}")
    return out


async def _send_quota(h: Handlers, listed: list[str]) -> None:
    await h.send(
        b"* QUOTA %s (%s)\r\n"
        % (responses.astring(ROOT, utf8=h.session.utf8), " ".join(listed).encode())
    )


async def getquota(h: Handlers, cmd: c.GetQuota) -> str:
    listed = resources(await h.store.quota_usage(h.account_id))
    if cmd.root != ROOT or not listed:
        raise CommandFailed("No such quota root", "NONEXISTENT")
    await _send_quota(h, listed)
    return "Getquota completed"


async def getquotaroot(h: Handlers, cmd: c.GetQuotaRoot) -> str:
    mailbox = await h._mailbox(cmd.mailbox)
    listed = resources(await h.store.quota_usage(h.account_id))
    roots = b" " + responses.astring(ROOT) if listed else b""
    await h.send(b"* QUOTAROOT %s%s\r\n" % (h._quote_name(mailbox.name), roots))
    if listed:
        await _send_quota(h, listed)
    return "Getquotaroot completed"


async def setquota(h: Handlers, cmd: c.SetQuota) -> str:
    raise CommandFailed("Quotas are set by the administrator", "NOPERM")
