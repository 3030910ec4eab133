"""The send pipeline: materialise recipients, claim chunks, send each chunk in one request.

Every function takes the session and the clock; none commits: the task or
command that calls it owns the transaction. The flow (DESIGN.md, "The send
pipeline"):

1. `start_send` seals the mailing's body once (a body without the unsubscribe
   link or postal address is refused before anyone is queued) and
   `materialise`s its recipients in one INSERT ... SELECT. The unique
   (mailing_id, supporter_id) pair means a second Send adds nobody twice.
2. Chunk tasks `claim_chunk` up to 1,000 queued rows (an UPDATE ... RETURNING
   that only takes rows still queued; FOR UPDATE SKIP LOCKED on PostgreSQL),
   commit the claim, then `send_chunk` seals each recipient and hands the
   chunk to the provider in one call, marking the rows sent with its message
   id; on a retryable provider error the rows go back to queued.
3. A worker that dies between claim and mark leaves rows `sending`;
   `reconcile` confirms those the provider reported as processed and
   re-queues the rest, counting them in `duplicates_count` (each may have
   been sent already: at most one chunk per dead worker).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formataddr, parseaddr
from typing import Any
from urllib.parse import quote

from sqlalchemy import and_, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.integrations.email import MAX_BULK_RECIPIENTS, EmailProvider, EmailProviderError
from app.mailings.composer import DEFAULT_FIRST_NAME, FIRST_NAME_PLACEHOLDER, bulk_draft
from app.mailings.models import (
    Delivery,
    DeliveryStatus,
    Mailing,
    MailingStatus,
    ProviderEvent,
)
from app.mailings.service import SenderIdentity
from app.supporters.models import Supporter, SupporterStatus
from app.supporters.tokens import make_token, one_click_url, preferences_url
from privacy.seal import (
    UNSUBSCRIBE_PLACEHOLDER,
    Recipient,
    SealedBulk,
    SealedRecipient,
    SealError,
    SkipReason,
    UnsubscribeLinks,
    seal_bulk,
    seal_recipient,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = MAX_BULK_RECIPIENTS
DEFAULT_DAILY_CAP = 1
DEFAULT_LEASE = timedelta(minutes=5)


class PipelineError(ValueError):
    """The mailing cannot do what was asked in its current state."""


@dataclass(frozen=True)
class ClaimedDelivery:
    """A claimed delivery with what sealing and addressing it needs."""

    delivery_id: int
    supporter_id: int
    email: str
    first_name: str
    public_id: str
    status: str
    snoozed_until: datetime | None


@dataclass(frozen=True)
class ChunkResult:
    claimed: int
    sent: int
    skipped: int
    failed: int
    message_id: str


@dataclass(frozen=True)
class ReconcileResult:
    confirmed: int  # rows the provider reported as processed: marked sent
    requeued: int  # rows put back in the queue: possible duplicates, counted


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# --- compose and start ---------------------------------------------------------------


def create_mailing(
    session: Session,
    *,
    subject: str,
    body_md: str,
    now: datetime,
    from_name: str = "",
    reply_to: str = "",
    preheader: str = "",
    segment: dict[str, Any] | None = None,
    throttle_per_hour: int | None = None,
    created_by_id: int | None = None,
) -> Mailing:
    """A new draft mailing (flushed, so it has an id)."""
    if not subject.strip():
        raise PipelineError("a mailing needs a subject")
    if not body_md.strip():
        raise PipelineError("a mailing needs a body")
    if throttle_per_hour is not None and throttle_per_hour <= 0:
        raise PipelineError("the throttle must be a positive number of messages per hour")
    mailing = Mailing(
        subject=subject.strip(),
        body_md=body_md,
        from_name=from_name,
        reply_to=reply_to,
        preheader=preheader,
        segment=segment or {},
        throttle_per_hour=throttle_per_hour,
        created_by_id=created_by_id,
        status=MailingStatus.DRAFT,
        created_at=now,
        updated_at=now,
    )
    session.add(mailing)
    session.flush()
    return mailing


def sealed_body(mailing: Mailing, identity: SenderIdentity) -> SealedBulk:
    """The mailing's body rendered once and sealed; raises SealError if it breaks the rule."""
    sender = identity.mail_from
    if mailing.from_name:
        sender = formataddr((mailing.from_name, parseaddr(identity.mail_from)[1]))
    draft = bulk_draft(
        mailing.subject,
        mailing.body_md,
        sender=sender,
        org_name=identity.org_name,
        postal_address=identity.postal_address,
        reply_to=mailing.reply_to or None,
        preheader=mailing.preheader,
        category=f"mailing-{mailing.id}",
    )
    return seal_bulk(draft, identity.postal_address)


