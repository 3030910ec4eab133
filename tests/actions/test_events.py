"""Events: RSVP within capacity, the waitlist, cancelling from /u/<token>, .ics, attendees."""

from __future__ import annotations

import csv
import email
import io
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from html import unescape
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.actions import events, ics
from app.actions.models import Action, EventRsvp, RsvpStatus
from app.actions.service import ActionDetails, Attribution, take_action
from app.extensions import db
from app.mailings.models import EmailLog
from app.mailings.service import SenderIdentity
from app.staff.models import AuditEntry, DisclosureEntry, Role
from app.supporters.models import Supporter
from app.supporters.tokens import make_token
from app.timeutil import utcnow
from tests.conftest import csrf_token
from tests.factories import STAFF_PASSWORD, ActionPageFactory, StaffFactory, SupporterFactory

ADULT_YEAR = str(utcnow().year - 40)
NEXT_YEAR = utcnow().year + 1
# 6:30 pm in New York in December is 11:30 pm UTC (EST, UTC-5).
EVENT = {
    "starts_at": f"{NEXT_YEAR}-12-10T18:30",
    "ends_at": f"{NEXT_YEAR}-12-10T20:00",
    "timezone": "America/New_York",
    "venue": "Community Hall, 12 Main Street",
    "capacity": 2,
}


def event_page(slug: str = "vigil", **settings: object):  # type: ignore[no-untyped-def]
    return ActionPageFactory(
        kind="event", slug=slug, title="Candlelight vigil", settings={**EVENT, **settings}
    )


def person(name: str = "Nadia", **extra: str) -> dict[str, str]:
    data = {
        "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.org",
        "first_name": name,
        "last_name": "Okafor",
        "postal_code": "10001",
        "country": "US",
        "birth_year": ADULT_YEAR,
    }
    data.update(extra)
    return data


def rsvp(client, slug: str, fields: dict[str, str]):  # type: ignore[no-untyped-def]
    path = f"/a/{slug}"
    return client.post(path, data={"csrf_token": csrf_token(client, path), **fields})


