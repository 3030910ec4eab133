"""Letters to officials: addressing, delivery to offices (each or daily digest), signer copy.

A letter goes to an office with the signer's name and postal code, never their
email address: the office reads the signer's own words, and nothing else about
them. Every office email passes the outbound seal with a link that lets the
office stop receiving letters (/t/<token>). Callers own the transaction.
"""

from __future__ import annotations

import enum
import unicodedata
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, func, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.actions import targets as target_service
from app.actions.forms import letter_limits
from app.actions.models import Action, ActionPage, LetterDelivery, PageKind, Target
from app.integrations.email import EmailProvider
from app.mailings.models import EmailLog, EmailStatus
from app.mailings.service import Envelope, SenderIdentity, send_templated, send_to_supporter
from app.supporters.models import SupporterStatus
from privacy.seal import Purpose, Recipient, UnsubscribeLinks

if TYPE_CHECKING:
    from app.actions.service import ActionDetails, ActionResult

EACH, DIGEST = "each", "digest"
MAX_SUBJECT = 200
DIGEST_MAX_LETTERS = 200  # per email; a busier office gets the rest in further parts
DIGEST_MAX_PARTS = 50
STALE_AFTER = timedelta(hours=1)
# The beat sweep queues signers' copies never handed over (the broker was down, say):
# letters that first reached an office between COPY_SWEEP_WINDOW and COPY_SWEEP_AFTER ago.
COPY_SWEEP_AFTER = timedelta(minutes=2)
COPY_SWEEP_WINDOW = timedelta(days=3)


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


def delivery_mode(page: ActionPage) -> str:
    """ "each" (one email per letter, the default) or "digest" (one a day per office)."""
    return DIGEST if page.settings.get("letter_delivery") == DIGEST else EACH


def _clean_body(text: str) -> str:
    """The letter as typed, without control characters other than line breaks and tabs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc").strip()


def letter_text(page: ActionPage, details: ActionDetails) -> tuple[str, str]:
    """The subject and body to send, within the limits staff set for the page.

    What the signer may not edit comes from the page, whatever was posted.
    Raises ActionError when the result is empty or too long.
    """
    from app.actions.service import ActionError

    editable, max_length = letter_limits(page.settings)
    subject = details.letter_subject if editable == "all" else page.settings.get("letter_subject")
    body = details.letter_body if editable != "none" else page.settings.get("letter_body")
    subject = " ".join(_clean_body(str(subject or "")).split())
    body = _clean_body(str(body or ""))
    if not subject or len(subject) > MAX_SUBJECT:
        raise ActionError(f"Please give your letter a subject of up to {MAX_SUBJECT} characters.")
    if not body:
        raise ActionError("Please write your letter.")
    if editable != "none" and len(body) > max_length:
        raise ActionError(f"Please keep your letter under {max_length:,} characters.")
    return subject, body


def deliveries_of(session: Session, action: Action) -> list[LetterDelivery]:
    """This action's letters, one per office, in the order they were addressed."""
    return list(
        session.scalars(
            select(LetterDelivery)
            .where(LetterDelivery.action_id == action.id)
            .order_by(LetterDelivery.id)
        )
    )


def _add_delivery(
    session: Session, action: Action, target: Target, now: datetime
) -> LetterDelivery | None:
    """Queue one letter to one office; None if a concurrent request already did."""
    delivery = LetterDelivery(action_id=action.id, target_id=target.id, created_at=now)
    try:
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        return None
    return delivery


def after_action(
    session: Session, page: ActionPage, result: ActionResult, details: ActionDetails, now: datetime
) -> None:
    """Store the letter and queue one delivery per target office.

    Acting again never sends the same office a second letter; it only adds
    offices that were not addressed before (a corrected postal code), and the
    letter already written stays as it was. `result.extra` gets the addressed
    offices' names ("letter_targets"), the deliveries to send now and whether
    the signer is owed a copy (once, when the letter first reaches an office).
    """
    action, supporter = result.action, result.supporter
    existing = deliveries_of(session, action)
    if not existing:
        action.letter_subject, action.letter_body = letter_text(page, details)
    addressed = {d.target_id for d in existing}
    matched = target_service.match_targets(session, page, supporter.postal_code, supporter.country)
    # Offices without an email take calls, not letters.
    fresh = [t for t in matched if t.office_email and t.id not in addressed]
    new = [d for t in fresh if (d := _add_delivery(session, action, t, now)) is not None]
    session.flush()
    result.extra["letter_targets"] = [d.target.name for d in _going([*existing, *new])]
    result.extra["letter_deliveries"] = [d.id for d in new] if delivery_mode(page) == EACH else []
    # The signer's copy goes once, when their letter first reaches an office.
    result.extra["letter_copy"] = bool(new) and not existing


def _going(deliveries: list[LetterDelivery]) -> list[LetterDelivery]:
    """Letters sent or on their way: not those skipped (an office opted out) or failed."""
    return [d for d in deliveries if d.status in (DeliveryStatus.QUEUED, DeliveryStatus.SENT)]


