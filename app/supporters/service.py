"""Supporter operations: sign-up, preferences, consent ledger. The only writer of these tables.

Functions take the session and the clock, flush but never commit: the caller
(a request, a task, a CLI command) owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.integrations.email import EmailProvider
from app.mailings.models import EmailLog, EmailStatus
from app.mailings.service import SenderIdentity, send_to_supporter
from app.supporters.models import ConsentEvent, ConsentKind, Supporter, SupporterStatus
from app.supporters.tokens import read_token
from privacy import POLICY_VERSION

SNOOZE_CHOICES = (30, 60, 90)


class SupporterError(ValueError):
    """A request the supporter service cannot carry out, in words for a person."""


@dataclass(frozen=True)
class SignupData:
    email: str  # already normalised
    first_name: str = ""
    last_name: str = ""
    postal_code: str = ""
    country: str = ""


@dataclass(frozen=True)
class SignupResult:
    supporter: Supporter
    created: bool
    resubscribed: bool


def record_consent(
    session: Session,
    supporter: Supporter,
    kind: ConsentKind,
    source: str,
    now: datetime,
    detail: str = "",
) -> ConsentEvent:
    """Append one row to the consent ledger."""
    entry = ConsentEvent(
        supporter=supporter,
        kind=kind.value,
        source=source[:200],
        policy_version=POLICY_VERSION,
        detail=detail,
        created_at=now,
    )
    session.add(entry)
    return entry


def find_by_email(session: Session, email: str) -> Supporter | None:
    return session.scalar(select(Supporter).where(Supporter.email == email))


def is_snoozed(supporter: Supporter, now: datetime) -> bool:
    return supporter.snoozed_until is not None and supporter.snoozed_until > now


def signup(
    session: Session,
    data: SignupData,
    source: str,
    consent_text: str,
    now: datetime,
    opt_in: bool = True,
) -> SignupResult:
    """Join the list, or update the existing record for this address.

    With `opt_in` False (someone acting on a page without ticking the email
    box) the person is recorded, or their details updated, but not subscribed.
    One address is one supporter, also when two sign-ups race: the loser of
    the insert falls back to updating the winner's row.
    """
    existing = find_by_email(session, data.email)
    if existing is None:
        supporter = Supporter(
            email=data.email,
            first_name=data.first_name,
            last_name=data.last_name,
            postal_code=data.postal_code,
            country=data.country,
            source=source[:200],
            status=SupporterStatus.SUBSCRIBED if opt_in else SupporterStatus.NOT_SUBSCRIBED,
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(supporter)
                session.flush()
        except IntegrityError:
            existing = find_by_email(session, data.email)
            if existing is None:
                raise
        else:
            if opt_in:
                record_consent(session, supporter, ConsentKind.SUBSCRIBE, source, now, consent_text)
            session.flush()
            return SignupResult(supporter, created=True, resubscribed=False)

    _update_details(existing, data)
    existing.updated_at = now
    resubscribed = opt_in and (
        existing.status != SupporterStatus.SUBSCRIBED or is_snoozed(existing, now)
    )
    if resubscribed:
        first_time = existing.status == SupporterStatus.NOT_SUBSCRIBED
        existing.status = SupporterStatus.SUBSCRIBED
        existing.snoozed_until = None
        kind = ConsentKind.SUBSCRIBE if first_time else ConsentKind.RESUBSCRIBE
        record_consent(session, existing, kind, source, now, consent_text)
    session.flush()
    return SignupResult(existing, created=False, resubscribed=resubscribed)


def _update_details(supporter: Supporter, data: SignupData) -> None:
    """Take the new values a person typed; a blank field keeps what we had."""
    for name in ("first_name", "last_name", "postal_code", "country"):
        value = getattr(data, name)
        if value:
            setattr(supporter, name, value)


def supporter_for_token(session: Session, secret_key: str, token: str) -> Supporter | None:
    """The supporter a signed link belongs to; None for a forged or erased one."""
    public_id = read_token(secret_key, token)
    if public_id is None:
        return None
    supporter = session.scalar(select(Supporter).where(Supporter.public_id == public_id))
    if supporter is None or supporter.status == SupporterStatus.ERASED:
        return None
    return supporter


def unsubscribe(session: Session, supporter: Supporter, source: str, now: datetime) -> bool:
    """Stop all email at once. Returns False if they were already unsubscribed."""
    if supporter.status == SupporterStatus.UNSUBSCRIBED:
        return False
    supporter.status = SupporterStatus.UNSUBSCRIBED
    supporter.snoozed_until = None
    supporter.updated_at = now
    record_consent(session, supporter, ConsentKind.UNSUBSCRIBE, source, now)
    session.flush()
    return True


def snooze(
    session: Session, supporter: Supporter, days: int, source: str, now: datetime
) -> datetime:
    """Pause email for 30, 60 or 90 days; it resumes by itself when the date passes."""
    if days not in SNOOZE_CHOICES:
        raise SupporterError("Please choose a break of 30, 60 or 90 days.")
    if supporter.status != SupporterStatus.SUBSCRIBED:
        raise SupporterError("You are not receiving our email, so there is nothing to pause.")
    until = now + timedelta(days=days)
    supporter.snoozed_until = until
    supporter.updated_at = now
    record_consent(session, supporter, ConsentKind.SNOOZE, source, now, f"paused for {days} days")
    session.flush()
    return until


def resubscribe(
    session: Session, supporter: Supporter, source: str, consent_text: str, now: datetime
) -> None:
    """Start email again after an unsubscribe or a break."""
    if supporter.status == SupporterStatus.SUBSCRIBED and not is_snoozed(supporter, now):
        raise SupporterError("You are already receiving our email.")
    supporter.status = SupporterStatus.SUBSCRIBED
    supporter.snoozed_until = None
    supporter.updated_at = now
    record_consent(session, supporter, ConsentKind.RESUBSCRIBE, source, now, consent_text)
    session.flush()


def update_name(
    session: Session,
    supporter: Supporter,
    first_name: str,
    last_name: str,
    now: datetime,
    source: str = "preferences page",
) -> bool:
    """Correct the supporter's name; the ledger notes that it changed (not the old value)."""
    if (supporter.first_name, supporter.last_name) == (first_name, last_name):
        return False
    supporter.first_name = first_name
    supporter.last_name = last_name
    supporter.updated_at = now
    record_consent(session, supporter, ConsentKind.DETAILS, source, now, "name corrected")
    session.flush()
    return True


