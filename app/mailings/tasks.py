"""Sending email from Celery tasks: one retry policy for every kind of message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from celery import Task, shared_task
from flask import current_app
from sqlalchemy.orm import Session

from app.extensions import db
from app.integrations.email import EmailProvider, EmailProviderError, provider_from_config
from app.mailings import pipeline
from app.mailings.models import Mailing, MailingStatus
from app.mailings.service import SenderIdentity
from app.timeutil import utcnow
from privacy.seal import SealError

log = logging.getLogger(__name__)

Send = Callable[[Session, EmailProvider, SenderIdentity, datetime], str]


def send_with_retries(
    task: Task, what: str, send: Send, give_up: Callable[[str], None] | None = None
) -> str:
    """Run one send; retry with backoff while the provider fails, record for good failures."""
    config = current_app.config
    try:
        outcome = send(
            db.session, provider_from_config(config), SenderIdentity.from_config(config), utcnow()
        )
    except SealError as exc:
        db.session.commit()  # the `failed` email row tells staff; a retry would fail the same way
        log.error("%s refused by the seal: %s", what, exc)
        if give_up:
            give_up("refused-by-seal")
            db.session.commit()
        return "refused"
    except EmailProviderError as exc:
        db.session.commit()  # keep the `failed` row and its error for staff to see
        if exc.retryable and task.request.retries < (task.max_retries or 0):
            raise task.retry(exc=exc, countdown=min(3600, 30 * 2**task.request.retries)) from exc
        log.warning("%s failed for good: %s", what, exc)
        if give_up:
            give_up("provider-error")
            db.session.commit()
        return "failed"
    db.session.commit()
    return outcome


# --- The mailing send pipeline (see app/mailings/pipeline.py) --------------------------

# Chunk tasks retry a provider that keeps failing for about a day before the
# mailing is paused for staff to look at (the rows stay queued).
CHUNK_MAX_RETRIES = 12


def _daily_cap() -> int:
    return int(current_app.config.get("MAILING_DAILY_CAP", pipeline.DEFAULT_DAILY_CAP))


def _lease() -> timedelta:
    seconds = current_app.config.get("MAILING_CLAIM_LEASE_SECONDS")
    return timedelta(seconds=float(seconds)) if seconds else pipeline.DEFAULT_LEASE


def enqueue_chunks(
    mailing_id: int, recipients: int, throttle_per_hour: int | None, first_index: int = 0
) -> int:
    """Queue enough chunk tasks for `recipients` queued rows, spread by the throttle.

    `first_index` is how many chunks of this send were queued before, so that a
    throttled mailing materialised range by range keeps one steady pace.
    """
    countdowns = pipeline.chunk_countdowns(recipients, throttle_per_hour, first_index)
    for countdown in countdowns:
        send_mailing_chunk.apply_async(args=[mailing_id], countdown=countdown or None)
    return len(countdowns)


def start_mailing(session: Session, mailing: Mailing, now: datetime) -> tuple[int, int]:
    """Materialise everyone at once and mark sending (the caller commits); return
    (added, queued). For the CLI and tests; the web queues `mailings.send` instead."""
    identity = SenderIdentity.from_config(current_app.config)
    added = pipeline.start_send(session, mailing, identity, now, _daily_cap())
    return added, pipeline.queued_count(session, mailing.id)


@shared_task(name="mailings.send")
def send_mailing(mailing_id: int) -> int:
    """Materialise a requested mailing's recipients range by range, committing each range
    and queuing its chunk tasks at once, so sending starts while the rest is added.

    Safe to run twice at once or again after a crash: each range is locked, the
    cursor moves in the same transaction as the insert, and the (mailing, supporter)
    pair is unique. Returns how many recipients this run added.
    """
    session = db.session
    mailing = session.get(Mailing, mailing_id)
    if mailing is None:
        log.warning("mailing %s does not exist", mailing_id)
        return 0
    if mailing.status in pipeline.EDITABLE:
        try:  # the CLI or a test queued a draft directly: request it first
            pipeline.request_send(
                session, mailing, SenderIdentity.from_config(current_app.config), utcnow()
            )
            session.commit()
        except (SealError, pipeline.PipelineError) as exc:
            session.rollback()
            log.error("mailing %s not sent: %s", mailing_id, exc)
            return 0
    added_total = 0
    chunks_queued = 0
    if mailing.materialise_cursor is not None and mailing.materialised_at is None:
        # Started again after a crash: the last range's rows may have no chunk tasks yet.
        leftover = pipeline.queued_count(session, mailing_id)
        chunks_queued += enqueue_chunks(mailing_id, leftover, mailing.throttle_per_hour)
    while True:
        mailing = pipeline.lock_mailing(session, mailing_id)
        if mailing is None or mailing.status not in (*pipeline.CLAIMABLE, MailingStatus.PAUSED):
            session.rollback()
            break
        added = pipeline.materialise_next_range(session, mailing, utcnow(), _daily_cap())
        throttle = mailing.throttle_per_hour
        session.commit()
        if added is None:
            break
        added_total += added
        if added:
            chunks_queued += enqueue_chunks(mailing_id, added, throttle, chunks_queued)
    pipeline.finish_if_done(session, mailing_id, utcnow())  # e.g. a segment of nobody
    session.commit()
    return added_total


@shared_task(name="mailings.start_scheduled")
def start_scheduled_mailings() -> int:
    """Beat job: start every scheduled mailing whose time has come."""
    started = 0
    identity = SenderIdentity.from_config(current_app.config)
    for mailing_id in pipeline.due_mailings(db.session, utcnow()):
        mailing = pipeline.lock_mailing(db.session, mailing_id)
        if mailing is None or mailing.status != MailingStatus.SCHEDULED:
            db.session.rollback()
            continue
        try:
            pipeline.request_send(db.session, mailing, identity, utcnow())
        except (SealError, pipeline.PipelineError) as exc:
            db.session.rollback()
            log.error("scheduled mailing %s not started: %s", mailing_id, exc)
            continue
        db.session.commit()
        send_mailing.delay(mailing_id)
        started += 1
    return started


@shared_task(name="mailings.decide_ab_tests")
def decide_ab_tests() -> int:
    """Beat job: choose the winner of each A/B test whose time is up, and send it to the rest."""
    decided = 0
    for mailing_id in pipeline.ab_tests_to_decide(db.session, utcnow()):
        mailing = pipeline.lock_mailing(db.session, mailing_id)
        if mailing is None or mailing.status != MailingStatus.TESTING:
            db.session.rollback()
            continue
        winner = pipeline.decide_ab(db.session, mailing, utcnow())
        db.session.commit()
        log.info("mailing %s: subject %s won the A/B test", mailing_id, winner)
        send_mailing.delay(mailing_id)
        decided += 1
    return decided


@shared_task(name="mailings.send_chunk", bind=True, max_retries=CHUNK_MAX_RETRIES)
def send_mailing_chunk(self: Task, mailing_id: int) -> int:
    """Claim up to 1,000 queued deliveries and send them in one provider call.

    The claim is committed before the provider is called, so a worker that
    dies mid-send leaves its rows `sending` for `mailings.reconcile`. Retryable
    provider errors put the rows back and retry after the provider's
    X-RateLimit-Reset (or with exponential backoff).
    """
    session = db.session
    mailing = session.get(Mailing, mailing_id)
    if mailing is None:
        return 0
    rows = pipeline.claim_chunk(session, mailing_id, utcnow())
    session.commit()
    if not rows:
        pipeline.finish_if_done(session, mailing_id, utcnow())
        session.commit()
        return 0
    config = current_app.config
    try:
        result = pipeline.send_chunk(
            session,
            provider_from_config(config),
            SenderIdentity.from_config(config),
            mailing,
            rows,
            utcnow(),
        )
    except SealError as exc:
        # The body itself broke the rule (it was edited after Send): stop the mailing.
        session.rollback()
        log.error("mailing %s refused by the seal, paused: %s", mailing_id, exc)
        pipeline.release(session, [row.delivery_id for row in rows])
        _pause_quietly(session, mailing_id)
        session.commit()
        return 0
    except EmailProviderError as exc:
        session.commit()  # the rows went back to queued (or failed for good)
        if exc.retryable and self.request.retries < (self.max_retries or 0):
            backoff = min(3600.0, 30.0 * 2**self.request.retries)
            countdown = exc.retry_after if exc.retry_after is not None else backoff
            raise self.retry(exc=exc, countdown=max(1.0, countdown)) from exc
        log.error("mailing %s chunk gave up: %s", mailing_id, exc)
        if exc.retryable:
            _pause_quietly(session, mailing_id)
            session.commit()
        return 0
    pipeline.finish_if_done(session, mailing_id, utcnow())
    session.commit()
    return result.sent


def _pause_quietly(session: Session, mailing_id: int) -> None:
    mailing = session.get(Mailing, mailing_id)
    if mailing is not None and mailing.status == MailingStatus.SENDING:
        pipeline.pause(session, mailing, utcnow())


@shared_task(name="mailings.reconcile")
def reconcile_mailings() -> int:
    """Beat job: re-queue deliveries whose worker died mid-send, and queue tasks for them."""
    requeued_total = 0
    now = utcnow()
    for mailing_id in pipeline.mailings_to_reconcile(db.session):
        result = pipeline.reconcile(db.session, mailing_id, _lease(), now)
        pipeline.finish_if_done(db.session, mailing_id, now)
        mailing = db.session.get(Mailing, mailing_id)
        throttle = mailing.throttle_per_hour if mailing else None
        db.session.commit()
        if result.requeued:
            log.warning(
                "mailing %s: %s deliveries re-queued after a lost worker (possible duplicates)",
                mailing_id,
                result.requeued,
            )
            enqueue_chunks(mailing_id, result.requeued, throttle)
        requeued_total += result.requeued
    # A materialiser that died part-way (its worker was killed) starts again at its cursor.
    for mailing_id in pipeline.mailings_materialising(db.session, now - _lease()):
        log.warning("mailing %s: materialising stopped part-way, starting it again", mailing_id)
        send_mailing.delay(mailing_id)
    # Rows queued with no chunk task left to claim them get tasks again.
    for mailing_id in pipeline.stalled_queues(db.session, now - _lease()):
        queued = pipeline.queued_count(db.session, mailing_id)
        log.warning(
            "mailing %s: %s queued rows had no chunk task, queuing again", mailing_id, queued
        )
        enqueue_chunks(mailing_id, queued, None)
    return requeued_total