def thanks_context(session: Session, page: ActionPage, action: Action) -> dict[str, object]:
    """What the thank-you page says about where this letter went."""
    return {
        "letter_targets": [d.target for d in _going(deliveries_of(session, action))],
        "letter_delivery": delivery_mode(page),
    }


def target_links(identity: SenderIdentity, target: Target) -> UnsubscribeLinks:
    """The office's own links to stop receiving letters."""
    token = target_service.make_target_token(identity.secret_key, target.public_id)
    return UnsubscribeLinks(
        page_url=f"{identity.base_url}/t/{token}",
        one_click_url=f"{identity.base_url}/t/{token}/one-click",
    )


def office_envelope(identity: SenderIdentity, target: Target) -> Envelope:
    """An office as a recipient: an office that opted out counts as unsubscribed."""
    status = "unsubscribed" if target.opted_out_at is not None else "subscribed"
    return Envelope(Recipient(target.office_email, status), target_links(identity, target))


def letter_context(action: Action) -> dict[str, Any]:
    """One letter as an office sees it: the signer's name and postal code, not their email."""
    supporter = action.supporter
    return {
        "signer_name": supporter.full_name or "A constituent",
        "postal_code": supporter.postal_code,
        "subject": action.letter_subject,
        "body": action.letter_body,
        "page_title": action.page.title,
        "written_at": action.updated_at,
    }


def _record(delivery: LetterDelivery, row: EmailLog | None, now: datetime) -> str:
    """Copy what happened to the email onto the delivery; returns the outcome."""
    if row is None or row.status in (EmailStatus.SENDING, EmailStatus.FAILED):
        return "pending"
    if row.status == EmailStatus.SKIPPED:
        delivery.status, delivery.skip_reason = DeliveryStatus.SKIPPED, row.skip_reason
        return f"skipped:{row.skip_reason}"
    delivery.status, delivery.sent_at = DeliveryStatus.SENT, row.sent_at or now
    return "sent"


def _log_for(session: Session, dedupe_key: str) -> EmailLog | None:
    return session.scalar(select(EmailLog).where(EmailLog.dedupe_key == dedupe_key))


def _skip_if_erased(delivery: LetterDelivery) -> bool:
    """A signer erased since writing takes their letter back with them."""
    if delivery.action.supporter.status != SupporterStatus.ERASED:
        return False
    delivery.status, delivery.skip_reason = DeliveryStatus.SKIPPED, "erased"
    return True


def send_letter(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    delivery_id: int,
    now: datetime,
) -> str:
    """Send one queued letter to its office, at most once; returns what happened."""
    delivery = session.get(LetterDelivery, delivery_id)
    if delivery is None or delivery.status != DeliveryStatus.QUEUED:
        return "not-needed"
    if _skip_if_erased(delivery):
        session.flush()
        return "skipped:erased"
    key = f"letter:{delivery.id}"
    row = send_templated(
        session,
        provider,
        identity,
        office_envelope(identity, delivery.target),
        "letter-to-office",
        key,
        now,
        {"target": delivery.target, **letter_context(delivery.action)},
        Purpose.TRANSACTIONAL,
    )
    outcome = _record(delivery, row or _log_for(session, key), now)
    session.flush()
    return outcome


def mark_failed(session: Session, delivery_ids: list[int], reason: str) -> None:
    """Deliveries that will not be retried: the provider refused for good, or the seal did."""
    for delivery in session.scalars(
        select(LetterDelivery).where(
            LetterDelivery.id.in_(delivery_ids), LetterDelivery.status == DeliveryStatus.QUEUED
        )
    ):
        delivery.status, delivery.skip_reason = DeliveryStatus.FAILED, reason[:50]
    session.flush()


def letter_page_ids(session: Session, mode: str) -> list[int]:
    """Letter pages that deliver this way ("each" or "digest"); there are few of them."""
    pages = session.scalars(select(ActionPage).where(ActionPage.kind == PageKind.LETTER))
    return [page.id for page in pages if delivery_mode(page) == mode]


def queued_digest_deliveries(
    session: Session, target_id: int, limit: int | None = None
) -> list[LetterDelivery]:
    """An office's letters waiting for its digest, page by page, oldest first."""
    # On PostgreSQL a second worker on the same office skips rows this one is sending.
    return list(
        session.scalars(
            select(LetterDelivery)
            .join(Action, Action.id == LetterDelivery.action_id)
            .where(
                LetterDelivery.target_id == target_id,
                LetterDelivery.status == DeliveryStatus.QUEUED,
                Action.page_id.in_(letter_page_ids(session, DIGEST)),
            )
            .order_by(Action.page_id, LetterDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=LetterDelivery)
        )
    )


