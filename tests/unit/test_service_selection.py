"""Which services `mailstack serve` starts (no store needed)."""

from __future__ import annotations

import pytest

from mailstack import service
from mailstack.config import (
    Config,
    ConfigError,
    Endpoint,
    ImapConfig,
    OutboundConfig,
    SmtpConfig,
)


def test_registry_names_match_the_public_contract() -> None:
    # DESIGN.md "Commands": serve takes smtp, submission, imap, pop3, websocket, queue.
    assert set(service.SERVICES) == {"smtp", "submission", "imap", "pop3", "websocket", "queue"}


def test_queue_runs_when_outbound_is_enabled() -> None:
    assert not service.is_configured(Config(), "queue")
    enabled = Config(outbound=OutboundConfig(enabled=True))
    assert service.is_configured(enabled, "queue")
    assert [name for name, _ in service.select_services(enabled, [])] == ["queue"]
    with pytest.raises(ConfigError, match=r"outbound\.enabled: the queue is not enabled"):
        service.select_services(Config(), ["queue"])


def test_configured_means_an_address_is_listed() -> None:
    config = Config(
        imap=ImapConfig(tls_listen=(Endpoint("127.0.0.1", 993),)),
        smtp=SmtpConfig(listen=()),
    )
    assert service.is_configured(config, "imap")
    assert not service.is_configured(config, "smtp")
    assert not service.is_configured(config, "websocket")


def test_unknown_service_is_a_clear_error() -> None:
    with pytest.raises(service.ServiceUnavailable, match="unknown service; choose from smtp"):
        service.load_service("gopher")


def test_named_service_must_be_configured() -> None:
    name = next(iter(service.SERVICES))
    try:
        service.load_service(name)
    except service.ServiceUnavailable as exc:
        # Not built yet: that is the error the user sees.
        assert "not available in this build" in str(exc)
        return
    with pytest.raises(ConfigError, match=rf"{name}\.listen: no listen"):
        service.select_services(Config(), [name])


def test_nothing_configured_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no service configured"):
        service.select_services(Config(), [])


def test_available_services_load() -> None:
    for name in service.available_services():
        assert callable(service.load_service(name))
