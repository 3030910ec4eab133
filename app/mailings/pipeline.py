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

from sqlalchemy import (
    BigInteger,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.integrations.email import MAX_BULK_RECIPIENTS, EmailProvider, EmailProviderError
from app.mailings.composer import (
    BODY_FORMATS,
    DEFAULT_FIRST_NAME,
    FIRST_NAME_PLACEHOLDER,
    OPEN_PLACEHOLDER,
    bulk_draft,
    click_placeholder,
)
from app.mailings.models import (
    Delivery,
    DeliveryStatus,
    Mailing,
    MailingLink,
    MailingStatus,
    ProviderEvent,
)
from app.mailings.service import SenderIdentity
from app.mailings.tracking import (
    click_url,
    is_action_page,
    make_click_token,
    make_open_token,
    open_pixel_url,
)
from app.supporters.models import Segment, Supporter, SupporterStatus
from app.supporters.tokens import make_token, one_click_url, preferences_url
from privacy.seal import (
    PLACEHOLDER,
    UNSUBSCRIBE_PLACEHOLDER,
    Recipient,
    SealedBulk,
    SealedRecipient,
    SealError,
    SkipReason,
    UnsubscribeLinks,
    render_recipient,
    seal_bulk,
    seal_recipient,
    skip_reason,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = MAX_BULK_RECIPIENTS
DEFAULT_DAILY_CAP = 1
DEFAULT_LEASE = timedelta(minutes=5)
# Recipients are materialised this many supporter ids at a time, each range committed and
# its chunks queued at once: the first chunk leaves within a second even for 1M people.
MATERIALISE_RANGE = 50_000
# States in which chunk tasks claim and send (TESTING: the A/B test share is going out).
CLAIMABLE = (MailingStatus.SENDING, MailingStatus.TESTING)
EDITABLE = (MailingStatus.DRAFT, MailingStatus.SCHEDULED)
AB_METRICS = ("opens", "clicks")


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
    variant: str = "a"


@dataclass(frozen=True)
class RenderedEmail:
    """What one supporter would get: for previews and checks (links untracked)."""

    subject: str
    html: str
    text: str
    skip_reason: str = ""  # why this supporter would not get it, if they would not


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


_DRAFT_FIELDS = (
    "subject",
    "body_md",
    "from_name",
    "reply_to",
    "preheader",
    "throttle_per_hour",
    "body_format",
    "subject_b",
    "segment_id",
    "ab_test_percent",
    "ab_metric",
    "ab_decide_after_minutes",
)


def _check_draft(mailing: Mailing) -> None:
    if not (mailing.subject or "").strip():
        raise PipelineError("a mailing needs a subject")
    if not (mailing.body_md or "").strip():
        raise PipelineError("a mailing needs a body")
    if mailing.body_format not in BODY_FORMATS:
        raise PipelineError("the body format must be markdown or html")
    if mailing.throttle_per_hour is not None and mailing.throttle_per_hour <= 0:
        raise PipelineError("the throttle must be a positive number of messages per hour")
    if mailing.subject_b.strip():
        percent = mailing.ab_test_percent
        if percent is None or not 1 <= percent <= 50:
            raise PipelineError("an A/B test sends each subject to 1 to 50 percent of the segment")
        if mailing.ab_metric not in AB_METRICS:
            raise PipelineError("the A/B winner is chosen by opens or clicks")
        if not mailing.ab_decide_after_minutes or mailing.ab_decide_after_minutes <= 0:
            raise PipelineError("say after how many minutes the A/B winner is chosen")


def _snapshot_segment(session: Session, mailing: Mailing) -> None:
    """Copy the chosen segment's definition onto the mailing (what it went to)."""
    if mailing.segment_id is None:
        if mailing.segment.get("segment_id"):
            raise PipelineError(
                f"the segment {mailing.segment.get('name', '')!r} was deleted: choose another"
            )
        mailing.segment = {}
        return
    segment = session.get(Segment, mailing.segment_id)
    if segment is None:
        raise PipelineError("the chosen segment no longer exists: choose another")
    mailing.segment = {
        "segment_id": segment.id,
        "name": segment.name,
        "definition": segment.definition,
    }


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
    body_format: str = "markdown",
    subject_b: str = "",
    segment_id: int | None = None,
    ab_test_percent: int | None = None,
    ab_metric: str = "opens",
    ab_decide_after_minutes: int | None = None,
) -> Mailing:
    """A new draft mailing (flushed, so it has an id)."""
    mailing = Mailing(
        subject=subject.strip(),
        body_md=body_md,
        from_name=from_name,
        reply_to=reply_to,
        preheader=preheader,
        segment=segment or {},
        throttle_per_hour=throttle_per_hour,
        created_by_id=created_by_id,
        body_format=body_format,
        subject_b=subject_b.strip(),
        segment_id=segment_id,
        ab_test_percent=ab_test_percent,
        ab_metric=ab_metric,
        ab_decide_after_minutes=ab_decide_after_minutes,
        status=MailingStatus.DRAFT,
        created_at=now,
        updated_at=now,
    )
    _check_draft(mailing)
    if segment_id is not None:
        _snapshot_segment(session, mailing)
    session.add(mailing)
    session.flush()
    return mailing


def update_draft(session: Session, mailing: Mailing, now: datetime, **fields: Any) -> None:
    """Change a draft (or scheduled) mailing; once sending starts its content is fixed."""
    if mailing.status not in EDITABLE:
        raise PipelineError(f"mailing {mailing.id} is {mailing.status}: it can no longer change")
    unknown = set(fields) - set(_DRAFT_FIELDS)
    if unknown:
        raise PipelineError(f"unknown mailing fields: {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(mailing, name, value.strip() if name in ("subject", "subject_b") else value)
    _check_draft(mailing)
    if "segment_id" in fields:
        _snapshot_segment(session, mailing)
    mailing.updated_at = now
    session.flush()


def is_ab_test(mailing: Mailing) -> bool:
    return bool(mailing.subject_b.strip()) and not mailing.ab_winner


def _sealed(
    mailing: Mailing,
    identity: SenderIdentity,
    variant: str = "a",
    *,
    track: bool = True,
    subject_prefix: str = "",
) -> tuple[SealedBulk, tuple[str, ...]]:
    sender = identity.mail_from
    if mailing.from_name:
        sender = formataddr((mailing.from_name, parseaddr(identity.mail_from)[1]))
    subject = mailing.subject_b if variant == "b" and mailing.subject_b else mailing.subject
    composed = bulk_draft(
        subject_prefix + subject,
        mailing.body_md,
        sender=sender,
        org_name=identity.org_name,
        postal_address=identity.postal_address,
        reply_to=mailing.reply_to or None,
        preheader=mailing.preheader,
        category=f"mailing-{mailing.id}",
        body_format=mailing.body_format or "markdown",
        track=track,
    )
    return seal_bulk(composed.draft, identity.postal_address), composed.links


def sealed_body(
    mailing: Mailing, identity: SenderIdentity, variant: str = "a", *, track: bool = True
) -> SealedBulk:
    """The mailing's body rendered once and sealed; raises SealError if it breaks the rule.

    With `track` (the send path) its links are click placeholders and it has the pixel.
    """
    return _sealed(mailing, identity, variant, track=track)[0]


def ensure_links(session: Session, mailing: Mailing, identity: SenderIdentity) -> int:
    """Store the mailing's tracked links as MailingLink rows (position 1 first); the click
    endpoint redirects only to these. Idempotent; returns how many links the body has."""
    links = _sealed(mailing, identity)[1]
    stored = set(
        session.scalars(select(MailingLink.position).where(MailingLink.mailing_id == mailing.id))
    )
    for position, url in enumerate(links, start=1):
        if position not in stored:
            session.add(MailingLink(mailing_id=mailing.id, position=position, url=url))
    session.flush()
    return len(links)


def _sample_bucket() -> Any:
    """A fixed pseudo-random bucket 0..99 per supporter (Knuth's multiplicative hash), so
    the A/B test share is spread over the whole list and the same on every run."""
    return (cast(Supporter.id, BigInteger) * literal(2654435761, BigInteger)) % 100


def materialise(
    session: Session,
    mailing: Mailing,
    now: datetime,
    daily_cap: int = DEFAULT_DAILY_CAP,
    id_range: tuple[int, int] | None = None,
) -> int:
    """Queue a delivery for every eligible supporter without one; return how many were added.

    One INSERT ... SELECT: in the mailing's segment, subscribed, not snoozed, no
    delivery of this mailing yet, and (when daily_cap > 0) fewer than daily_cap
    other mailings sent or on their way to them in the last 24 hours. ON CONFLICT
    DO NOTHING on the (mailing_id, supporter_id) pair settles two concurrent Sends.
    `id_range` (lo, hi] limits it to supporter ids in that range. While an A/B test
    is on, only the test share is added, half with variant a and half with b; after
    it, everyone else with the winning variant.
    """
    conditions = [
        Supporter.status == SupporterStatus.SUBSCRIBED.value,
        or_(Supporter.snoozed_until.is_(None), Supporter.snoozed_until <= now),
        ~exists().where(Delivery.mailing_id == mailing.id, Delivery.supporter_id == Supporter.id),
    ]
    if id_range is not None:
        conditions += [Supporter.id > id_range[0], Supporter.id <= id_range[1]]
    if definition := mailing.segment.get("definition"):
        from app.supporters import segments

        segments.tune_session(session)  # the plans count() gets (JIT off, hashable IN lists)
        conditions.append(segments.condition(definition, now))
    if daily_cap > 0:
        recent = [
            Delivery.mailing_id != mailing.id,
            or_(
                and_(
                    Delivery.status == DeliveryStatus.SENT.value,
                    Delivery.sent_at > now - timedelta(hours=24),
                ),
                Delivery.status.in_([DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value]),
            ),
        ]
        if daily_cap == 1:
            # The usual cap as an anti-join: no GROUP BY over every recent delivery.
            conditions.append(~exists().where(Delivery.supporter_id == Supporter.id, *recent))
        else:
            if id_range is not None:
                recent += [
                    Delivery.supporter_id > id_range[0],
                    Delivery.supporter_id <= id_range[1],
                ]
            capped = (
                select(Delivery.supporter_id)
                .where(*recent)
                .group_by(Delivery.supporter_id)
                .having(func.count() >= daily_cap)
            )
            conditions.append(Supporter.id.not_in(capped))
    variant: Any = literal(mailing.ab_winner or "a")
    if is_ab_test(mailing):
        bucket = _sample_bucket()
        share = int(mailing.ab_test_percent or 0)
        conditions.append(bucket < 2 * share)
        variant = case((bucket < share, literal("a")), else_=literal("b"))
    source = select(
        literal(mailing.id),
        Supporter.id,
        variant,
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


def request_send(
    session: Session, mailing: Mailing, identity: SenderIdentity, now: datetime
) -> None:
    """Check the mailing can go and mark it sending (or testing, for an A/B test).

    The body of each variant goes through the seal now, so a body without the
    unsubscribe link or postal address is refused before anyone is queued (SealError).
    The caller commits, then queues `mailings.send`, which materialises the
    recipients. A second request for a mailing already under way changes nothing.
    """
    if mailing.status in (MailingStatus.CANCELLED, MailingStatus.SENT):
        raise PipelineError(f"mailing {mailing.id} is {mailing.status}")
    if mailing.status not in EDITABLE:
        return  # already sending, testing or paused: Send twice is one send
    _check_draft(mailing)
    sealed_body(mailing, identity)
    if is_ab_test(mailing):
        sealed_body(mailing, identity, "b")
    _snapshot_segment(session, mailing)
    ensure_links(session, mailing, identity)
    mailing.status = MailingStatus.TESTING if is_ab_test(mailing) else MailingStatus.SENDING
    mailing.started_at = mailing.started_at or now
    mailing.updated_at = now
    mailing.materialise_cursor = None
    mailing.materialised_at = None
    session.flush()


def lock_mailing(session: Session, mailing_id: int) -> Mailing | None:
    """The mailing, re-read and (on PostgreSQL) locked until commit: one materialiser at a time."""
    stmt = select(Mailing).where(Mailing.id == mailing_id).execution_options(populate_existing=True)
    if _dialect(session) == "postgresql":
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def materialise_next_range(
    session: Session,
    mailing: Mailing,
    now: datetime,
    daily_cap: int = DEFAULT_DAILY_CAP,
    size: int | None = None,
) -> int | None:
    """Materialise the next range of supporter ids; return how many were added, or None
    once every range is done (then the mailing is marked materialised)."""
    top = int(session.scalar(select(func.max(Supporter.id))) or 0)
    low = int(mailing.materialise_cursor or 0)
    if low >= top:
        mailing.materialised_at = now
        mailing.recipients_count = int(
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.mailing_id == mailing.id)
            )
            or 0
        )
        mailing.updated_at = now
        session.flush()
        return None
    high = min(low + (size or MATERIALISE_RANGE), top)
    added = materialise(session, mailing, now, daily_cap, (low, high))
    mailing.materialise_cursor = high
    mailing.recipients_count = (mailing.recipients_count or 0) + added
    mailing.updated_at = now
    session.flush()
    return added


def start_send(
    session: Session,
    mailing: Mailing,
    identity: SenderIdentity,
    now: datetime,
    daily_cap: int = DEFAULT_DAILY_CAP,
) -> int:
    """Request the send and materialise every recipient in this transaction.

    Returns how many recipients were added by this call (0 on a second Send).
    Raises SealError for a body that breaks the unsubscribe rule, and
    PipelineError for a mailing that was cancelled or has finished.
    """
    request_send(session, mailing, identity, now)
    added = 0
    while (more := materialise_next_range(session, mailing, now, daily_cap)) is not None:
        added += more
    return added


def schedule(
    session: Session, mailing: Mailing, identity: SenderIdentity, send_at: datetime, now: datetime
) -> None:
    """Send at `send_at` (UTC): the beat task `mailings.start_scheduled` starts it."""
    if mailing.status not in EDITABLE:
        raise PipelineError(f"mailing {mailing.id} is {mailing.status}: it cannot be scheduled")
    if send_at <= now:
        raise PipelineError("the time to send must be in the future")
    _check_draft(mailing)
    sealed_body(mailing, identity)  # a body the seal refuses is refused now, not at send time
    if is_ab_test(mailing):
        sealed_body(mailing, identity, "b")
    mailing.status, mailing.send_at, mailing.updated_at = MailingStatus.SCHEDULED, send_at, now
    session.flush()


def unschedule(session: Session, mailing: Mailing, now: datetime) -> None:
    if mailing.status != MailingStatus.SCHEDULED:
        raise PipelineError(f"mailing {mailing.id} is not scheduled")
    mailing.status, mailing.send_at, mailing.updated_at = MailingStatus.DRAFT, None, now
    session.flush()


def due_mailings(session: Session, now: datetime) -> list[int]:
    return list(
        session.scalars(
            select(Mailing.id).where(
                Mailing.status == MailingStatus.SCHEDULED, Mailing.send_at <= now
            )
        )
    )


def mailings_materialising(session: Session, stale_before: datetime) -> list[int]:
    """Sending mailings whose materialiser stopped part-way (no range done since
    `stale_before`): the reconcile job starts it again from its cursor."""
    return list(
        session.scalars(
            select(Mailing.id).where(
                Mailing.status.in_(list(CLAIMABLE)),
                Mailing.materialised_at.is_(None),
                Mailing.updated_at < stale_before,
            )
        )
    )


def stalled_queues(session: Session, stale_before: datetime) -> list[int]:
    """Sending mailings (materialised, not throttled) with rows still queued but nothing
    claimed since `stale_before`: their chunk tasks were lost (a worker died between a
    range's commit and queuing its chunks, or the broker lost its queue). The reconcile job
    queues chunk tasks for them again; a task that finds nothing to claim just ends."""
    recent_claim = exists().where(
        Delivery.mailing_id == Mailing.id,
        Delivery.claimed_at.is_not(None),
        Delivery.claimed_at >= stale_before,
    )
    queued = exists().where(
        Delivery.mailing_id == Mailing.id, Delivery.status == DeliveryStatus.QUEUED.value
    )
    return list(
        session.scalars(
            select(Mailing.id).where(
                Mailing.status.in_(list(CLAIMABLE)),
                Mailing.materialised_at.is_not(None),
                Mailing.materialised_at < stale_before,
                Mailing.throttle_per_hour.is_(None),
                queued,
                ~recent_claim,
            )
        )
    )


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
    recipients: int, throttle_per_hour: int | None, first_index: int = 0, size: int = CHUNK_SIZE
) -> list[float]:
    """Seconds from now at which each chunk task should run: all at once, or spread
    so that no more than throttle_per_hour messages leave in any hour (chunks before
    `first_index` were queued earlier in the same send)."""
    chunks = math.ceil(recipients / size) if recipients > 0 else 0
    if not throttle_per_hour:
        return [0.0] * chunks
    seconds_per_message = 3600.0 / throttle_per_hour
    return [(first_index + i) * size * seconds_per_message for i in range(chunks)]


