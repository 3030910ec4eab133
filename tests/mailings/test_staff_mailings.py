"""/staff/mailings through the Flask test client: roles, CSRF, the composer, preview, test
sends, checks, schedule, Send (twice) and the progress JSON."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.mailings.models import Mailing, MailingStatus
from app.staff.models import AuditEntry, Role
from app.supporters.models import Segment
from app.timeutil import utcnow
from tests.factories import StaffFactory, SupporterFactory
from tests.mailings.helpers import deliveries, outbox_messages
from tests.staff.test_staff import any_csrf, login, signed_in

BODY = 'Hello {{ first_name | default("friend") }},\n\nPlease act today.'


@pytest.fixture(autouse=True)
def no_outside_links(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests never reach another host; tests/mailings/test_checks.py covers links.
    monkeypatch.setitem(app.config, "MAILING_CHECK_EXTERNAL_LINKS", False)


def compose_data(token: str, **overrides: str) -> dict[str, str]:
    data = {
        "csrf_token": token,
        "subject": "Save the river",
        "preheader": "One minute of your time",
        "from_name": "River Friends",
        "reply_to": "replies@example.org",
        "body_format": "markdown",
        "body_md": BODY,
        "segment_id": "",
        "throttle_per_hour": "",
        "subject_b": "",
        "ab_test_percent": "",
        "ab_metric": "opens",
        "ab_decide_after_minutes": "",
    }
    data.update(overrides)
    return data


def create(client: FlaskClient, **overrides: str) -> Mailing:
    token = any_csrf(client, "/staff/mailings/new")
    response = client.post("/staff/mailings/new", data=compose_data(token, **overrides))
    assert response.status_code == 303, response.get_data(as_text=True)
    mailing_id = int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    mailing = db.session.get(Mailing, mailing_id)
    assert mailing is not None
    return mailing


# --- roles and CSRF -------------------------------------------------------------------


def test_signed_out_staff_are_sent_to_login(client):
    response = client.get("/staff/mailings")
    assert response.status_code == 302 and "/staff/login" in response.headers["Location"]


def test_viewer_reads_but_cannot_compose_or_send(app, client):
    admin = StaffFactory(role=Role.ADMIN.value)
    SupporterFactory()
    login(client, admin.email)
    mailing = create(client)
    client.post("/staff/logout", data={"csrf_token": any_csrf(client, "/staff/mailings")})

    signed_in(client, Role.VIEWER)
    listing = client.get("/staff/mailings").get_data(as_text=True)
    assert "Save the river" in listing and "New mailing" not in listing
    page = client.get(f"/staff/mailings/{mailing.id}").get_data(as_text=True)
    assert "Send now" not in page and 'name="subject"' not in page
    assert client.get(f"/staff/mailings/{mailing.id}/preview").status_code == 200
    token = any_csrf(client, f"/staff/mailings/{mailing.id}/preview")
    for path in ("/new", f"/{mailing.id}", f"/{mailing.id}/send", f"/{mailing.id}/test"):
        response = client.post("/staff/mailings" + path, data=compose_data(token))
        assert response.status_code == 403, path
    assert client.get("/staff/mailings/new").status_code == 403
    assert deliveries(mailing.id) == [] and outbox_messages(app) == []


def test_a_post_without_a_csrf_token_is_refused(client):
    signed_in(client, Role.ORGANIZER)
    response = client.post("/staff/mailings/new", data=compose_data(""))
    assert response.status_code == 400
    assert db.session.scalar(select(func.count()).select_from(Mailing)) == 0


# --- compose --------------------------------------------------------------------------


def test_organizer_composes_a_mailing_and_it_is_audited(client):
    user = signed_in(client, Role.ORGANIZER)
    mailing = create(client)

    assert (mailing.subject, mailing.from_name, mailing.reply_to) == (
        "Save the river",
        "River Friends",
        "replies@example.org",
    )
    assert mailing.status == MailingStatus.DRAFT and mailing.created_by_id == user.id
    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "mailing.create"))
    assert entry.staff_user_id == user.id and entry.object_id == str(mailing.id)

    token = any_csrf(client, f"/staff/mailings/{mailing.id}")
    response = client.post(
        f"/staff/mailings/{mailing.id}", data=compose_data(token, subject="Save the lake")
    )
    assert response.status_code == 303
    db.session.expire_all()
    assert db.session.get(Mailing, mailing.id).subject == "Save the lake"
    [update] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "mailing.update"))
    assert update.detail == {"fields": ["subject"]}  # names only, never the content


def test_validation_messages_sit_by_their_fields_and_keep_what_was_typed(client):
    signed_in(client, Role.ADMIN)
    token = any_csrf(client, "/staff/mailings/new")
    response = client.post(
        "/staff/mailings/new",
        data=compose_data(
            token,
            subject="",
            reply_to="not an address",
            throttle_per_hour="0",
            subject_b="Or save the lake",
            ab_test_percent="80",
            ab_decide_after_minutes="five",
            body_md="My *careful* words",
        ),
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Please write a subject line." in html
    assert "That reply-to address doesn" in html
    assert "messages per hour of 1 or more" in html
    assert "between 5 and 50" in html
    assert "Please enter a whole number" in html
    assert "My *careful* words" in html and 'value="Or save the lake"' in html
    assert db.session.scalar(select(func.count()).select_from(Mailing)) == 0


def test_a_saved_segment_is_chosen_and_its_count_shown(client):
    segment = Segment(name="Riverside", definition={})
    db.session.add(segment)
    db.session.commit()
    for _ in range(3):
        SupporterFactory()
    signed_in(client, Role.ADMIN)

    new_page = client.get("/staff/mailings/new").get_data(as_text=True)
    assert "Riverside" in new_page and "3 supporters can be mailed" in new_page
    mailing = create(client, segment_id=str(segment.id))
    assert mailing.segment_id == segment.id
    page = client.get(f"/staff/mailings/{mailing.id}").get_data(as_text=True)
    assert "To: Riverside" in page


# --- preview and test send ------------------------------------------------------------


def test_preview_shows_the_supporter_by_email_and_serves_html_under_a_strict_csp(client):
    SupporterFactory(first_name="Zed")
    ada = SupporterFactory(email="ada@example.org", first_name="Ada")
    signed_in(client, Role.VIEWER)
    admin = StaffFactory(role=Role.ADMIN.value)
    with app_client_as(client, admin):
        mailing = create(client)

    first = client.get(f"/staff/mailings/{mailing.id}/preview").get_data(as_text=True)
    assert "Hello Zed" in first  # the first subscriber by default
    token = any_csrf(client, f"/staff/mailings/{mailing.id}/preview")
    found = client.post(
        f"/staff/mailings/{mailing.id}/preview",
        data={"csrf_token": token, "email": "ADA@example.org"},
    )
    assert found.status_code == 303 and f"supporter={ada.id}" in found.headers["Location"]
    assert "ada@" not in found.headers["Location"]  # no addresses in URLs
    page = client.get(found.headers["Location"]).get_data(as_text=True)
    assert "Hello Ada" in page and "Save the river" in page

    html = client.get(f"/staff/mailings/{mailing.id}/preview.html?supporter={ada.id}")
    csp = html.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "frame-ancestors 'self'" in csp
    assert "script-src" not in csp
    assert "Hello Ada" in html.get_data(as_text=True)

    missing = client.post(
        f"/staff/mailings/{mailing.id}/preview",
        data={"csrf_token": token, "email": "nobody@example.org"},
    )
    assert missing.status_code == 422 and "No supporter has that email" in missing.get_data(
        as_text=True
    )


class app_client_as:
    """Sign in as another staff member for a block, then back as the first."""

    def __init__(self, client: FlaskClient, user) -> None:  # type: ignore[no-untyped-def]
        self.client, self.user = client, user

    def __enter__(self) -> None:
        self.cookies = {c.key: c.value for c in self.client._cookies.values()}
        self.client.delete_cookie("session")
        login(self.client, self.user.email)

    def __exit__(self, *exc: object) -> None:
        self.client.delete_cookie("session")
        for key, value in self.cookies.items():
            self.client.set_cookie(key, value)


def test_test_send_reaches_only_staff_with_the_unsubscribe_link_and_address(app, client):
    supporter = SupporterFactory(email="member@example.org")
    colleague = StaffFactory(email="colleague@example.org", role=Role.VIEWER.value)
    me = signed_in(client, Role.ORGANIZER)
    mailing = create(client)
    path = f"/staff/mailings/{mailing.id}/test"

    token = any_csrf(client, f"/staff/mailings/{mailing.id}")
    sneaky = client.post(path, data={"csrf_token": token, "addresses": [supporter.email]})
    assert sneaky.status_code == 422
    assert "only to staff" in sneaky.get_data(as_text=True)
    assert outbox_messages(app) == []

    sent = client.post(path, data={"csrf_token": token, "addresses": [me.email, colleague.email]})
    assert sent.status_code == 303
    messages = outbox_messages(app)
    assert sorted(str(m["To"]) for m in messages) == sorted([me.email, colleague.email])
    for message in messages:
        assert str(message["Subject"]).startswith("[Test] Save the river")
        text = message.get_body(("plain",)).get_content()
        assert app.config["ORG_POSTAL_ADDRESS"] in text
        assert re.search(r"/u/[\w.-]+", text), "no unsubscribe link in the test"
        assert message["List-Unsubscribe"] and message["List-Unsubscribe-Post"]
    assert deliveries(mailing.id) == []  # a test is not a send
    db.session.expire_all()
    assert db.session.get(Mailing, mailing.id).test_sent_at is not None


# --- checks ---------------------------------------------------------------------------


def test_checks_page_lists_a_dead_action_page_missing_alt_and_a_huge_email(client):
    SupporterFactory()
    signed_in(client, Role.ADMIN)
    huge = "".join(f"<p>Paragraph {i} " + "words " * 40 + "</p>" for i in range(500))
    body = (
        '<p><a href="http://localhost/a/no-such-page">Sign it</a></p>'
        '<p><img src="http://localhost/static/x.png"></p>' + huge
    )
    mailing = create(client, body_md=body, body_format="html", preheader="")
    html = client.get(f"/staff/mailings/{mailing.id}/checks").get_data(as_text=True)
    assert "does not exist" in html
    assert "no alt text" in html
    assert "Gmail cuts off" in html
    assert "There is no preheader" in html


# --- schedule and send ----------------------------------------------------------------


def test_a_schedule_in_the_past_is_refused_and_a_future_one_unscheduled(client):
    SupporterFactory()
    signed_in(client, Role.ADMIN)
    mailing = create(client)
    token = any_csrf(client, f"/staff/mailings/{mailing.id}")
    past = (utcnow() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    refused = client.post(
        f"/staff/mailings/{mailing.id}/schedule", data={"csrf_token": token, "send_at": past}
    )
    assert refused.status_code == 422
    assert "in the future" in refused.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Mailing, mailing.id).status == MailingStatus.DRAFT

    future = (utcnow() + timedelta(days=1)).replace(second=0, microsecond=0)
    client.post(
        f"/staff/mailings/{mailing.id}/schedule",
        data={"csrf_token": token, "send_at": future.strftime("%Y-%m-%dT%H:%M")},
    )
    db.session.expire_all()
    scheduled = db.session.get(Mailing, mailing.id)
    assert scheduled.status == MailingStatus.SCHEDULED and scheduled.send_at == future
    page = client.get(f"/staff/mailings/{mailing.id}").get_data(as_text=True)
    assert f"{future:%Y-%m-%d %H:%M} UTC" in page

    client.post(f"/staff/mailings/{mailing.id}/unschedule", data={"csrf_token": token})
    db.session.expire_all()
    assert db.session.get(Mailing, mailing.id).status == MailingStatus.DRAFT


def test_send_confirms_the_count_then_sends_once_even_when_clicked_twice(app, client):
    people = [SupporterFactory() for _ in range(3)]
    signed_in(client, Role.ORGANIZER)
    mailing = create(client)

    confirm = client.get(f"/staff/mailings/{mailing.id}/send").get_data(as_text=True)
    assert "Send to 3 now" in confirm
    token = any_csrf(client, f"/staff/mailings/{mailing.id}/send")
    first = client.post(f"/staff/mailings/{mailing.id}/send", data={"csrf_token": token})
    second = client.post(f"/staff/mailings/{mailing.id}/send", data={"csrf_token": token})
    assert first.status_code == 303 and second.status_code == 303

    sent_to = sorted(str(m["To"]) for m in outbox_messages(app))
    assert sent_to == sorted(p.email for p in people)  # one each
    assert len(deliveries(mailing.id)) == 3
    progress = client.get(f"/staff/mailings/{mailing.id}/progress").get_json()
    assert progress["status"] == "sent" and progress["sent"] == 3
    assert progress["percent"] == 100 and progress["active"] is False
    actions = list(db.session.scalars(select(AuditEntry.action)))
    assert actions.count("mailing.send") == 1


def test_send_is_refused_while_a_check_fails_and_needs_the_tick_for_warnings(app, client):
    SupporterFactory()
    signed_in(client, Role.ADMIN)
    broken = create(client, body_md="[Sign](http://localhost/a/gone)")
    page = client.get(f"/staff/mailings/{broken.id}/send").get_data(as_text=True)
    assert "cannot be sent yet" in page and "Send to" not in page
    token = any_csrf(client, f"/staff/mailings/{broken.id}/checks")
    refused = client.post(f"/staff/mailings/{broken.id}/send", data={"csrf_token": token})
    assert refused.status_code == 422 and deliveries(broken.id) == []

    warned = create(client, subject="Pictures", body_md="![](/static/photo.png)\n\nHello")
    path = f"/staff/mailings/{warned.id}/send"
    assert "I have read the warnings" in client.get(path).get_data(as_text=True)
    untick = client.post(path, data={"csrf_token": token})
    assert untick.status_code == 422 and "Please tick" in untick.get_data(as_text=True)
    assert deliveries(warned.id) == []
    ticked = client.post(path, data={"csrf_token": token, "warnings_read": "y"})
    assert ticked.status_code == 303 and len(deliveries(warned.id)) == 1


def _send_without_running_tasks(app: Flask, client: FlaskClient, mailing: Mailing) -> str:
    """Press Send with the worker "down", so staff can act before anything goes out."""
    token = any_csrf(client, f"/staff/mailings/{mailing.id}/send")
    celery = app.extensions["celery"]
    celery.conf.task_always_eager = False
    try:
        response = client.post(f"/staff/mailings/{mailing.id}/send", data={"csrf_token": token})
    finally:
        celery.conf.task_always_eager = True
    assert response.status_code == 303
    return token


def test_pause_shows_partial_progress_then_resume_sends_the_rest(app, client):
    from app.mailings.tasks import send_mailing

    people = [SupporterFactory() for _ in range(3)]
    signed_in(client, Role.ADMIN)
    mailing = create(client)
    token = _send_without_running_tasks(app, client, mailing)
    page = client.get(f"/staff/mailings/{mailing.id}").get_data(as_text=True)
    assert "<progress" in page and ">Pause<" in page and "Refresh" in page
    assert "mailing_progress.js" in page
    assert client.get(f"/staff/mailings/{mailing.id}/progress").get_json()["materialising"]

    client.post(f"/staff/mailings/{mailing.id}/pause", data={"csrf_token": token})
    send_mailing.apply(args=[mailing.id])  # the worker comes back: recipients, no sends
    snapshot = client.get(f"/staff/mailings/{mailing.id}/progress").get_json()
    assert snapshot["status"] == "paused" and snapshot["active"] is False
    assert (snapshot["recipients"], snapshot["queued"], snapshot["sent"]) == (3, 3, 0)
    assert snapshot["percent"] == 0 and outbox_messages(app) == []
    assert ">Resume<" in client.get(f"/staff/mailings/{mailing.id}").get_data(as_text=True)

    client.post(f"/staff/mailings/{mailing.id}/resume", data={"csrf_token": token})
    sent_to = sorted(str(m["To"]) for m in outbox_messages(app))
    assert sent_to == sorted(p.email for p in people)
    done = client.get(f"/staff/mailings/{mailing.id}/progress").get_json()
    assert (done["status"], done["sent"], done["percent"]) == ("sent", 3, 100)


def test_cancel_asks_first_then_stops_everything_still_waiting(app, client):
    from app.mailings.tasks import send_mailing

    for _ in range(2):
        SupporterFactory()
    signed_in(client, Role.ORGANIZER)
    mailing = create(client)
    token = _send_without_running_tasks(app, client, mailing)
    client.post(f"/staff/mailings/{mailing.id}/pause", data={"csrf_token": token})
    send_mailing.apply(args=[mailing.id])

    confirm = client.get(f"/staff/mailings/{mailing.id}/cancel").get_data(as_text=True)
    assert "Yes, cancel the rest" in confirm and "The 2 still waiting" in confirm
    db.session.expire_all()
    assert (
        db.session.get(Mailing, mailing.id).status == MailingStatus.PAUSED
    )  # asking changes nothing
    response = client.post(f"/staff/mailings/{mailing.id}/cancel", data={"csrf_token": token})
    assert "2 messages will not be sent" in client.get(response.headers["Location"]).get_data(
        as_text=True
    )
    db.session.expire_all()
    assert db.session.get(Mailing, mailing.id).status == MailingStatus.CANCELLED
    assert outbox_messages(app) == []
    snapshot = client.get(f"/staff/mailings/{mailing.id}/progress").get_json()
    assert (snapshot["cancelled"], snapshot["sent"]) == (2, 0)