def suppress(
    session: Session,
    supporter: Supporter,
    status: SupporterStatus,
    source: str,
    now: datetime,
    detail: str = "",
) -> None:
    """Mark an address bounced or complained (provider events, staff action)."""
    if status not in (SupporterStatus.BOUNCED, SupporterStatus.COMPLAINED):
        raise SupporterError("only bounced or complained can be a suppression")
    supporter.status = status
    supporter.updated_at = now
    record_consent(session, supporter, ConsentKind.SUPPRESS, source, now, detail or status.value)
    session.flush()


def email_state(supporter: Supporter, now: datetime) -> str:
    """One word for the supporter's email state: subscribed, snoozed, unsubscribed, …"""
    if supporter.status == SupporterStatus.SUBSCRIBED and is_snoozed(supporter, now):
        return "snoozed"
    return supporter.status


@dataclass(frozen=True)
class Page:
    items: list[Supporter]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def search(session: Session, query: str, page: int = 1, per_page: int = 50) -> Page:
    """Supporters whose email or name contains the query, newest first."""
    stmt = select(Supporter).where(Supporter.status != SupporterStatus.ERASED)
    terms = query.strip().lower().split()
    for term in terms[:5]:
        # autoescape: "%" and "_" are literal characters ("_" is common in addresses).
        stmt = stmt.where(
            or_(
                Supporter.email.contains(term, autoescape=True),
                func.lower(Supporter.first_name).contains(term, autoescape=True),
                func.lower(Supporter.last_name).contains(term, autoescape=True),
            )
        )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    page = max(1, page)
    items = session.scalars(
        stmt.order_by(Supporter.id.desc()).offset((page - 1) * per_page).limit(per_page)
    ).all()
    return Page(list(items), page, per_page, total)