def materialise(
    session: Session, mailing: Mailing, now: datetime, daily_cap: int = DEFAULT_DAILY_CAP
) -> int:
    """Queue a delivery for every eligible supporter without one; return how many were added.

    One INSERT ... SELECT: subscribed, not snoozed, no delivery of this mailing
    yet, and (when daily_cap > 0) fewer than daily_cap other mailings sent or
    on their way to them in the last 24 hours. ON CONFLICT DO NOTHING on the
    (mailing_id, supporter_id) pair settles two concurrent Sends.
    """
    # TODO(segments): mailing.segment narrows this to the saved segment; today every subscriber.
    conditions = [
        Supporter.status == SupporterStatus.SUBSCRIBED.value,
        or_(Supporter.snoozed_until.is_(None), Supporter.snoozed_until <= now),
        ~exists().where(Delivery.mailing_id == mailing.id, Delivery.supporter_id == Supporter.id),
    ]
    if daily_cap > 0:
        recent = (
            select(Delivery.supporter_id)
            .where(
                Delivery.mailing_id != mailing.id,
                or_(
                    and_(
                        Delivery.status == DeliveryStatus.SENT.value,
                        Delivery.sent_at > now - timedelta(hours=24),
                    ),
                    Delivery.status.in_(
                        [DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value]
                    ),
                ),
            )
            .group_by(Delivery.supporter_id)
            .having(func.count() >= daily_cap)
        )
        conditions.append(Supporter.id.not_in(recent))
    source = select(
        literal(mailing.id),
        Supporter.id,
        literal("a"),
        literal(DeliveryStatus.QUEUED.value),
        literal(0),
        literal(""),
    ).where(*conditions)
    columns = ["mailing_id", "supporter_id", "variant", "status", "attempts", "provider_message_id"]
    table = Delivery.__table__
    if _dialect(session) == "postgresql":
        # psycopg does not report a rowcount for this statement: count what RETURNING
        # gives back, on the server, in the same statement.
        inserted = (
            postgresql.insert(table)
            .from_select(columns, source)
            .on_conflict_do_nothing()
            .returning(table.c.id)
            .cte("inserted")
        )
        return int(session.scalar(select(func.count()).select_from(inserted)) or 0)
    stmt = sqlite.insert(table).from_select(columns, source).on_conflict_do_nothing()
    return max(0, int(session.connection().execute(stmt).rowcount or 0))


def start_send(
    session: Session,
    mailing: Mailing,
    identity: SenderIdentity,
    now: datetime,
    daily_cap: int = DEFAULT_DAILY_CAP,
) -> int:
    """Seal the body, materialise the recipients and mark the mailing sending.

    Returns how many recipients were added by this call (0 on a second Send).
    Raises SealError for a body that breaks the unsubscribe rule, and
    PipelineError for a mailing that was cancelled or has finished.
    """
    if mailing.status in (MailingStatus.CANCELLED, MailingStatus.SENT):
        raise PipelineError(f"mailing {mailing.id} is {mailing.status}")
    sealed_body(mailing, identity)  # refuse a broken body before anyone is queued
    added = materialise(session, mailing, now, daily_cap)
    if mailing.status != MailingStatus.PAUSED:
        mailing.status = MailingStatus.SENDING
    mailing.started_at = mailing.started_at or now
    mailing.updated_at = now
    mailing.recipients_count = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.mailing_id == mailing.id)
    )
    session.flush()
    return added


def queued_count(session: Session, mailing_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.mailing_id == mailing_id,
                Delivery.status == DeliveryStatus.QUEUED.value,
            )
        )
        or 0
    )


def chunk_countdowns(
    recipients: int, throttle_per_hour: int | None, size: int = CHUNK_SIZE
) -> list[float]:
    """Seconds from now at which each chunk task should run: all at once, or spread
    so that no more than throttle_per_hour messages leave in any hour."""
    chunks = math.ceil(recipients / size) if recipients > 0 else 0
    if not throttle_per_hour:
        return [0.0] * chunks
    seconds_per_message = 3600.0 / throttle_per_hour
    return [i * size * seconds_per_message for i in range(chunks)]


# --- claim and send -------------------------------------------------------------------


