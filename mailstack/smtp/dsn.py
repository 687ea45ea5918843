"""PURE delivery status notifications (RFC 3464) built with the ``email`` package.

A DSN is a multipart/report (RFC 6522) with a human-readable part, a
message/delivery-status part (one per-message block, one block per
recipient) and the returned message's header (text/rfc822-headers, so a
bounce never carries a large body back).  It is sent from the null
reverse-path (RFC 5321 4.5.5), so no DSN is ever sent about it.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message

from mailstack.smtp.replies import Reply

_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class RecipientReport:
    address: str
    status: str  # RFC 3463 "5.1.1"
    reason: str  # one line for the human-readable part
    diagnostic: str | None = None  # the remote's reply, "550 5.1.1 no such user"
    remote_mta: str | None = None  # host name of the server that said it


def status_of(reply: Reply) -> str:
    """The RFC 3463 status of a reply; "X.0.0" when it carried none."""
    return reply.enhanced or f"{str(reply.code)[0]}.0.0"


def header_block(content: bytes) -> bytes:
    match = _HEADER_END.search(content)
    return content[: match.start()] + b"\r\n" if match else content


def _address_type(address: str) -> str:
    # RFC 6533 3: "utf-8" for an address with non-ASCII characters.
    return "rfc822" if address.isascii() else "utf-8"


def build_dsn(
    *,
    reporting_mta: str,
    recipient: str,
    original: bytes,
    reports: list[RecipientReport],
    arrival: datetime,
    now: datetime,
    delayed: bool = False,
) -> bytes:
    """The notification to ``recipient`` (the original envelope sender)
    about ``reports``: Action "failed", or "delayed" for a warning."""
    action = "delayed" if delayed else "failed"
    report = EmailMessage()
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = recipient
    report["Subject"] = (
        "Delivery delayed: still trying" if delayed else "Undelivered mail returned to sender"
    )
    report["Date"] = email.utils.format_datetime(now)
    report["Message-ID"] = f"<{secrets.token_hex(16)}@{reporting_mta}>"
    # RFC 3834 5: automatic responses must not be answered automatically.
    report["Auto-Submitted"] = "auto-replied"
    lines = [
        f"This is the mail system at {reporting_mta}.",
        "",
        (
            "Your message has not been delivered yet to the recipients below; "
            "delivery will be tried again. You need not send it again."
            if delayed
            else "Your message could not be delivered to the recipients below."
        ),
        "",
    ]
    lines += [f"<{r.address}>: {r.reason}" for r in reports]
    report.set_content("\n".join(lines) + "\n")
    report.make_mixed()
    report.replace_header("Content-Type", "multipart/report")
    report.set_param("report-type", "delivery-status")

    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["Arrival-Date"] = email.utils.format_datetime(arrival)
    blocks = [per_message]
    for item in reports:
        block = Message()
        block["Final-Recipient"] = f"{_address_type(item.address)}; {item.address}"
        block["Action"] = action
        block["Status"] = item.status
        if item.remote_mta:
            block["Remote-MTA"] = f"dns; {item.remote_mta}"
        if item.diagnostic:
            block["Diagnostic-Code"] = f"smtp; {item.diagnostic}"
        block["Last-Attempt-Date"] = email.utils.format_datetime(now)
        blocks.append(block)
    status = EmailMessage()
    status.set_type("message/delivery-status")
    status.set_payload(blocks)  # type: ignore[arg-type]  # the email package's own form
    report.attach(status)

    returned = header_block(original).decode("utf-8", "replace")
    headers = EmailMessage()
    # 8bit, not base64: RFC 6532 header fields stay readable as they were.
    headers.set_content(
        returned, subtype="rfc822-headers", cte="7bit" if returned.isascii() else "8bit"
    )
    report.attach(headers)
    # Non-ASCII addresses or returned header fields make it an internationalized
    # message (RFC 6533 6): UTF-8 as is, which needs SMTPUTF8 to travel.
    international = not all(r.address.isascii() for r in reports) or not (
        recipient.isascii() and header_block(original).isascii()
    )
    policy = email.policy.SMTPUTF8 if international else email.policy.SMTP
    return report.as_bytes(policy=policy.clone(max_line_length=998))