def rsvps(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Each RSVP's email address and status."""
    db.session.expire_all()
    rows = db.session.execute(
        select(Supporter.email, EventRsvp.status)
        .join(Supporter, Supporter.id == EventRsvp.supporter_id)
        .where(EventRsvp.page_id == page.id)
    ).all()
    return {address: status for address, status in rows}


def mails(outbox, to: str | None = None) -> list[EmailMessage]:  # type: ignore[no-untyped-def]
    """Messages in the outbox in the order they were sent (the email log's order)."""
    db.session.expire_all()
    sent = db.session.scalars(
        select(EmailLog.provider_message_id)
        .where(EmailLog.provider_message_id != "")
        .order_by(EmailLog.id)
    ).all()
    files = {p.stem.rsplit("-", 1)[1]: p for p in outbox.directory.glob("*.eml")}
    found = []
    for message_id in sent:
        message = email.message_from_bytes(files[message_id].read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        if to is None or str(message["To"]) == to:
            found.append(message)
    return found


def calendar_parts(message: EmailMessage) -> list[EmailMessage]:
    return [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]


def unfold(data: bytes) -> list[str]:
    """The content lines of an .ics file (RFC 5545 3.1), checking CRLF endings on the way."""
    text = data.decode("utf-8")
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")  # no bare LF
    return text.replace("\r\n ", "").split("\r\n")[:-1]


def props(data: bytes) -> dict[str, str]:
    return dict(line.split(":", 1) for line in unfold(data))


def login(client, address: str):  # type: ignore[no-untyped-def]
    token = csrf_token(client, "/staff/login")
    data = {"email": address, "password": STAFF_PASSWORD, "csrf_token": token}
    return client.post("/staff/login", data=data)


def page_text(response) -> str:  # type: ignore[no-untyped-def]
    html = response.get_data(as_text=True)
    main = re.search(r"<main\b.*?</main>", html, re.S)
    assert main
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", main.group(0))).split())


# --- RSVP and capacity -----------------------------------------------------------------


def test_rsvps_within_capacity_go_and_the_next_person_is_waitlisted(client, outbox):
    page = event_page(capacity=2)
    ada, bo, cy = person("Ada"), person("Bo"), person("Cy")

    first = rsvp(client, "vigil", ada)
    assert first.status_code == 303
    assert "You're going." in page_text(client.get(first.headers["Location"]))
    assert rsvp(client, "vigil", bo).status_code == 303
    third = rsvp(client, "vigil", cy)
    assert third.status_code == 303
    thanks = page_text(client.get(third.headers["Location"]))
    assert "You're on the waitlist; we'll email you if a place opens." in thanks
    assert "You're going" not in thanks

    assert rsvps(page) == {
        ada["email"]: "going",
        bo["email"]: "going",
        cy["email"]: "waitlisted",
    }
    # Going: a confirmation with the calendar file. Waitlisted: told so, no calendar file.
    [to_ada] = mails(outbox, ada["email"])
    assert to_ada["Subject"] == "You're going: Candlelight vigil"
    [attachment] = calendar_parts(to_ada)
    assert attachment.get_filename() == "event.ics"
    [to_cy] = mails(outbox, cy["email"])
    assert to_cy["Subject"] == "You're on the waitlist: Candlelight vigil"
    assert calendar_parts(to_cy) == []
    assert "List-Unsubscribe" in to_cy and "List-Unsubscribe" in to_ada


def test_rsvp_twice_counts_once_and_sends_one_confirmation(client, outbox):
    page = event_page(capacity=1)
    edited_at = page.updated_at
    ada = person("Ada")
    assert rsvp(client, "vigil", ada).status_code == 303
    again = rsvp(client, "vigil", {**ada, "email": ada["email"].upper()})
    assert again.status_code == 303
    assert "You're going." in page_text(client.get(again.headers["Location"]))

    assert rsvps(page) == {ada["email"]: "going"}
    assert db.session.scalar(select(func.count()).where(Action.page_id == page.id)) == 1
    assert len(mails(outbox, ada["email"])) == 1
    assert page.updated_at == edited_at  # locking the page for RSVPs does not edit it
    # The one place is still taken by Ada alone: the next person waits.
    bo = person("Bo")
    rsvp(client, "vigil", bo)
    assert rsvps(page)[bo["email"]] == "waitlisted"


def test_unlimited_event_takes_everyone(client):
    page = event_page(capacity=None)
    people = [person(f"P{i}") for i in range(3)]
    for p in people:
        rsvp(client, "vigil", p)
    assert set(rsvps(page).values()) == {"going"}
    assert "places left" not in page_text(client.get("/a/vigil"))


def test_no_rsvp_once_the_event_is_over(client):
    page = event_page(starts_at="2020-01-01T10:00", ends_at="2020-01-01T12:00")
    response = rsvp(client, "vigil", person())
    assert response.status_code == 422
    assert "already taken place" in page_text(response)
    assert rsvps(page) == {}
    # Refused before anything is written, on SQLite too (where a released savepoint
    # would already be committed): no action, and no supporter.
    assert db.session.scalar(select(func.count()).select_from(Action)) == 0
    assert db.session.scalar(select(func.count()).select_from(Supporter)) == 0


def test_last_place_goes_to_one_of_two_simultaneous_rsvps(app):
    """The page row lock makes the second RSVP wait and count again: one gets the place."""
    page = event_page(capacity=1)
    ada, bo = SupporterFactory(), SupporterFactory()
    engine = db.engine
    now = utcnow()
    results: dict[str, str] = {}

    def take(session: Session, supporter_id: int) -> str:
        result = take_action(
            session,
            session.get(type(page), page.id),
            session.get(Supporter, supporter_id),
            False,
            ActionDetails(),
            Attribution(),
            now,
        )
        return str(result.extra["rsvp_status"])

    def second() -> None:
        with app.app_context(), Session(engine) as session:
            results["bo"] = take(session, bo.id)
            session.commit()

    with Session(engine) as session:
        results["ada"] = take(session, ada.id)
        thread = threading.Thread(target=second)
        thread.start()
        # Bo's RSVP must wait for Ada's transaction, not count the places beside it.
        thread.join(timeout=1.0)
        assert thread.is_alive(), "the second RSVP did not wait for the first"
        session.commit()
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert results == {"ada": "going", "bo": "waitlisted"}
    db.session.expire_all()
    assert events.going_count(db.session, page) == 1


# --- The public page and the thank-you page --------------------------------------------


def test_event_page_shows_time_zone_venue_and_places_left(client):
    page = event_page(capacity=3)
    text = page_text(client.get("/a/vigil"))
    assert f"Thursday 10 December {NEXT_YEAR}" in text or "10 December" in text
    assert "6:30 pm EST to 8:00 pm EST (America/New_York time)" in text
    assert "Community Hall, 12 Main Street" in text
    assert "3 places left of 3" in text
    rsvp(client, "vigil", person())
    assert "2 places left of 3" in page_text(client.get("/a/vigil"))
    assert events.public_context(db.session, page)["places_left"] == 2


def test_full_event_offers_the_waitlist(client):
    event_page(capacity=1)
    rsvp(client, "vigil", person())
    text = page_text(client.get("/a/vigil"))
    assert "This event is full — you can join the waitlist" in text
    assert "places left" not in text


def test_online_link_is_marked_as_leaving_the_site(client):
    event_page(venue="", online_url="https://meet.example.net/vigil")
    html = client.get("/a/vigil").get_data(as_text=True)
    link = re.search(r'<a href="https://meet\.example\.net/vigil"[^>]*>(.*?)</a>', html, re.S)
    assert link, html
    assert 'rel="noopener noreferrer"' in link.group(0)
    assert "(leaves this site)" in link.group(1)


def test_only_https_online_links_are_shown(client):
    event_page(online_url="javascript:alert(1)")
    assert "javascript:" not in client.get("/a/vigil").get_data(as_text=True)


def test_thanks_page_links_to_the_calendar_file(client):
    event_page()
    response = rsvp(client, "vigil", person())
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'href="/a/vigil/event.ics"' in html


# --- The calendar file -----------------------------------------------------------------


def test_event_ics_route_serves_the_event_in_utc_without_personal_data(client):
    page = event_page(online_url="https://meet.example.net/vigil")
    ada = person("Ada")
    rsvp(client, "vigil", ada)
    response = client.get("/a/vigil/event.ics")
    assert response.status_code == 200
    assert response.mimetype == "text/calendar"
    data = response.get_data()
    values = props(data)
    lines = unfold(data)
    assert lines[:2] == ["BEGIN:VCALENDAR", "VERSION:2.0"] and lines[-1] == "END:VCALENDAR"
    assert "BEGIN:VEVENT" in lines and "END:VEVENT" in lines
    assert values["UID"] == f"event-{page.id}@localhost"
    assert values["DTSTART"] == f"{NEXT_YEAR}1210T233000Z"
    assert values["DTEND"] == f"{NEXT_YEAR}1211T010000Z"
    assert values["SUMMARY"] == "Candlelight vigil"
    assert values["LOCATION"] == "Community Hall\\, 12 Main Street"
    assert values["URL"] == "http://localhost/a/vigil"
    assert re.fullmatch(r"\d{8}T\d{6}Z", values["DTSTAMP"])
    assert ada["email"].encode() not in data and b"Ada" not in data
    # The same file for everyone, every time (the UID stays, so calendars update it).
    assert client.get("/a/vigil/event.ics").get_data() == data


def test_event_ics_route_is_only_for_published_events_with_a_start(client):
    ActionPageFactory(slug="petition")
    ActionPageFactory(kind="event", slug="draft-event", status="draft", settings=EVENT)
    event_page(slug="tba", starts_at="", ends_at="")
    for slug in ("petition", "draft-event", "tba", "no-such-page"):
        assert client.get(f"/a/{slug}/event.ics").status_code == 404


def test_ics_text_is_escaped_per_rfc_5545():
    assert ics.escape_text("a\\b;c,d\ne\r\nf\rg") == "a\\\\b\\;c\\,d\\ne\\nf\\ng"


def test_ics_lines_are_folded_at_75_octets_without_splitting_characters():
    summary = "Vigil for peace — " + "é" * 40 + ", then a march; all welcome " * 3
    data = ics.build_calendar(
        ics.CalendarEvent(
            uid="event-1@example.org",
            stamp=datetime(2026, 1, 1, 12, 0),
            starts=datetime(2026, 7, 4, 18, 0, tzinfo=ZoneInfo("Europe/Paris")),
            ends=None,
            summary=summary,
            description="Line one\nLine two, with a comma",
        )
    )
    raw_lines = data.split(b"\r\n")
    assert raw_lines[-1] == b""
    assert all(len(line) <= 75 for line in raw_lines)
    assert any(line.startswith(b" ") for line in raw_lines)  # something was folded
    for line in raw_lines:
        line.decode("utf-8")  # each physical line is whole UTF-8: no character was cut
    values = props(data)
    assert values["SUMMARY"] == ics.escape_text(summary)
    assert values["DESCRIPTION"] == "Line one\\nLine two\\, with a comma"
    assert values["DTSTART"] == "20260704T160000Z"  # Paris summer time is UTC+2
    assert values["DTSTAMP"] == "20260101T120000Z"
    assert "DTEND" not in values


def test_fold_keeps_short_lines_and_folds_exactly_at_the_limit():
    assert ics.fold("A" * 75) == "A" * 75
    assert ics.fold("A" * 76) == "A" * 75 + "\r\n A"
    folded = ics.fold("B" * 200)
    assert [len(p) for p in folded.split("\r\n")] == [
        75,
        75,
        52,
    ]  # 75, then a space and 74 more, then a space and 51
    assert folded.replace("\r\n ", "") == "B" * 200


# --- Cancelling from /u/<token>, and the waitlist moving up ----------------------------


def _token(app, address: str) -> str:  # type: ignore[no-untyped-def]
    supporter = db.session.scalar(select(Supporter).where(Supporter.email == address))
    return make_token(app.config["SECRET_KEY"], supporter.public_id)


def test_cancel_from_preferences_promotes_the_first_waitlisted_and_emails_them(app, client, outbox):
    page = event_page(capacity=1)
    ada, bo, cy = person("Ada"), person("Bo"), person("Cy")
    for p in (ada, bo, cy):
        rsvp(client, "vigil", p)
    assert rsvps(page) == {
        ada["email"]: "going",
        bo["email"]: "waitlisted",
        cy["email"]: "waitlisted",
    }

    token = _token(app, ada["email"])
    prefs = client.get(f"/u/{token}")
    text = page_text(prefs)
    assert "Your events" in text and "Candlelight vigil" in text and "You're going." in text
    assert "6:30 pm EST" in text
    cancel_path = f"/u/{token}/events/{page.id}/cancel"
    assert f'action="{cancel_path}"' in prefs.get_data(as_text=True)

    response = client.post(cancel_path, data={"csrf_token": csrf_token(client, f"/u/{token}")})
    assert response.status_code == 303
    done = client.get(response.headers["Location"])
    assert "Your RSVP is cancelled." in page_text(done)
    assert "Your events" not in page_text(done)

    assert rsvps(page) == {
        ada["email"]: "cancelled",
        bo["email"]: "going",
        cy["email"]: "waitlisted",
    }
    [promoted] = mails(outbox, bo["email"])[1:]  # after the waitlist email
    assert promoted["Subject"] == "A place opened up: you're going to Candlelight vigil"
    assert "now you're going" in promoted.get_body(preferencelist=("plain",)).get_content()
    [attachment] = calendar_parts(promoted)
    assert attachment.get_filename() == "event.ics"
    values = props(attachment.get_payload(decode=True))
    local_start = datetime(NEXT_YEAR, 12, 10, 18, 30, tzinfo=ZoneInfo("America/New_York"))
    assert values["DTSTART"] == local_start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    assert values["DTSTART"] == f"{NEXT_YEAR}1210T233000Z"
    assert mails(outbox, cy["email"])[1:] == []  # Cy is still waiting, and not told otherwise


def test_cancel_needs_the_csrf_token_and_a_real_rsvp(app, client):
    page = event_page(capacity=1)
    ada = person("Ada")
    rsvp(client, "vigil", ada)
    token = _token(app, ada["email"])
    path = f"/u/{token}/events/{page.id}/cancel"
    assert client.post(path).status_code == 400
    assert rsvps(page) == {ada["email"]: "going"}
    assert client.post(f"/u/forged/events/{page.id}/cancel").status_code in (400, 404)

    # Someone with no RSVP here is told so; nothing changes.
    other = SupporterFactory()
    other_token = make_token(app.config["SECRET_KEY"], other.public_id)
    response = client.post(
        f"/u/{other_token}/events/{page.id}/cancel",
        data={"csrf_token": csrf_token(client, f"/u/{other_token}")},
    )
    assert "You had no place at that event to cancel." in page_text(
        client.get(response.headers["Location"])
    )
    assert rsvps(page) == {ada["email"]: "going"}


def test_leaving_the_waitlist_promotes_no_one(app, client, outbox):
    page = event_page(capacity=1)
    ada, bo = person("Ada"), person("Bo")
    rsvp(client, "vigil", ada)
    rsvp(client, "vigil", bo)
    token = _token(app, bo["email"])
    assert "Leave the waitlist" in page_text(client.get(f"/u/{token}"))
    client.post(
        f"/u/{token}/events/{page.id}/cancel",
        data={"csrf_token": csrf_token(client, f"/u/{token}")},
    )
    assert rsvps(page) == {ada["email"]: "going", bo["email"]: "cancelled"}
    assert len(mails(outbox, ada["email"])) == 1


def test_someone_who_cancelled_can_rsvp_again_and_hears_from_us_again(app, client, outbox):
    page = event_page(capacity=1)
    ada, bo = person("Ada"), person("Bo")
    rsvp(client, "vigil", ada)
    token = _token(app, ada["email"])
    client.post(
        f"/u/{token}/events/{page.id}/cancel",
        data={"csrf_token": csrf_token(client, f"/u/{token}")},
    )
    rsvp(client, "vigil", bo)  # Bo takes the freed place
    rsvp(client, "vigil", ada)
    assert rsvps(page) == {ada["email"]: "waitlisted", bo["email"]: "going"}
    subjects = [m["Subject"] for m in mails(outbox, ada["email"])]
    assert subjects == [
        "You're going: Candlelight vigil",
        "You're on the waitlist: Candlelight vigil",
    ]


def test_raising_the_capacity_fills_the_new_places_in_waitlist_order(client):
    page = event_page(capacity=1)
    people = [person(n) for n in ("Ada", "Bo", "Cy", "Di")]
    for p in people:
        rsvp(client, "vigil", p)
    page.settings = {**page.settings, "capacity": 3}
    promoted = events.fill_free_places(db.session, page, utcnow())
    db.session.commit()
    assert [r.supporter.first_name for r in promoted] == ["Bo", "Cy"]
    assert list(rsvps(page).values()).count("going") == 3
    assert rsvps(page)[people[3]["email"]] == "waitlisted"
    assert events.fill_free_places(db.session, page, utcnow()) == []


def test_preferences_lists_only_upcoming_active_rsvps(app, client):
    supporter = SupporterFactory()
    now = utcnow()
    soon = event_page(slug="soon", starts_at=f"{NEXT_YEAR}-01-05T09:00", ends_at="")
    later = event_page(slug="later")
    past = event_page(slug="past", starts_at="2020-01-01T10:00", ends_at="2020-01-01T11:00")
    gone = event_page(slug="gone")
    for page, status in (
        (later, "going"),
        (soon, "waitlisted"),
        (past, "going"),
        (gone, "cancelled"),
    ):
        db.session.add(
            EventRsvp(
                page_id=page.id,
                supporter_id=supporter.id,
                status=status,
                created_at=now,
                updated_at=now,
            )
        )
    db.session.commit()
    listed = events.upcoming_rsvps(db.session, supporter, now)
    assert [(r.slug, r.status) for r in listed] == [("soon", "waitlisted"), ("later", "going")]


def test_rsvp_email_is_not_sent_once_the_rsvp_moved_on(app, outbox):
    page = event_page(capacity=5)
    supporter = SupporterFactory()
    now = utcnow()
    row = EventRsvp(
        page_id=page.id,
        supporter_id=supporter.id,
        status="cancelled",
        created_at=now,
        updated_at=now,
    )
    db.session.add(row)
    db.session.commit()
    identity = SenderIdentity.from_config(app.config)
    assert (
        events.send_rsvp_email(db.session, outbox, identity, row.id, "going", now) == "not-needed"
    )
    row.status = RsvpStatus.GOING
    db.session.commit()
    assert events.send_rsvp_email(db.session, outbox, identity, row.id, "going", now) == "sent"
    db.session.commit()
    assert (
        events.send_rsvp_email(db.session, outbox, identity, row.id, "going", now) == "already-sent"
    )
    [log] = db.session.scalars(select(EmailLog)).all()
    assert log.dedupe_key.startswith(f"event-rsvp:{row.id}:going:")


# --- Staff attendee list ---------------------------------------------------------------


def _filled_event(client):  # type: ignore[no-untyped-def]
    page = event_page(capacity=1)
    ada, bo = person("Ada"), person("Bo")
    rsvp(client, "vigil", ada)
    rsvp(client, "vigil", bo)
    return page, ada, bo


def test_staff_attendee_list_shows_going_and_waitlisted_and_downloads_csv(client):
    page, ada, bo = _filled_event(client)
    viewer = StaffFactory(role=Role.VIEWER.value)
    assert login(client, viewer.email).status_code == 302

    response = client.get(f"/staff/pages/{page.id}/attendees")
    assert response.status_code == 200
    text = page_text(response)
    assert ada["email"] in text and bo["email"] in text
    assert text.index(ada["email"]) < text.index(bo["email"])
    assert "1 going" in text and "1 on the waitlist" in text

    refused = client.get(f"/staff/pages/{page.id}/attendees?format=csv")
    assert refused.status_code == 422 and "Please say why" in page_text(refused)
    assert db.session.scalars(select(DisclosureEntry)).all() == []

    download = client.get(
        f"/staff/pages/{page.id}/attendees?format=csv&purpose=Name+badges+for+the+vigil"
    )
    assert download.status_code == 200
    assert download.mimetype == "text/csv"
    assert "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert [(r["email"], r["status"], r["first_name"]) for r in rows] == [
        (ada["email"], "going", "Ada"),
        (bo["email"], "waitlisted", "Bo"),
    ]
    [entry] = db.session.scalars(select(DisclosureEntry)).all()
    assert (entry.staff_user_id, entry.route, entry.record_count) == (viewer.id, "staff export", 2)
    assert entry.purpose == "Name badges for the vigil" and f"page {page.id}" in entry.what
    [audited] = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "privacy.export")
    ).all()
    assert audited.staff_user_id == viewer.id and audited.detail["rows"] == 2