def claim_chunk(
    session: Session, mailing_id: int, now: datetime, size: int = CHUNK_SIZE
) -> list[ClaimedDelivery]:
    """Claim up to `size` queued deliveries of a sending mailing; nobody else can claim them.

    Returns nothing when the mailing is not sending (paused, cancelled). The
    caller should commit right away so the claim (and its lease) is visible.
    """
    status = session.scalar(select(Mailing.status).where(Mailing.id == mailing_id))
    if status != MailingStatus.SENDING:
        return []
    candidates = (
        select(Delivery.id)
        .where(
            Delivery.mailing_id == mailing_id,
            Delivery.status == DeliveryStatus.QUEUED.value,
        )
        .order_by(Delivery.id)
        .limit(size)
    )
    if _dialect(session) == "postgresql":
        # Picked once, in a materialised CTE: as `id IN (subquery)` PostgreSQL may run
        # the LIMIT ... SKIP LOCKED subquery more than once and claim more than `size`.
        picked = (
            candidates.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        )
        chosen = Delivery.id == picked.c.id
    else:
        # SQLite has one writer at a time, so the subquery and the update cannot interleave.
        chosen = Delivery.id.in_(candidates)
    claim = (
        update(Delivery)
        .where(chosen, Delivery.status == DeliveryStatus.QUEUED.value)
        .values(
            status=DeliveryStatus.SENDING.value,
            claimed_at=now,
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    ids = list(session.scalars(claim))
    if not ids:
        return []
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.supporter_id,
            Supporter.email,
            Supporter.first_name,
            Supporter.public_id,
            Supporter.status,
            Supporter.snoozed_until,
        )
        .join(Supporter, Supporter.id == Delivery.supporter_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    return [ClaimedDelivery(*row) for row in rows]


# Names go into the HTML part as they are: no markup, and no quote to leave an attribute.
_UNSAFE_IN_NAME = re.compile(r'[<>"\r\n\x00]')


def recipient_substitutions(
    identity: SenderIdentity, row: ClaimedDelivery, mailbox: str
) -> tuple[dict[str, str], UnsubscribeLinks]:
    """The per-recipient values SendGrid fills in, and the recipient's opt-out links."""
    token = make_token(identity.secret_key, row.public_id)
    links = UnsubscribeLinks(
        page_url=preferences_url(identity.base_url, token),
        one_click_url=one_click_url(identity.base_url, token),
        mailto=f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}" if mailbox else "",
    )
    name = _UNSAFE_IN_NAME.sub("", row.first_name or "").strip()
    if not name or FIRST_NAME_PLACEHOLDER in name or UNSUBSCRIBE_PLACEHOLDER in name:
        name = DEFAULT_FIRST_NAME
    return {UNSUBSCRIBE_PLACEHOLDER: links.page_url, FIRST_NAME_PLACEHOLDER: name}, links


def _set_status(session: Session, ids: list[int], status: str, **values: Any) -> None:
    if not ids:
        return
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.SENDING.value)
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )


def send_chunk(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    mailing: Mailing,
    rows: list[ClaimedDelivery],
    now: datetime,
) -> ChunkResult:
    """Seal each claimed recipient and send the chunk in one provider call.

    Rows end `sent` (with the provider's message id), `skipped` (the seal
    said so: they unsubscribed or were snoozed since materialising) or
    `failed` (an address the seal refuses). On an EmailProviderError the rows
    go back to `queued` when it is retryable, `failed` when not, and the error
    is raised for the task to retry. A SealError for the body is raised as is.
    """
    body = sealed_body(mailing, identity)
    mailbox = identity.unsubscribe_address()
    sealed: list[SealedRecipient] = []
    custom_args: list[dict[str, str]] = []
    send_ids: list[int] = []
    skipped: list[int] = []
    failed: list[int] = []
    for row in rows:
        substitutions, links = recipient_substitutions(identity, row, mailbox)
        recipient = Recipient(row.email, row.status, row.snoozed_until)
        try:
            outcome = seal_recipient(body, recipient, substitutions, links, now)
        except SealError as exc:
            log.warning("delivery %s refused by the seal: %s", row.delivery_id, exc)
            failed.append(row.delivery_id)
            continue
        if isinstance(outcome, SkipReason):
            skipped.append(row.delivery_id)
            continue
        sealed.append(outcome)
        custom_args.append({"delivery_id": str(row.delivery_id), "mailing_id": str(mailing.id)})
        send_ids.append(row.delivery_id)
    _set_status(session, skipped, DeliveryStatus.SKIPPED)
    _set_status(session, failed, DeliveryStatus.FAILED.value)
    message_id = ""
    if sealed:
        try:
            message_id = provider.send_bulk(body, sealed, custom_args)
        except EmailProviderError as exc:
            if exc.retryable:
                _set_status(session, send_ids, DeliveryStatus.QUEUED.value, claimed_at=None)
            else:
                _set_status(session, send_ids, DeliveryStatus.FAILED.value)
            session.flush()
            raise
        _set_status(
            session,
            send_ids,
            DeliveryStatus.SENT.value,
            sent_at=now,
            provider_message_id=message_id[:200],
        )
    session.flush()
    return ChunkResult(len(rows), len(send_ids), len(skipped), len(failed), message_id)


