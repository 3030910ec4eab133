"""Email test fixtures: a real sealed message, a fake SendGrid, a local SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from app.mailings.service import SenderIdentity, render_draft, supporter_envelope
from app.timeutil import utcnow
from privacy.seal import Recipient, SealedEmail, seal
from tests.factories import SupporterFactory
from tests.fakes import free_port
from tests.fakes.sendgrid_server import FakeSendGrid


@pytest.fixture
def identity(app) -> SenderIdentity:  # type: ignore[no-untyped-def]
    return SenderIdentity.from_config(app.config)


@pytest.fixture
def supporter(app):  # type: ignore[no-untyped-def]
    return SupporterFactory(email="ada@example.org", first_name="Ada")


@pytest.fixture
def sealed(app, identity, supporter) -> SealedEmail:  # type: ignore[no-untyped-def]
    """The real welcome email for one supporter, through the real seal."""
    envelope = supporter_envelope(identity, supporter)
    links = envelope.links
    draft = render_draft("welcome", envelope, identity, {"supporter": supporter})
    outcome = seal(draft, Recipient(supporter.email), links, identity.postal_address, utcnow())
    assert isinstance(outcome, SealedEmail)
    return outcome


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        yield server


@pytest.fixture
def sendgrid_config(app, fake_sendgrid, monkeypatch):  # type: ignore[no-untyped-def]
    """The test app configured for EMAIL_PROVIDER=sendgrid against the fake server."""
    monkeypatch.setitem(app.config, "EMAIL_PROVIDER", "sendgrid")
    monkeypatch.setitem(app.config, "SENDGRID_API_KEY", fake_sendgrid.api_key)
    monkeypatch.setitem(app.config, "SENDGRID_API_HOST", fake_sendgrid.url)
    return app.config


@dataclass
class SmtpCollector:
    """An aiosmtpd handler that keeps every message and can refuse recipients."""

    envelopes: list[Envelope] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"


@dataclass
class SmtpServer:
    host: str
    port: int
    collector: SmtpCollector


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    collector = SmtpCollector()
    controller = Controller(collector, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer(controller.hostname, controller.port, collector)
    finally:
        controller.stop()
