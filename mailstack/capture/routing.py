"""PURE capture routing: which capture account catches a recipient.

An address rule (``ci@shared.example``) wins over a domain rule
(``team-a.example``); a recipient no rule catches goes to the default
account (``[capture] account``).  Matching ignores case; the domain is the
part after the last ``@``.
"""

from __future__ import annotations

from mailstack.config import CaptureConfig


class CaptureRouter:
    def __init__(self, config: CaptureConfig) -> None:
        self.default = config.account.lower()
        self._addresses: dict[str, str] = {}
        self._domains: dict[str, str] = {}
        for inbox in config.inboxes:
            for pattern in inbox.catch:
                text = pattern.lower().lstrip("@")
                table = self._addresses if "@" in text else self._domains
                table[text] = inbox.account.lower()

    @property
    def accounts(self) -> list[str]:
        """Every capture account, the default first."""
        named = [*self._addresses.values(), *self._domains.values()]
        return list(dict.fromkeys([self.default, *named]))

    def route(self, recipient: str) -> str:
        address = recipient.lower()
        account = self._addresses.get(address)
        if account is not None:
            return account
        domain = address.rpartition("@")[2]
        return self._domains.get(domain, self.default)
