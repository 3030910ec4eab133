"""Staff operations on mailings: save drafts, test, schedule, send, pause, watch progress.

The web views and the `flask mailings` commands call these; the send pipeline
(app/mailings/pipeline.py) does the work underneath. Every change writes an
audit entry naming the fields touched, never their contents. None of these
commits: the caller commits, then runs the returned `AfterCommit` (which
queues Celery tasks that must only see committed rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.integrations.email import EmailProvider
from app.mailings import pipeline
from app.mailings.composer import BODY_FORMATS
from app.mailings.models import DeliveryStatus, Mailing, MailingStatus
from app.mailings.service import SenderIdentity
from app.staff.models import Role, StaffUser
from app.staff.service import audit
from app.supporters import segments
from app.supporters.emails import InvalidEmail, normalise_email
from app.supporters.models import Segment, Supporter, SupporterStatus
from privacy.seal import SealError

# Who may change and send mailings; everyone else on the staff can read them.
SENDER_ROLES = (Role.ADMIN, Role.ORGANIZER)
AB_PERCENT = (5, 50)
AB_MINUTES = (10, 1440)
AB_METRICS = ("opens", "clicks")
MAX_SUBJECT = 300
MAX_BODY = 200_000
MAX_TEST_ADDRESSES = 10
ACTIVE = (MailingStatus.SENDING, MailingStatus.TESTING)


class CampaignInvalid(ValueError):
    """The input cannot be saved; `errors` maps form field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


class CampaignError(ValueError):
    """The mailing cannot do that now; the message is for staff."""


@dataclass(frozen=True)
class AfterCommit:
    """Work to do once the caller has committed (queue tasks that read the new rows)."""

    run: Callable[[], Any] = lambda: None


@dataclass
class DraftData:
    """What staff type in the composer, already parsed into types."""

    subject: str = ""
    body_md: str = ""
    body_format: str = "markdown"
    preheader: str = ""
    from_name: str = ""
    reply_to: str = ""
    segment_id: int | None = None
    throttle_per_hour: int | None = None
    subject_b: str = ""
    ab_test_percent: int | None = None
    ab_metric: str = "opens"
    ab_decide_after_minutes: int | None = None

    @classmethod
    def of(cls, mailing: Mailing) -> DraftData:
        return cls(**{name: getattr(mailing, name) for name in cls.__dataclass_fields__})