def release(session: Session, delivery_ids: list[int]) -> None:
    """Put claimed rows back in the queue (nothing was handed to the provider)."""
    _set_status(session, delivery_ids, DeliveryStatus.QUEUED.value, claimed_at=None)
    session.flush()


def finish_if_done(session: Session, mailing_id: int, now: datetime) -> bool:
    """Mark a sending mailing sent once no delivery is queued or sending."""
    pending = exists().where(
        Delivery.mailing_id == mailing_id,
        Delivery.status.in_([DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value]),
    )
    result = session.execute(
        update(Mailing)
        .where(Mailing.id == mailing_id, Mailing.status == MailingStatus.SENDING, ~pending)
        .values(status=MailingStatus.SENT, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- after a crash --------------------------------------------------------------------


def confirmed_by_provider(session: Session, delivery_ids: list[int]) -> set[int]:
    """Deliveries the provider reported as `processed` (delivery id in custom_args).

    This is the hook for the webhook inbox: once provider events carry the
    delivery id, rows left `sending` that SendGrid processed are marked sent
    instead of being re-queued, so they are not sent twice.
    """
    if not delivery_ids:
        return set()
    return set(
        session.scalars(
            select(ProviderEvent.delivery_id).where(
                ProviderEvent.delivery_id.in_(delivery_ids),
                ProviderEvent.event_type == "processed",
            )
        )
    )


def reconcile(
    session: Session, mailing_id: int, lease: timedelta, now: datetime
) -> ReconcileResult:
    """Settle deliveries left `sending` longer than the lease (their worker died).

    Those the provider reported processed become `sent`; the rest go back to
    `queued` and are counted in the mailing's duplicates_count, since their
    chunk may have reached the provider before the worker died.
    """
    stale = list(
        session.scalars(
            select(Delivery.id).where(
                Delivery.mailing_id == mailing_id,
                Delivery.status == DeliveryStatus.SENDING.value,
                Delivery.claimed_at < now - lease,
            )
        )
    )
    if not stale:
        return ReconcileResult(0, 0)
    confirmed = sorted(confirmed_by_provider(session, stale))
    _set_status(session, confirmed, DeliveryStatus.SENT.value, sent_at=now)
    rest = sorted(set(stale) - set(confirmed))
    _set_status(session, rest, DeliveryStatus.QUEUED.value, claimed_at=None)
    if rest:
        session.execute(
            update(Mailing)
            .where(Mailing.id == mailing_id)
            .values(duplicates_count=Mailing.duplicates_count + len(rest), updated_at=now)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    return ReconcileResult(len(confirmed), len(rest))


def mailings_to_reconcile(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(Mailing.id).where(
                Mailing.status.in_([MailingStatus.SENDING, MailingStatus.PAUSED])
            )
        )
    )


# --- staff controls -------------------------------------------------------------------


def pause(session: Session, mailing: Mailing, now: datetime) -> None:
    """Stop claiming chunks; chunks already claimed finish."""
    if mailing.status != MailingStatus.SENDING:
        raise PipelineError(f"only a sending mailing can be paused (it is {mailing.status})")
    mailing.status, mailing.updated_at = MailingStatus.PAUSED, now
    session.flush()


def resume(session: Session, mailing: Mailing, now: datetime) -> int:
    """Claim again; returns how many are still queued (the caller enqueues chunk tasks)."""
    if mailing.status != MailingStatus.PAUSED:
        raise PipelineError(f"only a paused mailing can be resumed (it is {mailing.status})")
    mailing.status, mailing.updated_at = MailingStatus.SENDING, now
    session.flush()
    return queued_count(session, mailing.id)


def cancel(session: Session, mailing: Mailing, now: datetime) -> int:
    """Cancel everything still queued; returns how many deliveries were cancelled."""
    if mailing.status in (MailingStatus.SENT, MailingStatus.CANCELLED):
        raise PipelineError(f"mailing {mailing.id} is already {mailing.status}")
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.mailing_id == mailing.id,
            Delivery.status == DeliveryStatus.QUEUED.value,
        )
        .values(status=DeliveryStatus.CANCELLED.value)
        .execution_options(synchronize_session=False)
    )
    mailing.status, mailing.updated_at, mailing.finished_at = MailingStatus.CANCELLED, now, now
    session.flush()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def progress(session: Session, mailing_id: int) -> dict[str, int]:
    """How many deliveries are in each status."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.mailing_id == mailing_id)
        .group_by(Delivery.status)
    )
    return {status: int(count) for status, count in rows}