def counts(session: Session, now: datetime) -> dict[str, int]:
    """Headline counts for the staff dashboard."""
    rows = session.execute(select(Supporter.status, func.count()).group_by(Supporter.status)).all()
    by_status = {status: n for status, n in rows}
    snoozed = (
        session.scalar(
            select(func.count()).where(
                Supporter.status == SupporterStatus.SUBSCRIBED, Supporter.snoozed_until > now
            )
        )
        or 0
    )
    week_ago = now - timedelta(days=7)
    new_this_week = (
        session.scalar(select(func.count()).where(Supporter.created_at >= week_ago)) or 0
    )
    return {
        "total": sum(n for s, n in by_status.items() if s != SupporterStatus.ERASED),
        "subscribed": by_status.get(SupporterStatus.SUBSCRIBED, 0) - snoozed,
        "snoozed": snoozed,
        "unsubscribed": by_status.get(SupporterStatus.UNSUBSCRIBED, 0),
        "suppressed": by_status.get(SupporterStatus.BOUNCED, 0)
        + by_status.get(SupporterStatus.COMPLAINED, 0),
        "new_this_week": new_this_week,
    }


WELCOME_SWEEP_AFTER = timedelta(minutes=2)
WELCOME_SWEEP_WINDOW = timedelta(days=3)


def send_welcome(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    supporter_id: int,
    now: datetime,
) -> str:
    """Send the welcome email to a new supporter once; returns what happened."""
    supporter = session.get(Supporter, supporter_id)
    if supporter is None or supporter.welcomed_at is not None:
        return "not-needed"
    row = send_to_supporter(
        session, provider, identity, supporter, "welcome", f"welcome:{supporter.id}", now
    )
    supporter.welcomed_at = now
    session.flush()
    if row is None:
        return "already-sent"
    return row.status if not row.skip_reason else f"skipped:{row.skip_reason}"


def pending_welcome_ids(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Recent supporters whose welcome email was never handed over.

    A welcome whose send failed is left out: its own task retries it with backoff (or
    it failed for good and staff see why). Queueing it again every minute would pile
    up retrying tasks during an outage and resend a rejected message for days.
    """
    failed = (
        select(EmailLog.id)
        .where(
            EmailLog.supporter_id == Supporter.id,
            EmailLog.template == "welcome",
            EmailLog.status == EmailStatus.FAILED,
        )
        .exists()
    )
    return list(
        session.scalars(
            select(Supporter.id)
            .where(
                Supporter.welcomed_at.is_(None),
                Supporter.status == SupporterStatus.SUBSCRIBED,
                Supporter.created_at < now - WELCOME_SWEEP_AFTER,
                Supporter.created_at > now - WELCOME_SWEEP_WINDOW,
                ~failed,
            )
            .order_by(Supporter.id)
            .limit(limit)
        )
    )


def daily_signups(session: Session, now: datetime, days: int = 30) -> list[tuple[str, int]]:
    """New supporters per day for the last `days` days, oldest first, zero-filled."""
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = func.date(Supporter.created_at)
    rows = session.execute(
        select(day, func.count()).where(Supporter.created_at >= start).group_by(day)
    ).all()
    found = {str(d)[:10]: n for d, n in rows}
    return [
        (
            (start + timedelta(days=i)).strftime("%Y-%m-%d"),
            found.get((start + timedelta(days=i)).strftime("%Y-%m-%d"), 0),
        )
        for i in range(days)
    ]
