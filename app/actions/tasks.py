"""Celery tasks for action pages, and what runs once an action is committed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celery import Task, shared_task

from app.actions import events
from app.extensions import db
from app.mailings.tasks import send_with_retries
from app.supporters.tasks import enqueue_welcome
from app.timeutil import utcnow

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
def send_rsvp_email(self: Task, rsvp_id: int, kind: str) -> str:
    """Send an RSVP's confirmation, waitlist or promotion email; retry while the provider fails."""
    return send_with_retries(
        self,
        f"{kind} email for RSVP {rsvp_id}",
        lambda session, provider, identity, now: events.send_rsvp_email(
            session, provider, identity, rsvp_id, kind, now
        ),
    )


@shared_task(name="actions.send_pending_rsvp_emails")
def send_pending_rsvp_emails() -> int:
    """Beat job: queue RSVP emails whose task was never queued (the broker was down)."""
    pending = events.pending_rsvp_emails(db.session, utcnow())
    db.session.commit()
    for rsvp_id, kind in pending:
        send_rsvp_email.delay(rsvp_id, kind)
    return len(pending)


def enqueue_rsvp_email(rsvp_id: int, kind: str) -> None:
    """Queue an RSVP email ("going", "waitlisted" or "promoted") after the change committed."""
    try:
        send_rsvp_email.delay(rsvp_id, kind)
    except Exception:  # the broker being down must not undo the RSVP; the sweep will
        log.exception("could not queue the %s email for RSVP %s", kind, rsvp_id)