def can_send(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and user.role in SENDER_ROLES


# --- drafts ---------------------------------------------------------------------------


def _in_range(value: int | None, bounds: tuple[int, int], what: str) -> str:
    low, high = bounds
    if value is None:
        return f"Please enter {what} between {low} and {high}."
    if not low <= value <= high:
        return f"Please enter {what} between {low} and {high}."
    return ""


def validate_draft(session: Session, data: DraftData) -> dict[str, str]:
    """Messages for each field that cannot be saved as typed (empty when all is well)."""
    errors: dict[str, str] = {}
    if not data.subject.strip():
        errors["subject"] = "Please write a subject line."
    elif len(data.subject) > MAX_SUBJECT:
        errors["subject"] = f"Please keep the subject under {MAX_SUBJECT} characters."
    if len(data.subject_b) > MAX_SUBJECT:
        errors["subject_b"] = f"Please keep the subject under {MAX_SUBJECT} characters."
    if not data.body_md.strip():
        errors["body_md"] = "Please write the email's text."
    elif len(data.body_md) > MAX_BODY:
        errors["body_md"] = f"The text is too long (at most {MAX_BODY:,} characters)."
    if data.body_format not in BODY_FORMATS:
        errors["body_format"] = "Please choose Markdown or HTML."
    if any(ch in data.from_name for ch in '\r\n<>"'):
        errors["from_name"] = "A sender name cannot hold line breaks, quotes or < >."
    if data.reply_to.strip():
        try:
            validate_email(data.reply_to.strip(), check_deliverability=False)
        except EmailNotValidError as exc:
            errors["reply_to"] = f"That reply-to address doesn't look right: {exc}"
    if data.throttle_per_hour is not None and data.throttle_per_hour < 1:
        errors["throttle_per_hour"] = "Please enter a number of messages per hour of 1 or more."
    if data.segment_id is not None and session.get(Segment, data.segment_id) is None:
        errors["segment_id"] = "That segment no longer exists: please choose another."
    if data.subject_b.strip():
        if message := _in_range(data.ab_test_percent, AB_PERCENT, "a percentage"):
            errors["ab_test_percent"] = message
        if message := _in_range(data.ab_decide_after_minutes, AB_MINUTES, "a number of minutes"):
            errors["ab_decide_after_minutes"] = message
        if data.ab_metric not in AB_METRICS:
            errors["ab_metric"] = "Please choose opens or clicks."
    return errors


def _fields(data: DraftData) -> dict[str, Any]:
    values = asdict(data)
    values["reply_to"] = data.reply_to.strip()
    values["from_name"] = data.from_name.strip()
    values["preheader"] = data.preheader.strip()
    if not data.subject_b.strip():  # no second subject: no A/B test settings either
        values.update(subject_b="", ab_test_percent=None, ab_decide_after_minutes=None)
        values["ab_metric"] = "opens"
    return values


def save_draft(
    session: Session,
    mailing: Mailing | None,
    data: DraftData,
    actor: StaffUser | None,
    now: datetime,
) -> Mailing:
    """Create a draft (mailing None) or change a draft or scheduled mailing.

    Raises CampaignInvalid with a message per field, or CampaignError when the
    mailing is already under way (its content is then fixed).
    """
    errors = validate_draft(session, data)
    if errors:
        raise CampaignInvalid(errors)
    values = _fields(data)
    try:
        if mailing is None:
            mailing = pipeline.create_mailing(
                session, now=now, created_by_id=actor.id if actor else None, **values
            )
            audit(session, actor, "mailing.create", "mailing", mailing.id, now=now)
            return mailing
        changed = sorted(k for k, v in values.items() if getattr(mailing, k) != v)
        if mailing.status not in pipeline.EDITABLE:
            raise CampaignError("This mailing has started sending: it can no longer change.")
        if changed:
            pipeline.update_draft(session, mailing, now, **values)
            audit(session, actor, "mailing.update", "mailing", mailing.id, now=now, fields=changed)
        return mailing
    except pipeline.PipelineError as exc:
        raise CampaignError(_sentence(exc)) from None


def _sentence(exc: Exception) -> str:
    text = str(exc).strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else "That cannot be done."


def segment_by_name(session: Session, name: str) -> Segment | None:
    try:
        from app.supporters.segments import segment_by_name as lookup
    except ImportError:  # the segment builder is not there yet: a plain look-up
        return session.scalar(select(Segment).where(Segment.name == name))
    return lookup(session, name)


def segment_choices(session: Session) -> list[tuple[int, str]]:
    return [(s.id, s.name) for s in session.scalars(select(Segment).order_by(Segment.name))]


def mailable_count(session: Session, segment_id: int | None, now: datetime) -> int | None:
    """How many supporters the segment (None = every subscriber) could mail now; None when
    it cannot be counted (the segment is gone or the counter is not available)."""
    definition: dict[str, Any] = {}
    if segment_id is not None:
        segment = session.get(Segment, segment_id)
        if segment is None:
            return None
        definition = segment.definition or {}
    try:
        return segments.count(session, definition, now).mailable
    except segments.SegmentError:  # a definition that no longer holds (a tag gone)
        return None


# --- send, schedule and control -------------------------------------------------------


def _checks_allow(findings: list[Any] | None, warnings_read: bool) -> None:
    if findings is None:
        return
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise CampaignError("The checks found problems that must be fixed before sending.")
    if any(f.level == "warning" for f in findings) and not warnings_read:
        raise CampaignError("Please tick “I have read the warnings” to send anyway.")


def send_now(
    session: Session,
    mailing: Mailing,
    actor: StaffUser | None,
    identity: SenderIdentity,
    now: datetime,
    *,
    findings: list[Any] | None = None,
    warnings_read: bool = False,
) -> AfterCommit:
    """Start sending: the worker then materialises the recipients and sends in chunks.

    `findings` are the pre-send checks (app/mailings/checks.py): any error refuses,
    and warnings need `warnings_read`. Sending one already under way changes
    nothing (each supporter gets it at most once). Raises CampaignError.
    """
    _checks_allow(findings, warnings_read)
    already = mailing.status not in pipeline.EDITABLE
    try:
        pipeline.request_send(session, mailing, identity, now)
    except SealError as exc:
        raise CampaignError(f"The email cannot go out as it is: {exc}") from None
    except pipeline.PipelineError as exc:
        raise CampaignError(_sentence(exc)) from None
    if already:
        return AfterCommit()
    audit(session, actor, "mailing.send", "mailing", mailing.id, now=now)
    mailing_id = mailing.id

    def queue() -> None:
        from app.mailings.tasks import send_mailing

        send_mailing.delay(mailing_id)

    return AfterCommit(queue)


@dataclass(frozen=True)
class Started:
    added: int
    queued: int
    after: AfterCommit = field(default_factory=AfterCommit)


def send_now_inline(
    session: Session, mailing: Mailing, actor: StaffUser | None, now: datetime
) -> Started:
    """The command line's Send: materialise every recipient in this transaction, so the
    command can say how many; the chunks are queued after the commit."""
    from app.mailings.tasks import enqueue_chunks, start_mailing

    try:
        added, queued = start_mailing(session, mailing, now)
    except SealError as exc:
        raise CampaignError(f"The email cannot go out as it is: {exc}") from None
    except pipeline.PipelineError as exc:
        raise CampaignError(_sentence(exc)) from None
    audit(session, actor, "mailing.send", "mailing", mailing.id, now=now, added=added)
    mailing_id, throttle = mailing.id, mailing.throttle_per_hour
    return Started(added, queued, AfterCommit(lambda: enqueue_chunks(mailing_id, queued, throttle)))


def chunks_for(queued: int) -> int:
    return math.ceil(queued / pipeline.CHUNK_SIZE) if queued > 0 else 0


def schedule(
    session: Session,
    mailing: Mailing,
    actor: StaffUser | None,
    identity: SenderIdentity,
    send_at: datetime | None,
    now: datetime,
) -> None:
    """Send at `send_at` (UTC, naive). Raises CampaignInvalid for a missing or past time."""
    if send_at is None:
        raise CampaignInvalid({"send_at": "Please enter a date and a time (UTC)."})
    if send_at <= now:
        raise CampaignInvalid({"send_at": "Please choose a time in the future (UTC)."})
    try:
        pipeline.schedule(session, mailing, identity, send_at, now)
    except SealError as exc:
        raise CampaignError(f"The email cannot go out as it is: {exc}") from None
    except pipeline.PipelineError as exc:
        raise CampaignError(_sentence(exc)) from None
    audit(session, actor, "mailing.schedule", "mailing", mailing.id, now=now)


def unschedule(session: Session, mailing: Mailing, actor: StaffUser | None, now: datetime) -> None:
    try:
        pipeline.unschedule(session, mailing, now)
    except pipeline.PipelineError as exc:
        raise CampaignError(_sentence(exc)) from None
    audit(session, actor, "mailing.unschedule", "mailing", mailing.id, now=now)


def pause(session: Session, mailing: Mailing, actor: StaffUser | None, now: datetime) -> None:
    try:
        pipeline.pause(session, mailing, now)
    except pipeline.PipelineError as exc:
        raise CampaignError(_sentence(exc)) from None
    audit(session, actor, "mailing.pause", "mailing", mailing.id, now=now)


def resume(
    session: Session, mailing: Mailing, actor: StaffUser | None, now: datetime
) -> tuple[int, AfterCommit]:
    """Resume a paused mailing; returns how many are still queued, and the chunk queuing."""
    try:
        queued = pipeline.resume(session, mailing, now)
    except pipeline.PipelineError as exc:
        raise CampaignError(_sentence(exc)) from None
    audit(session, actor, "mailing.resume", "mailing", mailing.id, now=now)
    mailing_id, throttle = mailing.id, mailing.throttle_per_hour

    def queue() -> None:
        from app.mailings.tasks import enqueue_chunks

        enqueue_chunks(mailing_id, queued, throttle)

    return queued, AfterCommit(queue)


def cancel(session: Session, mailing: Mailing, actor: StaffUser | None, now: datetime) -> int:
    """Cancel; returns how many deliveries will not be sent."""
    try:
        cancelled = pipeline.cancel(session, mailing, now)
    except pipeline.PipelineError as exc:
        raise CampaignError(_sentence(exc)) from None
    audit(session, actor, "mailing.cancel", "mailing", mailing.id, now=now, cancelled=cancelled)
    return cancelled


# --- test sends and previews ----------------------------------------------------------


def staff_addresses(session: Session) -> list[str]:
    """Every active staff member's address: the only places a test send may go."""
    return list(
        session.scalars(
            select(StaffUser.email).where(StaffUser.active.is_(True)).order_by(StaffUser.email)
        )
    )


def send_test(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    mailing: Mailing,
    actor: StaffUser | None,
    addresses: list[str],
    now: datetime,
) -> int:
    """Send "[Test] subject" to staff addresses only, so a test never reaches a supporter.

    Raises CampaignInvalid (field `addresses`) for no address or one that is not
    an active staff member's, and CampaignError when the seal refuses the body.
    """
    allowed = set(staff_addresses(session))
    chosen = sorted({a.strip().lower() for a in addresses if a.strip()})
    if not chosen:
        raise CampaignInvalid({"addresses": "Please choose at least one staff address."})
    if len(chosen) > MAX_TEST_ADDRESSES:
        raise CampaignInvalid(
            {"addresses": f"Please choose at most {MAX_TEST_ADDRESSES} addresses."}
        )
    if any(a not in allowed for a in chosen):
        raise CampaignInvalid({"addresses": "Test sends go only to staff members' addresses."})
    try:
        sent = pipeline.send_test(provider, identity, mailing, chosen, now)
    except SealError as exc:
        raise CampaignError(f"The email cannot go out as it is: {exc}") from None
    mailing.test_sent_at = now
    audit(session, actor, "mailing.test_send", "mailing", mailing.id, now=now, messages=sent)
    session.flush()
    return sent


def find_supporter(session: Session, email: str) -> Supporter | None:
    """The supporter with this address (as typed, normalised), for a preview."""
    try:
        address = normalise_email(email)
    except InvalidEmail:
        return None
    return session.scalar(select(Supporter).where(Supporter.email == address))


def first_subscriber(session: Session) -> Supporter | None:
    return session.scalar(
        select(Supporter)
        .where(Supporter.status == SupporterStatus.SUBSCRIBED.value)
        .order_by(Supporter.id)
        .limit(1)
    )


def preview(
    mailing: Mailing,
    identity: SenderIdentity,
    supporter: Supporter | None,
    now: datetime,
    variant: str = "a",
) -> pipeline.RenderedEmail:
    """What this supporter (None: a blank one) would get. Raises CampaignError when the
    seal refuses the body, so staff see why instead of an error page."""
    try:
        return pipeline.preview(mailing, identity, supporter, now, variant)
    except SealError as exc:
        raise CampaignError(f"The email cannot go out as it is: {exc}") from None


# --- progress -------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """One reading of a mailing's progress, for the bar and its JSON."""

    status: str
    recipients: int
    sent: int
    skipped: int
    failed: int
    cancelled: int
    queued: int  # queued, or claimed by a worker and on their way
    percent: int
    materialising: bool
    active: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def progress(session: Session, mailing: Mailing) -> Progress:
    counts = pipeline.progress(session, mailing.id)
    sent = counts.get(DeliveryStatus.SENT.value, 0)
    skipped = counts.get(DeliveryStatus.SKIPPED.value, 0)
    failed = counts.get(DeliveryStatus.FAILED.value, 0)
    cancelled = counts.get(DeliveryStatus.CANCELLED.value, 0)
    queued = counts.get(DeliveryStatus.QUEUED.value, 0) + counts.get(
        DeliveryStatus.SENDING.value, 0
    )
    recipients = sum(counts.values())
    done = sent + skipped + failed + cancelled
    if recipients:
        percent = 100 * done // recipients
    else:
        percent = 100 if mailing.status in (MailingStatus.SENT, MailingStatus.CANCELLED) else 0
    active = mailing.status in ACTIVE
    return Progress(
        status=str(mailing.status),
        recipients=recipients,
        sent=sent,
        skipped=skipped,
        failed=failed,
        cancelled=cancelled,
        queued=queued,
        percent=percent,
        materialising=active and mailing.materialised_at is None,
        active=active,
    )


def list_mailings(session: Session, limit: int = 200) -> list[tuple[Mailing, Progress | None]]:
    """Newest first; progress counted only for mailings under way (the rest show their
    recorded recipient count), so the list stays quick beside million-recipient sends."""
    mailings = session.scalars(select(Mailing).order_by(Mailing.id.desc()).limit(limit))
    return [(m, progress(session, m) if m.status in ACTIVE else None) for m in mailings]
