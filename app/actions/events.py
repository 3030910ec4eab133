"""Events: RSVPs within capacity, a waitlist that moves up, confirmations with .ics.

An event page keeps its details in `page.settings`: "starts_at" and "ends_at"
(ISO local times), "timezone" (an IANA name), "venue", "online_url" and
"capacity" (absent means unlimited). Callers own the transaction.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.actions import ics
from app.actions.models import Action, ActionPage, EventRsvp, PageKind, RsvpStatus
from app.actions.service import ActionError
from app.mailings.models import EmailLog
from app.supporters.models import Supporter
from app.timeutil import utcnow

if TYPE_CHECKING:
    from app.actions.service import ActionResult
    from app.integrations.email import EmailProvider
    from app.mailings.service import SenderIdentity

ACTIVE = (RsvpStatus.GOING.value, RsvpStatus.WAITLISTED.value)
# The beat sweep queues RSVP emails never handed over (the broker was down, say):
# changes older than SWEEP_AFTER (their own task had time to run), younger than SWEEP_WINDOW.
SWEEP_AFTER = timedelta(minutes=2)
SWEEP_WINDOW = timedelta(days=3)
# What each RSVP email says, and the status the RSVP must still have for it to go out.
EMAILS = {
    "going": ("event-confirmation", RsvpStatus.GOING),
    "waitlisted": ("event-waitlisted", RsvpStatus.WAITLISTED),
    "promoted": ("event-promoted", RsvpStatus.GOING),
}


class EventError(ActionError):
    """The RSVP change cannot be made, in words for a person."""


@dataclass(frozen=True)
class EventDetails:
    """An event page's settings, parsed; times are aware, in the event's own zone."""

    zone: ZoneInfo
    starts: datetime | None
    ends: datetime | None
    venue: str
    online_url: str
    capacity: int | None

    def starts_utc(self) -> datetime | None:
        """The start as naive UTC, as timestamps are stored."""
        return self.starts.astimezone(UTC).replace(tzinfo=None) if self.starts else None

    def over_by(self) -> datetime | None:
        """Naive UTC moment after which the event has taken place (start + 1 hour if no end)."""
        end = self.ends or (self.starts + timedelta(hours=1) if self.starts else None)
        return end.astimezone(UTC).replace(tzinfo=None) if end else None


def _zone(name: object) -> ZoneInfo:
    try:
        return ZoneInfo(str(name)) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _local_time(value: object, zone: ZoneInfo) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed.astimezone(zone)


def _https_url(value: object) -> str:
    url = str(value or "").strip()
    parts = urlsplit(url)
    ok = parts.scheme == "https" and parts.netloc and not any(c.isspace() for c in url)
    return url if ok else ""


def _capacity(value: object) -> int | None:
    if isinstance(value, bool) or value in (None, ""):
        return None
    try:
        number = int(str(value))
    except ValueError:
        return None
    return max(number, 0)


def details(page: ActionPage) -> EventDetails:
    """Parse the event's settings; a bad time zone falls back to UTC, a bad time to none."""
    settings = page.settings or {}
    zone = _zone(settings.get("timezone"))
    return EventDetails(
        zone=zone,
        starts=_local_time(settings.get("starts_at"), zone),
        ends=_local_time(settings.get("ends_at"), zone),
        venue=str(settings.get("venue") or "").strip(),
        online_url=_https_url(settings.get("online_url")),
        capacity=_capacity(settings.get("capacity")),
    )


def _clock(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment:%M} {'am' if moment.hour < 12 else 'pm'}"


def format_moment(moment: datetime) -> str:
    """ "Thursday 10 December 2026, 6:30 pm EST": local date and time with the zone."""
    return f"{moment:%A} {moment.day} {moment:%B %Y}, {_clock(moment)} {moment.tzname()}"


