"""Celery tasks for action pages, and what runs once an action is committed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celery import shared_task
from flask import current_app

from app.actions import events
from app.extensions import db
from app.integrations.email import EmailProviderError, provider_from_config
from app.mailings.service import SenderIdentity
from app.supporters.tasks import enqueue_welcome
from app.timeutil import utcnow
from privacy.seal import SealError

if TYPE_CHECKING:
    from app.actions.service import ActionResult

log = logging.getLogger(__name__)


def after_action_committed(result: ActionResult) -> None:
    """Queue the emails an action causes, once it is safely stored."""
    if result.subscribed_now and result.supporter.welcomed_at is None:
        enqueue_welcome(result.supporter.id)
    if "letter_targets" in result.extra:
        from app.actions.letter_tasks import enqueue_letter_emails

        enqueue_letter_emails(result)
    if result.extra.get("rsvp_changed"):
        enqueue_rsvp_email(int(result.extra["rsvp_id"]), str(result.extra["rsvp_status"]))


@shared_task(name="actions.send_rsvp_email", bind=True, max_retries=10)
def send_rsvp_email(self, rsvp_id: int, kind: str) -> str:  # type: ignore[no-untyped-def]
    """Send an RSVP's confirmation, waitlist or promotion email; retry while the provider fails."""
    config = current_app.config
    try:
        outcome = events.send_rsvp_email(
            db.session,
            provider_from_config(config),
            SenderIdentity.from_config(config),
            rsvp_id,
            kind,
            utcnow(),
        )
    except SealError as exc:
        db.session.commit()  # the `failed` row tells staff; a retry would fail the same way
        log.error("%s email for RSVP %s refused by the seal: %s", kind, rsvp_id, exc)
        return "refused"
    except EmailProviderError as exc:
        db.session.commit()  # keep the `failed` row and its error for staff to see
        if not exc.retryable:
            log.warning("%s email for RSVP %s failed for good: %s", kind, rsvp_id, exc)
            return "failed"
        raise self.retry(exc=exc, countdown=min(3600, 30 * 2**self.request.retries)) from exc
    db.session.commit()
    return outcome


def enqueue_rsvp_email(rsvp_id: int, kind: str) -> None:
    """Queue an RSVP email ("going", "waitlisted" or "promoted") after the change committed."""
    try:
        send_rsvp_email.delay(rsvp_id, kind)
    except Exception:  # the broker being down must not undo the RSVP
        log.exception("could not queue the %s email for RSVP %s", kind, rsvp_id)
