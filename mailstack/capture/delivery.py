"""Capture mode on the SMTP listeners: every recipient at every domain is
accepted and resolved to a capture account (routing.py), every message is
stored in that account's INBOX with its SMTP envelope in header fields, and
nothing ever leaves: this path calls only the store, never relay or queue
code.

Isolation: each capture account gets its own copy whose
``X-Envelope-To`` names only the recipients it caught, so one team never
learns another's addresses from a shared message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mailstack.capture.retention import Retention
from mailstack.capture.routing import CaptureRouter
from mailstack.config import Config, ConfigError
from mailstack.smtp import delivery, replies
from mailstack.smtp.protocol import MessageReceived, Session
from mailstack.smtp.replies import Reply
from mailstack.store.records import OverQuota, StoreError, TooBig
from mailstack.store.store import Store

log = logging.getLogger("mailstack.capture")


def envelope_fields(sender: str, recipients: list[str]) -> bytes:
    """The original envelope (RFC 5321 MAIL FROM / RCPT TO) as header fields."""
    to = ",\r\n\t".join(f"<{address}>" for address in recipients)
    return f"X-Envelope-From: <{sender}>\r\nX-Envelope-To: {to}\r\n".encode()


class Capture:
    def __init__(self, config: Config, store: Store, account_ids: dict[str, int]) -> None:
        self._config = config
        self._store = store
        self._router = CaptureRouter(config.capture)
        self._account_ids = account_ids
        self.retention = Retention(store, config.capture, list(account_ids.values()))

    @classmethod
    async def open(cls, config: Config, store: Store) -> Capture:
        """Look up every capture account; a missing one is a configuration
        mistake reported at start, not a 451 on every message."""
        account_ids: dict[str, int] = {}
        for address in CaptureRouter(config.capture).accounts:
            account = await store.get_account(address)
            if account is None:
                raise ConfigError(
                    config.source,
                    "capture",
                    f"capture account {address} does not exist "
                    f"(create it with `mailstack user add {address}`)",
                )
            account_ids[address] = account.id
        return cls(config, store, account_ids)

    def check_recipient(self, address: str) -> delivery.RecipientDecision:
        """Any recipient: its capture account (the default when no rule matches)."""
        account = self._router.route(address)
        return delivery.RecipientDecision(replies.RECIPIENT_OK, (self._account_ids[account],))

    async def deliver(
        self,
        session: Session,
        connection: delivery.Connection,
        event: MessageReceived,
        *,
        submission: bool,
    ) -> Reply:
        """One copy per capture account; 250 only after every copy committed."""
        now = datetime.now(UTC)
        hostname = self._config.hostname
        caught: dict[int, list[str]] = {}
        for recipient in event.recipients:
            for target in recipient.targets:
                caught.setdefault(target, []).append(recipient.address)
        trace = b"Return-Path: <" + event.mail.sender.encode("utf-8") + b">\r\n"
        trace += delivery.received_header(session, connection, event, hostname=hostname, now=now)
        if submission:
            trace += delivery.submission_fields(event.content, hostname=hostname, now=now)
        try:
            for account_id, addresses in caught.items():
                fields = envelope_fields(event.mail.sender, addresses)
                await self._store.deliver(
                    [account_id], trace + fields + event.content, internal_date=now
                )
        except OverQuota:
            return replies.MAILBOX_FULL
        except TooBig:
            return replies.SIZE_EXCEEDED
        except StoreError as exc:
            log.warning("capture delivery failed: %s", exc)
            return replies.STORE_UNAVAILABLE
        self.retention.poke()
        return replies.MESSAGE_ACCEPTED