def describe_when(event: EventDetails) -> str:
    """The date and time in one phrase, with the zone's name (for pages and emails)."""
    if event.starts is None:
        return "Date and time to be announced"
    text = format_moment(event.starts)
    if event.ends is not None and event.ends.date() == event.starts.date():
        text += f" to {_clock(event.ends)} {event.ends.tzname()}"
    elif event.ends is not None:
        text += f" to {format_moment(event.ends)}"
    return f"{text} ({event.zone.key} time)"


def _is_over(event: EventDetails, now: datetime) -> bool:
    over = event.over_by()
    return over is not None and over <= now


def going_count(session: Session, page: ActionPage) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                EventRsvp.page_id == page.id, EventRsvp.status == RsvpStatus.GOING
            )
        )
        or 0
    )


def waitlist_count(session: Session, page: ActionPage) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                EventRsvp.page_id == page.id, EventRsvp.status == RsvpStatus.WAITLISTED
            )
        )
        or 0
    )


def _lock_page(session: Session, page: ActionPage) -> None:
    """Serialise RSVP changes per event, so two people cannot both take the last place.

    On PostgreSQL this is SELECT ... FOR NO KEY UPDATE on the page row: it excludes
    other RSVPs to this page, yet not the FOR KEY SHARE lock that inserting an action
    or an RSVP (foreign keys to the page) takes, which plain FOR UPDATE would, turning
    two simultaneous RSVPs into a deadlock.
    """
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has no row locks, and pysqlite has committed take_action's savepoints
        # already; a write (that changes nothing) holds its one writer lock until commit.
        session.execute(
            update(ActionPage)
            .where(ActionPage.id == page.id)
            .values(updated_at=ActionPage.updated_at)
            .execution_options(synchronize_session=False)
        )
        return
    session.execute(
        select(ActionPage.id).where(ActionPage.id == page.id).with_for_update(key_share=True)
    )


def _has_place(session: Session, page: ActionPage, capacity: int | None) -> bool:
    return capacity is None or going_count(session, page) < capacity


def _set_status(rsvp: EventRsvp, status: RsvpStatus, now: datetime) -> None:
    # updated_at is when the RSVP took its current status: the waitlist's order.
    rsvp.status = status.value
    rsvp.updated_at = now


def rsvp_for(session: Session, page: ActionPage, supporter: Supporter) -> EventRsvp | None:
    return session.scalar(
        select(EventRsvp).where(
            EventRsvp.page_id == page.id, EventRsvp.supporter_id == supporter.id
        )
    )


def check_can_act(page: ActionPage, now: datetime) -> None:
    """Raise EventError once the event is over: checked before anything is written."""
    if _is_over(details(page), now):
        raise EventError("This event has already taken place.")