# --- claim and send -------------------------------------------------------------------


def claim_chunk(
    session: Session, mailing_id: int, now: datetime, size: int = CHUNK_SIZE
) -> list[ClaimedDelivery]:
    """Claim up to `size` queued deliveries of a sending mailing; nobody else can claim them.

    Returns nothing when the mailing is not sending (paused, cancelled). The
    caller should commit right away so the claim (and its lease) is visible.
    """
    status = session.scalar(select(Mailing.status).where(Mailing.id == mailing_id))
    if status not in CLAIMABLE:
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
    values = {
        "status": DeliveryStatus.SENDING.value,
        "claimed_at": now,
        "attempts": Delivery.attempts + 1,
    }
    recipient_columns = (
        Delivery.id,
        Delivery.supporter_id,
        Supporter.email,
        Supporter.first_name,
        Supporter.public_id,
        Supporter.status,
        Supporter.snoozed_until,
        Delivery.variant,
    )
    if _dialect(session) == "postgresql":
        # One round trip: UPDATE ... FROM supporters RETURNING what sealing needs.
        claim = (
            update(Delivery)
            .where(
                chosen,
                Delivery.status == DeliveryStatus.QUEUED.value,
                Supporter.id == Delivery.supporter_id,
            )
            .values(**values)
            .returning(*recipient_columns)
            .execution_options(synchronize_session=False)
        )
        claimed = sorted(session.execute(claim), key=lambda row: row[0])
        return [ClaimedDelivery(*row) for row in claimed]
    claim_ids = (
        update(Delivery)
        .where(chosen, Delivery.status == DeliveryStatus.QUEUED.value)
        .values(**values)
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    ids = list(session.scalars(claim_ids))
    if not ids:
        return []
    rows = session.execute(
        select(*recipient_columns)
        .join(Supporter, Supporter.id == Delivery.supporter_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    return [ClaimedDelivery(*row) for row in rows]


# Names go into the HTML part as they are: no markup, and no quote to leave an attribute.
_UNSAFE_IN_NAME = re.compile(r'[<>"\r\n\x00]')


def recipient_substitutions(
    identity: SenderIdentity,
    row: ClaimedDelivery,
    mailbox: str,
    mailing_id: int | None = None,
    link_count: int = 0,
    reader_positions: frozenset[int] = frozenset(),
) -> tuple[dict[str, str], UnsubscribeLinks]:
    """The per-recipient values SendGrid fills in, and the recipient's opt-out links.

    With a mailing id (the tracked send path) they include the open pixel's URL and
    one signed click URL per link of the mailing; links at `reader_positions` (our
    own action pages) carry the reader so the page can recognise them.
    """
    token = make_token(identity.secret_key, row.public_id)
    links = UnsubscribeLinks(
        page_url=preferences_url(identity.base_url, token),
        one_click_url=one_click_url(identity.base_url, token),
        mailto=f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}" if mailbox else "",
    )
    name = _UNSAFE_IN_NAME.sub("", row.first_name or "").strip()
    if not name or PLACEHOLDER.search(name):
        name = DEFAULT_FIRST_NAME  # a name such as "-click_1-" must not become a link
    substitutions = {UNSUBSCRIBE_PLACEHOLDER: links.page_url, FIRST_NAME_PLACEHOLDER: name}
    if mailing_id is not None:
        secret, base = identity.secret_key, identity.base_url
        substitutions[OPEN_PLACEHOLDER] = open_pixel_url(
            base, make_open_token(secret, row.delivery_id)
        )
        for position in range(1, link_count + 1):
            reader = row.public_id if position in reader_positions else ""
            token = make_click_token(secret, row.delivery_id, mailing_id, position, reader)
            substitutions[click_placeholder(position)] = click_url(base, token)
    return substitutions, links


def _ids_in(session: Session, ids: list[int]) -> Any:
    """`id IN ids`; on PostgreSQL as `id = ANY(array)`: one parameter instead of a thousand
    for the server to parse and plan on every chunk."""
    if _dialect(session) == "postgresql":
        return Delivery.id == any_(bindparam("ids", ids, type_=postgresql.ARRAY(BigInteger)))
    return Delivery.id.in_(ids)


def _set_status(session: Session, ids: list[int], status: str, **values: Any) -> None:
    if not ids:
        return
    session.execute(
        update(Delivery)
        .where(_ids_in(session, ids), Delivery.status == DeliveryStatus.SENDING.value)
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
    """Seal each claimed recipient and send the chunk in one provider call per variant
    (one call, except while an A/B test is going out).

    Rows end `sent` (with the provider's message id), `skipped` (the seal
    said so: they unsubscribed or were snoozed since materialising) or
    `failed` (an address the seal refuses). On an EmailProviderError the rows
    go back to `queued` when it is retryable, `failed` when not, and the error
    is raised for the task to retry. A SealError for the body is raised as is.
    """
    mailbox = identity.unsubscribe_address()
    by_variant: dict[str, list[ClaimedDelivery]] = {}
    for row in rows:
        by_variant.setdefault(row.variant or "a", []).append(row)
    sent = skipped = failed = 0
    message_id = ""
    for variant, group in sorted(by_variant.items()):
        result = _send_group(session, provider, identity, mailing, group, variant, mailbox, now)
        sent, skipped, failed = sent + result[0], skipped + result[1], failed + result[2]
        message_id = message_id or result[3]
    session.flush()
    return ChunkResult(len(rows), sent, skipped, failed, message_id)


def _send_group(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    mailing: Mailing,
    rows: list[ClaimedDelivery],
    variant: str,
    mailbox: str,
    now: datetime,
) -> tuple[int, int, int, str]:
    body, links = _sealed(mailing, identity, variant)
    action_pages = frozenset(
        position
        for position, url in enumerate(links, start=1)
        if is_action_page(url, identity.base_url)
    )
    sealed: list[SealedRecipient] = []
    custom_args: list[dict[str, str]] = []
    send_ids: list[int] = []
    skipped: list[int] = []
    failed: list[int] = []
    for row in rows:
        substitutions, unsubscribe = recipient_substitutions(
            identity, row, mailbox, mailing.id, len(links), action_pages
        )
        recipient = Recipient(row.email, row.status, row.snoozed_until)
        try:
            outcome = seal_recipient(body, recipient, substitutions, unsubscribe, now)
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
            # A per-recipient provider (SMTP) may have accepted the first few: those are
            # sent, never re-queued. An address it refused for good fails alone; the
            # rest go back to the queue and the error is raised as retryable.
            accepted, rest = send_ids[: exc.accepted], send_ids[exc.accepted :]
            _set_status(session, accepted, DeliveryStatus.SENT.value, sent_at=now)
            if not exc.retryable and exc.one_recipient:
                _set_status(session, rest[:1], DeliveryStatus.FAILED.value)
                rest = rest[1:]
                exc.retryable = bool(rest)
            if exc.retryable:
                _set_status(session, rest, DeliveryStatus.QUEUED.value, claimed_at=None)
            else:
                _set_status(session, rest, DeliveryStatus.FAILED.value)
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
    return len(send_ids), len(skipped), len(failed), message_id


def release(session: Session, delivery_ids: list[int]) -> None:
    """Put claimed rows back in the queue (nothing was handed to the provider)."""
    _set_status(session, delivery_ids, DeliveryStatus.QUEUED.value, claimed_at=None)
    session.flush()


def _pending(mailing_id: Any) -> Any:
    """Some delivery of the mailing is still queued or sending: two EXISTS, so that each
    reads its own small partial index (an IN over both would scan every delivery)."""
    return or_(
        *(
            exists().where(Delivery.mailing_id == mailing_id, Delivery.status == status)
            for status in (DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value)
        )
    )


def finish_if_done(session: Session, mailing_id: int, now: datetime) -> bool:
    """Mark a sending mailing sent once every recipient is materialised and no delivery is
    queued or sending."""
    pending = _pending(mailing_id)
    result = session.execute(
        update(Mailing)
        .where(
            Mailing.id == mailing_id,
            Mailing.status == MailingStatus.SENDING,
            Mailing.materialised_at.is_not(None),
            ~pending,
        )
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
            select(Mailing.id).where(Mailing.status.in_([*CLAIMABLE, MailingStatus.PAUSED]))
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


# --- previews and test sends ------------------------------------------------------------


def _sample_row(supporter: Supporter | None, address: str = "") -> ClaimedDelivery:
    if supporter is None:
        return ClaimedDelivery(0, 0, address, "", "preview", SupporterStatus.SUBSCRIBED, None)
    return ClaimedDelivery(
        0,
        supporter.id,
        supporter.email,
        supporter.first_name,
        supporter.public_id,
        supporter.status,
        supporter.snoozed_until,
    )


def preview(
    mailing: Mailing,
    identity: SenderIdentity,
    supporter: Supporter | None,
    now: datetime,
    variant: str = "a",
) -> RenderedEmail:
    """The email exactly as this supporter would get it (links shown untracked), and
    why they would not get it at all, if so. None = a blank supporter ("friend")."""
    body = sealed_body(mailing, identity, variant, track=False)
    row = _sample_row(supporter, "preview@example.org")
    substitutions, links = recipient_substitutions(identity, row, identity.unsubscribe_address())
    as_subscriber = Recipient(row.email, SupporterStatus.SUBSCRIBED.value, None)
    sealed = seal_recipient(body, as_subscriber, substitutions, links, now)
    assert not isinstance(sealed, SkipReason)  # a subscriber is never skipped
    message = render_recipient(body, sealed)
    reason = None
    if supporter is not None:
        reason = skip_reason(Recipient(row.email, row.status, row.snoozed_until), now)
    return RenderedEmail(
        message.subject, message.html or "", message.text, reason.value if reason else ""
    )


def send_test(
    provider: EmailProvider,
    identity: SenderIdentity,
    mailing: Mailing,
    addresses: list[str],
    now: datetime,
) -> int:
    """Send "[Test] subject" (each variant) to staff addresses, through the seal; the
    unsubscribe link in it leads to no supporter. Returns how many messages went."""
    variants = ["a", "b"] if mailing.subject_b.strip() else ["a"]
    sent = 0
    for variant in variants:
        body = _sealed(mailing, identity, variant, track=False, subject_prefix="[Test] ")[0]
        for address in addresses:
            row = _sample_row(None, address)
            substitutions, links = recipient_substitutions(
                identity, row, identity.unsubscribe_address()
            )
            recipient = Recipient(address, SupporterStatus.SUBSCRIBED.value, None)
            sealed = seal_recipient(body, recipient, substitutions, links, now)
            assert not isinstance(sealed, SkipReason)
            provider.send(render_recipient(body, sealed), {"mailing_id": str(mailing.id)})
            sent += 1
    return sent


# --- A/B subject tests ------------------------------------------------------------------


@dataclass(frozen=True)
class VariantScore:
    variant: str
    sent: int
    responders: int  # unique human opens or clicks, as the mailing's metric says

    @property
    def rate(self) -> float:
        return self.responders / self.sent if self.sent else 0.0


def ab_scores(session: Session, mailing: Mailing) -> list[VariantScore]:
    """Per variant: deliveries sent and unique people who opened (or clicked), not machines."""
    from app.mailings.models import TrackingEvent

    kind = "click" if mailing.ab_metric == "clicks" else "open"
    sent: dict[str, int] = dict(
        session.execute(  # type: ignore[arg-type]
            select(Delivery.variant, func.count())
            .where(Delivery.mailing_id == mailing.id, Delivery.status == DeliveryStatus.SENT.value)
            .group_by(Delivery.variant)
        ).all()
    )
    responders: dict[str, int] = dict(
        session.execute(  # type: ignore[arg-type]
            select(Delivery.variant, func.count(func.distinct(Delivery.id)))
            .join(TrackingEvent, TrackingEvent.delivery_id == Delivery.id)
            .where(
                Delivery.mailing_id == mailing.id,
                TrackingEvent.kind == kind,
                TrackingEvent.machine.is_(False),
            )
            .group_by(Delivery.variant)
        ).all()
    )
    return [VariantScore(v, int(sent.get(v, 0)), int(responders.get(v, 0))) for v in ("a", "b")]


def ab_tests_to_decide(session: Session, now: datetime) -> list[int]:
    """Testing mailings whose test share has gone out and whose waiting time is over."""
    pending = _pending(Mailing.id)
    candidates = session.scalars(
        select(Mailing).where(
            Mailing.status == MailingStatus.TESTING,
            Mailing.materialised_at.is_not(None),
            ~pending,
        )
    )
    return [
        m.id
        for m in candidates
        if m.started_at is not None
        and now >= m.started_at + timedelta(minutes=m.ab_decide_after_minutes or 0)
    ]


def decide_ab(session: Session, mailing: Mailing, now: datetime) -> str:
    """Choose the winning subject (the higher rate; a on a tie) and set the mailing to send
    it to everyone else. The caller commits, then queues `mailings.send`."""
    if mailing.status != MailingStatus.TESTING:
        raise PipelineError(f"mailing {mailing.id} is not in an A/B test")
    a, b = ab_scores(session, mailing)
    winner = "b" if b.rate > a.rate else "a"
    mailing.ab_winner, mailing.ab_decided_at = winner, now
    mailing.status = MailingStatus.SENDING
    mailing.materialise_cursor, mailing.materialised_at = None, None
    mailing.updated_at = now
    session.flush()
    return winner
