"""Transactional email to one supporter: render, seal, send, log.

Every email leaves through `privacy.seal.seal()`. Each logical email has a
dedupe key, so a retried task sends it at most once after it was accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from typing import Any
from urllib.parse import quote

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.integrations.email import EmailProvider, EmailProviderError
from app.mailings.models import EmailLog, EmailStatus
from app.supporters.models import Supporter
from app.supporters.tokens import make_token, one_click_url, preferences_url
from privacy.seal import (
    Draft,
    Purpose,
    Recipient,
    SealedEmail,
    SealError,
    UnsubscribeLinks,
    seal,
)


@dataclass(frozen=True)
class SenderIdentity:
    org_name: str
    postal_address: str
    mail_from: str
    base_url: str
    secret_key: str
    unsubscribe_mailto: str = ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SenderIdentity:
        return cls(
            org_name=config["ORG_NAME"],
            postal_address=config["ORG_POSTAL_ADDRESS"],
            mail_from=config["MAIL_FROM"],
            base_url=config["BASE_URL"],
            secret_key=config["SECRET_KEY"],
            unsubscribe_mailto=config["UNSUBSCRIBE_MAILTO"],
        )

    def unsubscribe_address(self) -> str:
        """Mailbox for mailto: unsubscribes: as configured, else unsubscribe@ the sender domain."""
        if self.unsubscribe_mailto:
            return self.unsubscribe_mailto
        domain = parseaddr(self.mail_from)[1].rpartition("@")[2]
        return f"unsubscribe@{domain}" if domain else ""


def unsubscribe_links(identity: SenderIdentity, supporter: Supporter) -> UnsubscribeLinks:
    token = make_token(identity.secret_key, supporter.public_id)
    mailbox = identity.unsubscribe_address()
    return UnsubscribeLinks(
        page_url=preferences_url(identity.base_url, token),
        one_click_url=one_click_url(identity.base_url, token),
        mailto=f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}" if mailbox else "",
    )


@dataclass(frozen=True)
class Envelope:
    """Who one email goes to, and the opt-out links that go with them."""

    recipient: Recipient
    links: UnsubscribeLinks
    supporter_id: int | None = None


def supporter_envelope(identity: SenderIdentity, supporter: Supporter) -> Envelope:
    return Envelope(
        Recipient(supporter.email, supporter.status, supporter.snoozed_until),
        unsubscribe_links(identity, supporter),
        supporter.id,
    )


def render_draft(
    template: str,
    envelope: Envelope,
    identity: SenderIdentity,
    context: dict[str, Any],
    purpose: Purpose = Purpose.CAMPAIGN,
    attachments: tuple[tuple[str, str, bytes], ...] = (),
) -> Draft:
    """Render templates/email/<template>/{subject.txt, body.txt, body.html}."""
    env = current_app.jinja_env
    values = {
        "org_name": identity.org_name,
        "postal_address": identity.postal_address,
        "base_url": identity.base_url,
        "preferences_url": envelope.links.page_url,
        **context,
    }
    subject = env.get_template(f"email/{template}/subject.txt").render(values).strip()
    text = env.get_template(f"email/{template}/body.txt").render(values)
    body_html = env.get_template(f"email/{template}/body.html").render(values)
    return Draft(
        to=envelope.recipient.address,
        subject=subject,
        text=text,
        html=body_html,
        sender=identity.mail_from,
        category=template,
        purpose=purpose,
        attachments=attachments,
    )


def _claim(
    session: Session, dedupe_key: str, template: str, supporter_id: int | None
) -> EmailLog | None:
    """The log row for this email, newly claimed; None if it was already sent or skipped."""
    # On PostgreSQL the row stays locked until the caller commits, so two workers
    # retrying the same email cannot both send it; a locked row is someone else's.
    row = session.scalar(
        select(EmailLog).where(EmailLog.dedupe_key == dedupe_key).with_for_update(skip_locked=True)
    )
    if row is None and session.scalar(select(EmailLog.id).where(EmailLog.dedupe_key == dedupe_key)):
        return None
    if row is None:
        row = EmailLog(dedupe_key=dedupe_key, template=template, supporter_id=supporter_id)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            return None  # another worker claimed it
        return row
    if row.status in (EmailStatus.SENT, EmailStatus.SKIPPED):
        return None
    row.status = EmailStatus.SENDING
    return row


def send_templated(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    envelope: Envelope,
    template: str,
    dedupe_key: str,
    now: datetime,
    context: dict[str, Any] | None = None,
    purpose: Purpose = Purpose.CAMPAIGN,
    attachments: tuple[tuple[str, str, bytes], ...] = (),
) -> EmailLog | None:
    """Send one templated email through the seal, at most once per dedupe key.

    Returns the log row (sent or skipped with its reason), or None when this
    key was already handled. Raises EmailProviderError when the provider
    failed, and SealError when the rendered email breaks the unsubscribe
    rule; the row then says `failed` with the error.
    """
    row = _claim(session, dedupe_key, template, envelope.supporter_id)
    if row is None:
        return None
    draft = render_draft(template, envelope, identity, context or {}, purpose, attachments)
    try:
        outcome = seal(draft, envelope.recipient, envelope.links, identity.postal_address, now)
    except SealError as exc:
        # A broken template: record it for staff; retrying cannot fix it.
        row.status, row.error = EmailStatus.FAILED, f"refused by the seal: {exc}"[:500]
        session.flush()
        raise
    if not isinstance(outcome, SealedEmail):
        row.status, row.skip_reason = EmailStatus.SKIPPED, outcome.value
        session.flush()
        return row
    row.provider = provider.name
    try:
        row.provider_message_id = provider.send(outcome, {"email_log_id": str(row.id)})
    except EmailProviderError as exc:
        row.status, row.error = EmailStatus.FAILED, str(exc)[:500]
        session.flush()
        raise
    row.status, row.sent_at = EmailStatus.SENT, now
    session.flush()
    return row


def send_to_supporter(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    supporter: Supporter,
    template: str,
    dedupe_key: str,
    now: datetime,
    context: dict[str, Any] | None = None,
    purpose: Purpose = Purpose.CAMPAIGN,
    attachments: tuple[tuple[str, str, bytes], ...] = (),
) -> EmailLog | None:
    """`send_templated` to a supporter; templates see them as `supporter`."""
    return send_templated(
        session,
        provider,
        identity,
        supporter_envelope(identity, supporter),
        template,
        dedupe_key,
        now,
        {"supporter": supporter, **(context or {})},
        purpose,
        attachments,
    )