def after_action(session: Session, page: ActionPage, result: ActionResult, now: datetime) -> None:
    """Give the person a place, or a place on the waitlist.

    Someone already going or waiting keeps their place; someone who had cancelled
    comes back, going if there is room. Puts "rsvp_status", "rsvp_id" and
    "rsvp_changed" in result.extra. Raises EventError once the event is over.
    """
    event = details(page)
    check_can_act(page, now)
    _lock_page(session, page)
    rsvp = rsvp_for(session, page, result.supporter)
    changed = False
    if rsvp is None:
        status = (
            RsvpStatus.GOING if _has_place(session, page, event.capacity) else RsvpStatus.WAITLISTED
        )
        rsvp = EventRsvp(
            page_id=page.id,
            supporter_id=result.supporter.id,
            status=status.value,
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(rsvp)
                session.flush()
            changed = True
        except IntegrityError:  # the same person at once: the page lock makes this rare
            rsvp = rsvp_for(session, page, result.supporter)
            assert rsvp is not None
    elif rsvp.status == RsvpStatus.CANCELLED:
        has_place = _has_place(session, page, event.capacity)
        _set_status(rsvp, RsvpStatus.GOING if has_place else RsvpStatus.WAITLISTED, now)
        session.flush()
        changed = True
    result.extra.update(rsvp_status=rsvp.status, rsvp_id=rsvp.id, rsvp_changed=changed)


def cancel_rsvp(
    session: Session, supporter: Supporter, page: ActionPage, now: datetime
) -> EventRsvp | None:
    """Cancel this supporter's RSVP and give a freed place to the longest-waiting person.

    Returns the RSVP that was promoted to going, or None. Raises EventError when
    the supporter has no RSVP here to cancel.
    """
    _lock_page(session, page)
    rsvp = rsvp_for(session, page, supporter)
    if rsvp is None or rsvp.status not in ACTIVE:
        raise EventError("You have no place at this event to cancel.")
    _set_status(rsvp, RsvpStatus.CANCELLED, now)
    session.flush()
    return promote_waitlisted(session, page, now)


def promote_waitlisted(session: Session, page: ActionPage, now: datetime) -> EventRsvp | None:
    """Move the first person on the waitlist to going, if a place is free; the page is locked."""
    if not _has_place(session, page, details(page).capacity):
        return None
    first = session.scalar(
        select(EventRsvp)
        .where(EventRsvp.page_id == page.id, EventRsvp.status == RsvpStatus.WAITLISTED)
        .order_by(EventRsvp.updated_at, EventRsvp.id)
        .limit(1)
    )
    if first is not None:
        _set_status(first, RsvpStatus.GOING, now)
        session.flush()
    return first


def fill_free_places(session: Session, page: ActionPage, now: datetime) -> list[EventRsvp]:
    """Promote waitlisted people while places are free (after staff raise the capacity).

    Returns the promoted RSVPs; the caller queues their "promoted" emails after commit.
    """
    _lock_page(session, page)
    promoted = []
    while (rsvp := promote_waitlisted(session, page, now)) is not None:
        promoted.append(rsvp)
    return promoted


def public_context(session: Session, page: ActionPage) -> dict[str, object]:
    """What the public event page shows besides the form (places left, times)."""
    event = details(page)
    going = going_count(session, page)
    places_left = None if event.capacity is None else max(event.capacity - going, 0)
    return {
        "when": describe_when(event),
        "starts": format_moment(event.starts) if event.starts else "",
        "ends": format_moment(event.ends) if event.ends else "",
        "starts_iso": event.starts.isoformat() if event.starts else "",
        "ends_iso": event.ends.isoformat() if event.ends else "",
        "timezone": event.zone.key,
        "venue": event.venue,
        "online_url": event.online_url,
        "capacity": event.capacity,
        "going": going,
        "places_left": places_left,
        "full": places_left == 0,
        "has_calendar": event.starts is not None,
        "past": _is_over(event, utcnow()),
    }


def thanks_context(session: Session, page: ActionPage, action: Action) -> dict[str, object]:
    """What the thank-you page says about this person's RSVP."""
    rsvp = session.scalar(
        select(EventRsvp).where(
            EventRsvp.page_id == page.id, EventRsvp.supporter_id == action.supporter_id
        )
    )
    return {
        "rsvp_status": rsvp.status if rsvp else "",
        "has_calendar": details(page).starts is not None,
    }


@dataclass(frozen=True)
class UpcomingRsvp:
    """One of a supporter's RSVPs to an event still to come."""

    page_id: int
    slug: str
    title: str
    when: str
    status: str


def upcoming_rsvps(session: Session, supporter: Supporter, now: datetime) -> list[UpcomingRsvp]:
    """The supporter's places and waitlist spots at events not yet over, soonest first."""
    rows = session.execute(
        select(EventRsvp.status, ActionPage)
        .join(ActionPage, ActionPage.id == EventRsvp.page_id)
        .where(
            EventRsvp.supporter_id == supporter.id,
            EventRsvp.status.in_(ACTIVE),
            ActionPage.kind == PageKind.EVENT,
        )
    ).all()
    found = []
    for status, page in rows:
        event = details(page)
        if not _is_over(event, now):
            found.append((event.starts_utc() or datetime.max, page, event, status))
    found.sort(key=lambda item: (item[0], item[1].id))
    return [
        UpcomingRsvp(page.id, page.slug, page.title, describe_when(event), status)
        for _, page, event, status in found
    ]


@dataclass(frozen=True)
class Attendee:
    """One row of the staff attendee list."""

    supporter_id: int
    first_name: str
    last_name: str
    email: str
    status: str
    rsvp_at: datetime
    changed_at: datetime


def attendees(session: Session, page: ActionPage) -> list[Attendee]:
    """Going (in RSVP order), then the waitlist (in its order), then cancellations."""
    order = {RsvpStatus.GOING.value: 0, RsvpStatus.WAITLISTED.value: 1}
    rows = session.execute(
        select(EventRsvp, Supporter)
        .join(Supporter, Supporter.id == EventRsvp.supporter_id)
        .where(EventRsvp.page_id == page.id)
    ).all()
    rows_sorted = sorted(rows, key=lambda r: (order.get(r[0].status, 2), r[0].updated_at, r[0].id))
    return [
        Attendee(s.id, s.first_name, s.last_name, s.email, r.status, r.created_at, r.updated_at)
        for r, s in rows_sorted
    ]


def _csv_cell(value: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: keep it text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def attendees_csv(rows: list[Attendee]) -> str:
    """The attendee list as CSV, safe to open in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["first_name", "last_name", "email", "status", "rsvp_at", "status_since"])
    for a in rows:
        writer.writerow(
            [
                _csv_cell(a.first_name),
                _csv_cell(a.last_name),
                _csv_cell(a.email),
                a.status,
                a.rsvp_at.isoformat(sep=" ", timespec="seconds"),
                a.changed_at.isoformat(sep=" ", timespec="seconds"),
            ]
        )
    return out.getvalue()


def page_url(base_url: str, page: ActionPage) -> str:
    return f"{base_url}/a/{page.slug}"


def calendar_file(page: ActionPage, base_url: str) -> bytes | None:
    """The event's .ics (the same for everyone: nothing personal), or None without a start."""
    event = details(page)
    if event.starts is None:
        return None
    url = page_url(base_url, page)
    location = event.venue or event.online_url
    description = page.body_md.strip()
    if event.online_url:
        description += f"\n\nJoin online: {event.online_url}"
    description += f"\n\nDetails and RSVP: {url}"
    host = urlsplit(base_url).hostname or "groundswell.local"
    return ics.build_calendar(
        ics.CalendarEvent(
            uid=f"event-{page.id}@{host}",
            stamp=page.updated_at,
            starts=event.starts,
            ends=event.ends,
            summary=page.title,
            location=location,
            url=url,
            description=description.strip(),
        )
    )


def email_context(page: ActionPage, base_url: str) -> dict[str, Any]:
    """What the RSVP emails say about the event."""
    event = details(page)
    return {
        "page": page,
        "when": describe_when(event),
        "venue": event.venue,
        "online_url": event.online_url,
        "page_url": page_url(base_url, page),
    }


def send_rsvp_email(
    session: Session,
    provider: EmailProvider,
    identity: SenderIdentity,
    rsvp_id: int,
    kind: str,
    now: datetime,
) -> str:
    """Send the confirmation ("going"), waitlist or promotion email once per status change.

    Nothing is sent when the RSVP has moved on since (say, cancelled before the
    email went out). Returns what happened, for logs and tests.
    """
    from app.mailings.service import send_to_supporter
    from privacy.seal import Purpose

    template, needed = EMAILS[kind]
    rsvp = session.get(EventRsvp, rsvp_id)
    if rsvp is None or rsvp.status != needed:
        return "not-needed"
    # "going" and "promoted" announce the same change: if the other went, this one must not.
    siblings = [k for k in _kinds_for(rsvp.status) if k != kind]
    if siblings and session.scalar(
        select(EmailLog.id).where(EmailLog.dedupe_key.in_(rsvp_email_keys(rsvp, siblings)))
    ):
        return "already-sent"
    page = rsvp.page
    attachments: tuple[tuple[str, str, bytes], ...] = ()
    if needed == RsvpStatus.GOING and (ics_data := calendar_file(page, identity.base_url)):
        attachments = (("event.ics", "text/calendar", ics_data),)
    row = send_to_supporter(
        session,
        provider,
        identity,
        rsvp.supporter,
        template,
        rsvp_email_key(rsvp.id, kind, rsvp.updated_at),
        now,
        email_context(page, identity.base_url),
        Purpose.TRANSACTIONAL,
        attachments,
    )
    if row is None:
        return "already-sent"
    return row.status if not row.skip_reason else f"skipped:{row.skip_reason}"


def rsvp_email_key(rsvp_id: int, kind: str, changed_at: datetime) -> str:
    """The email's dedupe key.

    The status change's time is in the key, so someone who cancels and comes back
    hears from us again, while a retried task still sends at most once.
    """
    return f"event-rsvp:{rsvp_id}:{kind}:{changed_at.strftime('%Y%m%dT%H%M%S%f')}"


def _kinds_for(status: str) -> list[str]:
    """The emails that can announce an RSVP's taking this status."""
    return [kind for kind, (_, needed) in EMAILS.items() if needed == status]


def rsvp_email_keys(rsvp: EventRsvp, kinds: list[str]) -> list[str]:
    return [rsvp_email_key(rsvp.id, kind, rsvp.updated_at) for kind in kinds]


def _owed_kind(rsvp: EventRsvp, action_updated_at: datetime | None) -> str:
    """Which email the RSVP's current status calls for.

    Waitlisted: "waitlisted". Going: "going" when the person's own RSVP put them
    there (a new RSVP, or coming back after cancelling: the action was taken at
    that very moment); otherwise a place opened up for them: "promoted". Someone
    who came back and then sent the form again (moving the action's time on)
    looks promoted and gets "promoted"; send_rsvp_email still never sends both.
    """
    if rsvp.status == RsvpStatus.WAITLISTED:
        return "waitlisted"
    if rsvp.updated_at == rsvp.created_at or action_updated_at == rsvp.updated_at:
        return "going"
    return "promoted"


def pending_rsvp_emails(
    session: Session, now: datetime, limit: int = 500, chunk: int = 500
) -> list[tuple[int, str]]:
    """Recent RSVP changes whose email was never handed over: (rsvp id, kind) pairs.

    Only going and waitlisted RSVPs that took their status between SWEEP_WINDOW
    and SWEEP_AFTER ago, for events not yet over, whose email for that change
    has no log row at all. A row that failed is left out: its own task retries it
    with backoff (or it failed for good and staff see why).
    """
    rows = session.execute(
        select(EventRsvp, Action.updated_at)
        .outerjoin(
            Action,
            (Action.page_id == EventRsvp.page_id) & (Action.supporter_id == EventRsvp.supporter_id),
        )
        .where(
            EventRsvp.status.in_(ACTIVE),
            EventRsvp.updated_at < now - SWEEP_AFTER,
            EventRsvp.updated_at > now - SWEEP_WINDOW,
        )
        .order_by(EventRsvp.id)
    ).all()
    over: dict[int, bool] = {}
    owed: list[tuple[int, str]] = []
    for start in range(0, len(rows), chunk):
        batch = rows[start : start + chunk]
        # Any email for this change (going or promoted alike) means it was handed over.
        keys = {r: rsvp_email_keys(r, _kinds_for(r.status)) for r, _ in batch}
        logged = set(
            session.scalars(
                select(EmailLog.dedupe_key).where(
                    EmailLog.dedupe_key.in_([k for ks in keys.values() for k in ks])
                )
            )
        )
        for rsvp, action_updated_at in batch:
            if any(k in logged for k in keys[rsvp]):
                continue
            if rsvp.page_id not in over:
                over[rsvp.page_id] = _is_over(details(rsvp.page), now)
            if not over[rsvp.page_id]:
                owed.append((rsvp.id, _owed_kind(rsvp, action_updated_at)))
                if len(owed) >= limit:
                    return owed
    return owed