def test_attendee_list_is_for_staff_only(client):
    page, ada, _ = _filled_event(client)
    for path in (
        f"/staff/pages/{page.id}/attendees",
        f"/staff/pages/{page.id}/attendees?format=csv",
    ):
        response = client.get(path)
        assert response.status_code == 302
        assert "/staff/login" in response.headers["Location"]
        assert ada["email"] not in response.get_data(as_text=True)


def test_attendee_list_is_only_for_event_pages(client):
    petition = ActionPageFactory(slug="petition")
    admin = StaffFactory(role=Role.ADMIN.value)
    login(client, admin.email)
    assert client.get(f"/staff/pages/{petition.id}/attendees").status_code == 404
    assert client.get("/staff/pages/999999/attendees").status_code == 404


def test_csv_cells_cannot_become_spreadsheet_formulas():
    now = utcnow()
    row = events.Attendee(1, '=HYPERLINK("x")', "-1", "a@example.org", "going", now, now)
    line = events.attendees_csv([row]).splitlines()[1]
    assert line.startswith("\"'=HYPERLINK") and ",'-1," in line


def test_times_are_formatted_in_the_event_zone_across_daylight_saving():
    summer = ActionPageFactory.build(
        kind="event", settings={**EVENT, "starts_at": "2026-07-04T18:30", "ends_at": ""}
    )
    detail = events.details(summer)
    assert events.format_moment(detail.starts) == "Saturday 4 July 2026, 6:30 pm EDT"
    assert detail.starts_utc() == datetime(2026, 7, 4, 22, 30)
    unknown = ActionPageFactory.build(kind="event", settings={**EVENT, "timezone": "Mars/Olympus"})
    assert events.details(unknown).zone.key == "UTC"
    assert events.details(unknown).over_by() == events.details(unknown).ends.astimezone(
        UTC
    ).replace(tzinfo=None)
    assert timedelta(0) < detail.over_by() - detail.starts_utc() <= timedelta(hours=1)
