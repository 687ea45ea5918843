"""Email authentication at the end of DATA/BDAT, between the SMTP core and
delivery: DKIM signing on the submission listeners, SPF/DKIM/DMARC checks
and the Authentication-Results header on the MX listener.

The libraries (dkimpy, pyspf) block on DNS and on public-key maths, so they
run in worker threads under one CapacityLimiter per listener; the checks of
a message are bounded by ``authentication_timeout_seconds`` as a whole and
whatever did not finish by then is reported as temperror.  A DNS failure is
a temperror result, never a refused message.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import dkim
import dns.resolver
import trio

from mailstack.config import Config
from mailstack.dns import sync_resolver
from mailstack.smtp import delivery, dkim_keys, dkim_verification, dmarc, spf_check
from mailstack.smtp.auth_results import MethodResult, header, remove_ours
from mailstack.smtp.author import author_domain
from mailstack.smtp.dkim_signing import DkimSigner
from mailstack.smtp.dns_lookups import DnsTemporaryError, txt_records
from mailstack.smtp.protocol import MessageReceived, Session
from mailstack.smtp.replies import Reply

logger = logging.getLogger("mailstack.smtp")

T = TypeVar("T")

# RFC 7208 8.4 and RFC 7489 7.3 (with RFC 3463 5.7.1: delivery not authorized).
SPF_REJECTED = Reply(550, "5.7.1", "SPF check failed: sender not authorized by its domain")
DMARC_REJECTED = Reply(550, "5.7.1", "rejected by the DMARC policy of the From domain")
SIGNING_FAILED = Reply(554, "5.6.0", "message could not be DKIM-signed")
UNFINISHED = "check did not finish in time"


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    results: list[MethodResult]
    reject: Reply | None


class MailAuthentication:
    """One per listener; ``prepare`` turns a received message into the one
    to deliver, or into the reply refusing it."""

    def __init__(self, config: Config, *, submission: bool) -> None:
        smtp = config.submission if submission else config.smtp
        self._submission = submission
        self._smtp = config.smtp
        self._authserv_id = config.smtp.authserv_id or config.hostname
        self._hostname = config.hostname
        self._limiter = trio.CapacityLimiter(smtp.max_concurrent_checks)
        # Keys are read once at start: a bad key file stops the service
        # with a ConfigError naming the entry.
        self._signer = DkimSigner(dkim_keys.load(config)) if submission else None
        self._checks = not submission and config.smtp.authentication_checks
        self._dns_config = config.dns
        self._resolver: dns.resolver.Resolver | None = None

    async def prepare(
        self, session: Session, peer_ip: str, event: MessageReceived
    ) -> MessageReceived | Reply:
        if self._submission:
            return await self._sign(event)
        if not self._checks:
            return event
        verdict = await self.check(session.helo or "", peer_ip, event.mail.sender, event.content)
        logger.info(
            "authentication peer=%s from=<%s> %s",
            peer_ip,
            event.mail.sender,
            " ".join(f"{r.method}={r.result}" for r in verdict.results) or "none",
        )
        if verdict.reject is not None:
            return verdict.reject
        content = remove_ours(event.content, self._authserv_id)
        return dataclasses.replace(
            event, content=header(self._authserv_id, verdict.results) + content
        )

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # abandon_on_cancel: a check that overruns its deadline is left to
        # end on its own DNS timeout; the message is not held up by it.
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self._limiter, abandon_on_cancel=True
        )

    # -- submission: DKIM signing ------------------------------------------

    async def _sign(self, event: MessageReceived) -> MessageReceived | Reply:
        assert self._signer is not None
        # RFC 6409 8.3 fields first, so the signature covers the Date and
        # Message-ID the message will carry (delivery then adds none).
        now = datetime.now(UTC)
        content = (
            delivery.submission_fields(event.content, hostname=self._hostname, now=now)
            + event.content
        )
        sender = event.mail.sender
        if self._signer.keys_for(content, sender):
            try:
                signatures = await self._in_thread(self._signer.sign, content, sender)
            except dkim.DKIMException as exc:
                logger.warning("DKIM signing failed: %s", exc)
                return SIGNING_FAILED
            content = signatures + content
        elif self._signer.has_keys(domain := author_domain(content)):
            logger.info("not DKIM-signed: From domain %s is not that of <%s>", domain, sender)
        return dataclasses.replace(event, content=content)

    # -- MX: SPF, DKIM, DMARC --------------------------------------------------

    def _dns(self) -> dns.resolver.Resolver:
        if self._resolver is None:
            try:
                self._resolver = sync_resolver(self._dns_config)
            except dns.resolver.NoResolverConfiguration as exc:
                raise DnsTemporaryError(f"no DNS resolver configured: {exc}") from None
        return self._resolver

    async def check(self, helo: str, ip: str, sender: str, content: bytes) -> Verdict:
        smtp = self._smtp
        timeout = smtp.authentication_timeout_seconds
        domain = sender.rpartition("@")[2].lower() if sender else helo.lower()
        unfinished = UNFINISHED
        try:
            resolver = self._dns()
        except DnsTemporaryError as exc:
            logger.warning("authentication checks impossible: %s", exc)
            resolver, unfinished = None, str(exc)
        # What is still unset when the deadline passes stays a temperror.
        spf_result = spf_check.SpfResult(
            "mailfrom" if sender else "helo", domain, "temperror", unfinished
        )
        helo_result: spf_check.SpfResult | None = None
        dkim_results: list[dkim_verification.DkimResult] | None = None
        from_domain = author_domain(content)
        dmarc_result = dmarc.DmarcResult("temperror", from_domain or "", reason=unfinished)

        async def run_spf(resolver: dns.resolver.Resolver) -> None:
            nonlocal spf_result, helo_result
            spf_result = await self._in_thread(
                lambda: spf_check.check(resolver, ip, sender, helo, timeout=timeout)
            )
            if sender and spf_check.helo_is_checkable(helo):
                # RFC 7208 2.3: the HELO identity too, reported on its own.
                helo_result = await self._in_thread(
                    lambda: spf_check.check(resolver, ip, "", helo, timeout=timeout)
                )

        async def run_dkim(resolver: dns.resolver.Resolver) -> None:
            nonlocal dkim_results
            dkim_results = await self._in_thread(
                lambda: dkim_verification.verify_all(
                    resolver, content, max_signatures=smtp.max_dkim_signatures, timeout=timeout
                )
            )

        with trio.move_on_after(timeout):
            if resolver is not None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_spf, resolver)
                    nursery.start_soon(run_dkim, resolver)
                passes = [r.domain for r in dkim_results or () if r.result == "pass"]
                dmarc_result = await self._in_thread(
                    lambda: dmarc.evaluate(
                        from_domain,
                        spf_result=spf_result.result,
                        spf_domain=spf_result.domain,
                        dkim_passes=passes,
                        lookup_txt=lambda name: txt_records(resolver, name),
                    )
                )
        if dkim_results is None:
            dkim_results = [dkim_verification.DkimResult("temperror", "", "", "", unfinished)]
        results = _report(spf_result, helo_result, dkim_results, dmarc_result)
        return Verdict(results, self._decide(spf_result, dmarc_result))

    def _decide(self, spf: spf_check.SpfResult, verdict: dmarc.DmarcResult) -> Reply | None:
        if spf.result == "fail" and self._smtp.spf_fail == "reject":
            return SPF_REJECTED
        if (
            verdict.result == "fail"
            and verdict.disposition == "reject"
            and self._smtp.dmarc_reject == "honour"
        ):
            return DMARC_REJECTED
        return None


def _report(
    spf: spf_check.SpfResult,
    helo: spf_check.SpfResult | None,
    dkim_results: list[dkim_verification.DkimResult],
    verdict: dmarc.DmarcResult,
) -> list[MethodResult]:
    """RFC 8601 resinfo for each check (ptypes from RFC 8601 2.7 and the
    IANA registry: smtp.mailfrom, smtp.helo, header.d/s/b, header.from)."""
    results = [
        MethodResult(
            "spf",
            spf.result,
            spf.explanation if spf.result in ("temperror", "permerror") else "",
            ((f"smtp.{spf.identity}", spf.domain),),
        )
    ]
    if helo is not None:
        results.append(MethodResult("spf", helo.result, "", (("smtp.helo", helo.domain),)))
    if not dkim_results:
        results.append(MethodResult("dkim", "none"))
    for r in dkim_results:
        properties = [("header.d", r.domain), ("header.s", r.selector)] if r.domain else []
        if r.signature_start:
            properties.append(("header.b", r.signature_start))
        results.append(MethodResult("dkim", r.result, r.reason, tuple(properties)))
    policy = f"p={verdict.policy} dis={verdict.disposition}" if verdict.policy else ""
    from_property = (("header.from", verdict.from_domain),) if verdict.from_domain else ()
    results.append(
        MethodResult("dmarc", verdict.result, verdict.reason, from_property, comment=policy)
    )
    return results
