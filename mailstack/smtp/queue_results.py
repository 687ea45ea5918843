"""What a delivery attempt's outcomes become: committed results, retries
with exponential backoff, expiry, and delivery status notifications.

Final outcomes (delivered, failed) are committed as soon as they are known,
together with the DSN for each failure (one commit, so a failure is
reported exactly once); temporary ones wait in :class:`JobState` for the
next MX host and are then scheduled for a retry or, once the message is
older than ``max_age_seconds``, failed with status 4.4.7.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from mailstack.config import OutboundConfig
from mailstack.smtp import dsn
from mailstack.smtp.client_protocol import Outcome, describe
from mailstack.smtp.replies import Reply
from mailstack.store.records import (
    DeliveryJob,
    Outgoing,
    QueuedMessageRecord,
    RecipientOutcome,
    RecipientState,
)
from mailstack.store.store import Store

logger = logging.getLogger("mailstack.queue")


def backoff(config: OutboundConfig, attempts: int) -> float:
    """Seconds until the next try after ``attempts`` failed ones."""
    delay: float = config.retry_initial_seconds * 2.0 ** min(attempts, 32)
    return min(delay, config.retry_max_seconds)


class JobState:
    """What one job learned so far: recipients still undecided and the
    latest temporary failure of each."""

    def __init__(self, job: DeliveryJob, content: bytes) -> None:
        self.job = job
        self.content = content
        self.pending = {r.address: r for r in job.message.recipients}
        self.temporary: dict[str, Outcome] = {}
        self.last_mta: str | None = None  # the host that gave the latest refusal


def _report(address: str, outcome: Outcome, remote_mta: str | None) -> dsn.RecipientReport:
    reply: Reply = outcome.reply
    text = " ".join(reply.lines)
    return dsn.RecipientReport(
        address,
        dsn.status_of(reply),
        describe(reply) if outcome.from_remote else text,
        describe(reply) if outcome.from_remote else None,
        remote_mta if outcome.from_remote else None,
    )


class Recorder:
    """Writes one queue worker's outcomes (``owner`` holds the leases)."""

    def __init__(self, store: Store, owner: str, config: OutboundConfig, hostname: str) -> None:
        self._store = store
        self._owner = owner
        self._config = config
        self._hostname = hostname

    async def record(
        self, state: JobState, outcomes: dict[str, Outcome], remote_mta: str | None
    ) -> None:
        """Commit final outcomes now (with a DSN for the failures); keep
        temporary ones in ``state`` for another host or the retry."""
        final: list[RecipientOutcome] = []
        failed: list[dsn.RecipientReport] = []
        for address, outcome in outcomes.items():
            recipient = state.pending.get(address)
            if recipient is None:
                continue
            if outcome.delivered:
                final.append(
                    RecipientOutcome(
                        recipient.id, RecipientState.DELIVERED, describe(outcome.reply)
                    )
                )
            elif outcome.permanent:
                final.append(
                    RecipientOutcome(recipient.id, RecipientState.FAILED, describe(outcome.reply))
                )
                failed.append(_report(address, outcome, remote_mta))
            else:
                state.temporary[address] = outcome
                continue
            del state.pending[address]
            state.temporary.pop(address, None)
        if not final:
            return
        notices = self._notices(state.job.message, state.content, failed, delayed=False)
        await self._store.record_outcomes(self._owner, final, notices)
        delivered = sum(o.state is RecipientState.DELIVERED for o in final)
        logger.info(
            "queue: message %d to %s via %s: delivered=%d failed=%d",
            state.job.message.id,
            state.job.domain,
            remote_mta or "-",
            delivered,
            len(final) - delivered,
        )

    async def finish(self, state: JobState) -> None:
        """Temporary outcomes: retry later, or fail them once too old."""
        if not state.temporary:
            return
        message = state.job.message
        now = datetime.now(UTC)
        expires = message.created_at + timedelta(seconds=self._config.max_age_seconds)
        warn_after = self._config.delay_warning_seconds
        age = (now - message.created_at).total_seconds()
        outcomes: list[RecipientOutcome] = []
        expired: list[dsn.RecipientReport] = []
        delayed: list[dsn.RecipientReport] = []
        for address, outcome in state.temporary.items():
            recipient = state.pending.get(address)
            if recipient is None:
                continue
            retry_at = now + timedelta(seconds=backoff(self._config, recipient.attempts))
            result = describe(outcome.reply)
            if retry_at >= expires:
                outcomes.append(RecipientOutcome(recipient.id, RecipientState.FAILED, result))
                report = _report(address, outcome, None)
                expired.append(
                    dsn.RecipientReport(
                        address,
                        "4.4.7",
                        f"delivery time expired; last error: {result}",
                        report.diagnostic,
                    )
                )
                continue
            warn = bool(warn_after) and age >= warn_after and not recipient.warned
            if warn:
                delayed.append(_report(address, outcome, None))
            outcomes.append(
                RecipientOutcome(recipient.id, RecipientState.QUEUED, result, retry_at, warn)
            )
        notices = self._notices(message, state.content, expired, delayed=False)
        notices += self._notices(message, state.content, delayed, delayed=True)
        await self._store.record_outcomes(self._owner, outcomes, notices)
        logger.info(
            "queue: message %d to %s: %d deferred, %d expired",
            message.id,
            state.job.domain,
            len(outcomes) - len(expired),
            len(expired),
        )

    def _notices(
        self,
        message: QueuedMessageRecord,
        content: bytes,
        reports: list[dsn.RecipientReport],
        *,
        delayed: bool,
    ) -> list[tuple[Outgoing, bytes]]:
        # RFC 5321 4.5.5 / RFC 3464: never a notification about a message
        # from the null reverse-path (a notification itself).
        if not reports or not message.sender:
            return []
        raw = dsn.build_dsn(
            reporting_mta=self._hostname,
            recipient=message.sender,
            original=content,
            reports=reports,
            arrival=message.created_at,
            now=datetime.now(UTC),
            delayed=delayed,
        )
        international = not raw.isascii()  # dsn.build_dsn: UTF-8 only when it must
        outgoing = Outgoing(
            sender="", recipients=(message.sender,), smtputf8=international, eight_bit=international
        )
        return [(outgoing, raw)]