def digest_target_ids(session: Session) -> list[int]:
    """Offices with letters waiting for a digest."""
    return list(
        session.scalars(
            select(LetterDelivery.target_id)
            .join(Action, Action.id == LetterDelivery.action_id)
            .where(
                LetterDelivery.status == DeliveryStatus.QUEUED,
                Action.page_id.in_(letter_page_ids(session, DIGEST)),
            )
            .distinct()
            .order_by(LetterDelivery.target_id)
        )
    )


def _send_digest_part(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    target: Target,
    deliveries: list[LetterDelivery],
    key: str,
    now: datetime,
) -> str:
    """One digest email holding these letters; marks each delivery with the outcome."""
    row = send_templated(
        session,
        provider,
        identity,
        office_envelope(identity, target),
        "letter-digest",
        key,
        now,
        {
            "target": target,
            "day": now.date(),
            "letters": [letter_context(d.action) for d in deliveries],
        },
        Purpose.TRANSACTIONAL,
    )
    if row is None:
        return "already-sent"  # this part went out earlier (a retry): on to the next
    outcomes = {_record(d, row, now) for d in deliveries}
    session.flush()
    return outcomes.pop() if len(outcomes) == 1 else "mixed"


def send_digest(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    target_id: int,
    now: datetime,
) -> str:
    """Send an office today's digest of its queued letters, once a day; returns what happened.

    The first email's dedupe key is letter-digest:<target>:<date>; an office with
    more letters than fit in one email gets further parts the same day, and a
    retry after a failed part carries on from the part that failed.
    """
    target = session.get(Target, target_id)
    if target is None:
        return "not-needed"
    base_key = f"letter-digest:{target.id}:{now.date().isoformat()}"
    outcome = "nothing-queued"
    for part in range(1, DIGEST_MAX_PARTS + 1):
        batch = queued_digest_deliveries(session, target.id, DIGEST_MAX_LETTERS)
        queued = [d for d in batch if not _skip_if_erased(d)]
        if not batch:
            break
        key = base_key if part == 1 else f"{base_key}:{part}"
        if queued:
            outcome = _send_digest_part(session, provider, identity, target, queued, key, now)
        if outcome == "pending":
            break
    session.flush()
    return outcome


def stale_letter_ids(session: Session, now: datetime, limit: int = 1000) -> list[int]:
    """Letters to send one by one that never went (the broker was down, say).

    A letter whose send failed is left out: its own task retries it with
    backoff, or it failed for good and says so.
    """
    failed = (
        select(EmailLog.id)
        .where(
            EmailLog.dedupe_key == literal("letter:") + cast(LetterDelivery.id, String),
            EmailLog.status == EmailStatus.FAILED,
        )
        .exists()
    )
    return list(
        session.scalars(
            select(LetterDelivery.id)
            .join(Action, Action.id == LetterDelivery.action_id)
            .where(
                LetterDelivery.status == DeliveryStatus.QUEUED,
                LetterDelivery.created_at < now - STALE_AFTER,
                Action.page_id.in_(letter_page_ids(session, EACH)),
                ~failed,
            )
            .order_by(LetterDelivery.id)
            .limit(limit)
        )
    )


def send_copy(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    action_id: int,
    now: datetime,
) -> str:
    """Send the signer a copy of their letter and where it went, once; returns what happened."""
    action = session.get(Action, action_id)
    if action is None or not action.letter_body:
        return "not-needed"
    row = send_to_supporter(
        session,
        provider,
        identity,
        action.supporter,
        "letter-copy",
        copy_key(action.id),
        now,
        {
            "page": action.page,
            "subject": action.letter_subject,
            "body": action.letter_body,
            "targets": [d.target for d in _going(deliveries_of(session, action))],
            "each": delivery_mode(action.page) == EACH,
        },
        Purpose.TRANSACTIONAL,
    )
    if row is None:
        return "already-sent"
    return row.status if not row.skip_reason else f"skipped:{row.skip_reason}"


def copy_key(action_id: int) -> str:
    return f"letter-copy:{action_id}"


def pending_copy_ids(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Letter actions whose signer's copy was never handed over (the broker was down, say).

    A copy is owed once the letter reached at least one office (after_action owes
    it when the first delivery is stored), so the clock is that first delivery.
    Only copies with no log row at all: one whose send failed is left out, as its
    own task retries it with backoff (or it failed for good and staff see why).
    """
    first_delivery = (
        select(func.min(LetterDelivery.created_at))
        .where(LetterDelivery.action_id == Action.id)
        .scalar_subquery()
    )
    logged = (
        select(EmailLog.id)
        .where(EmailLog.dedupe_key == literal("letter-copy:") + cast(Action.id, String))
        .exists()
    )
    return list(
        session.scalars(
            select(Action.id)
            .where(
                Action.letter_body != "",
                first_delivery < now - COPY_SWEEP_AFTER,
                first_delivery > now - COPY_SWEEP_WINDOW,
                ~logged,
            )
            .order_by(Action.id)
            .limit(limit)
        )
    )
