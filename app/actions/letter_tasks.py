"""Celery tasks for letters to officials: thin wrappers over app.actions.letters."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task

from app.actions import letters
from app.extensions import db
from app.mailings.tasks import send_with_retries
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.actions.service import ActionResult

log = logging.getLogger(__name__)


@shared_task(name="letters.send_letter", bind=True, max_retries=10)
def send_letter(self: Task, delivery_id: int) -> str:
    """Send one letter to its office."""
    return send_with_retries(
        self,
        f"letter delivery {delivery_id}",
        lambda s, p, i, now: letters.send_letter(s, p, i, delivery_id, now),
        lambda reason: letters.mark_failed(db.session, [delivery_id], reason),
    )


@shared_task(name="letters.send_copy", bind=True, max_retries=10)
def send_copy(self: Task, action_id: int) -> str:
    """Send the signer the copy of their letter."""
    return send_with_retries(
        self,
        f"letter copy for action {action_id}",
        lambda s, p, i, now: letters.send_copy(s, p, i, action_id, now),
    )


@shared_task(name="letters.send_digest", bind=True, max_retries=10)
def send_digest(self: Task, target_id: int) -> str:
    """Send one office today's digest of its queued letters."""
    return send_with_retries(
        self,
        f"letter digest for target {target_id}",
        lambda s, p, i, now: letters.send_digest(s, p, i, target_id, now),
        lambda reason: letters.mark_failed(
            db.session,
            [d.id for d in letters.queued_digest_deliveries(db.session, target_id)],
            reason,
        ),
    )


@shared_task(name="letters.send_daily_digests")
def send_daily_digests() -> int:
    """Beat job, once a day: one digest task per office with letters waiting."""
    target_ids = letters.digest_target_ids(db.session)
    db.session.commit()
    for target_id in target_ids:
        send_digest.delay(target_id)
    return len(target_ids)


@shared_task(name="letters.send_stale_letters")
def send_stale_letters() -> int:
    """Beat job: queue again letters whose task was never queued (the broker was down)."""
    ids = letters.stale_letter_ids(db.session, utcnow())
    db.session.commit()
    for delivery_id in ids:
        send_letter.delay(delivery_id)
    return len(ids)


@shared_task(name="letters.send_pending_copies")
def send_pending_copies() -> int:
    """Beat job: queue signers' copies whose task was never queued (the broker was down)."""
    ids = letters.pending_copy_ids(db.session, utcnow())
    db.session.commit()
    for action_id in ids:
        send_copy.delay(action_id)
    return len(ids)


def _enqueue(task: Any, *args: int) -> None:
    """Queue a task; the broker being down must not undo the action (the sweep retries)."""
    try:
        task.delay(*args)
    except Exception:
        log.exception("could not queue %s%s", task.name, args)


def enqueue_letter_emails(result: ActionResult) -> None:
    """After a letter action committed: each new letter to its office, then the signer's copy."""
    for delivery_id in result.extra.get("letter_deliveries", []):
        _enqueue(send_letter, delivery_id)
    if result.extra.get("letter_copy"):
        _enqueue(send_copy, result.action.id)
