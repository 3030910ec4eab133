"""The staff area through the Flask test client: sign-in, roles, dashboard, supporters, outbox."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db, limiter
from app.integrations.email.outbox import OutboxProvider
from app.staff.models import AuditEntry, Role, StaffUser
from app.supporters.models import ConsentEvent, Supporter, SupporterStatus
from app.timeutil import utcnow
from tests.conftest import csrf_token
from tests.factories import STAFF_PASSWORD, StaffFactory, SupporterFactory

STAFF_ROUTES = (
    "/staff/",
    "/staff/supporters",
    "/staff/supporters/1",
    "/staff/outbox",
    "/staff/outbox/20240101T000000-abc.eml",
    "/staff/privacy",
)

_ANY_CSRF = re.compile(
    r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"'
)


def any_csrf(client: FlaskClient, path: str) -> str:
    """The CSRF token from any form on a page (the sign-out form writes its attributes in
    a different order from WTForms)."""
    html = client.get(path).get_data(as_text=True)
    match = _ANY_CSRF.search(html)
    assert match, f"no csrf_token on {path}"
    return match.group(1) or match.group(2)


def login(client: FlaskClient, email: str, password: str = STAFF_PASSWORD, next_: str = ""):
    path = "/staff/login" + (f"?next={next_}" if next_ else "")
    token = csrf_token(client, path)
    return client.post(path, data={"email": email, "password": password, "csrf_token": token})


@pytest.fixture
def admin(app: Flask) -> StaffUser:
    return StaffFactory(email="admin@example.org", role=Role.ADMIN.value)


def signed_in(client: FlaskClient, role: Role) -> StaffUser:
    user = StaffFactory(role=role.value)
    response = login(client, user.email)
    assert response.status_code == 302, response.get_data(as_text=True)
    return user


def signup(client: FlaskClient, email: str, first_name: str = "", last_name: str = ""):
    """Join the list through the public form, as a supporter would."""
    response = client.post(
        "/signup",
        data={
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
            "postal_code": "10001",
            "country": "US",
            "birth_year": "1980",
            "csrf_token": csrf_token(client),
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Thank you" in response.get_data(as_text=True)
    return db.session.scalar(select(Supporter).where(Supporter.email == email))


# --- signing in and out -----------------------------------------------------------------


def test_login_with_the_right_password_reaches_the_dashboard(client, admin):
    response = login(client, "Admin@Example.org")  # addresses are case-insensitive
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/"
    page = client.get("/staff/")
    assert page.status_code == 200
    assert "<h1>Dashboard</h1>" in page.get_data(as_text=True)


def test_wrong_password_is_refused_clearly_keeping_the_email_but_not_the_password(client, admin):
    response = login(client, admin.email, password="hunter2-wrong-password")
    html = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "That email address and password do not match an active staff account." in html
    assert 'value="admin@example.org"' in html
    assert "hunter2-wrong-password" not in html
    # Still signed out.
    assert client.get("/staff/").status_code == 302


def test_unknown_email_gets_the_same_message_as_a_wrong_password(client, admin):
    response = login(client, "nobody@example.org")
    assert response.status_code == 401
    assert "do not match an active staff account" in response.get_data(as_text=True)


def test_empty_login_form_says_what_is_missing(client, admin):
    response = client.post(
        "/staff/login",
        data={"email": "", "password": "", "csrf_token": csrf_token(client, "/staff/login")},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Please enter your email address." in html
    assert "Please enter your password." in html


def test_inactive_account_is_refused(client):
    user = StaffFactory(active=False)
    response = login(client, user.email)
    assert response.status_code == 401
    assert "do not match an active staff account" in response.get_data(as_text=True)
    assert client.get("/staff/").status_code == 302


def test_deactivating_an_account_ends_its_open_session(client):
    user = signed_in(client, Role.ADMIN)
    assert client.get("/staff/").status_code == 200
    user.active = False
    db.session.commit()
    response = client.get("/staff/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/staff/login")


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/staff",
        "/\\evil.example",
        "http:/evil.example",
        "/staff-not-really@evil.example",  # a path on our own host: harmless, but no prefix trick
        "javascript:alert(1)",
    ],
)
def test_next_parameter_cannot_redirect_off_site(client, admin, target):
    from urllib.parse import quote, urlsplit

    response = login(client, admin.email, next_=quote(target, safe=""))
    assert response.status_code == 302
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert not parts.scheme and not parts.netloc, location
    assert location.startswith("/staff")
    assert not location.startswith("//")


def test_next_parameter_returns_to_the_staff_page_asked_for(client, admin):
    response = client.get("/staff/supporters?q=ada")
    assert response.status_code == 302
    login_url = response.headers["Location"]
    assert login_url.startswith("/staff/login?next=")
    token = csrf_token(client, login_url)
    response = client.post(
        login_url, data={"email": admin.email, "password": STAFF_PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/supporters?q=ada"


def test_signed_in_staff_visiting_login_go_to_the_dashboard(client):
    signed_in(client, Role.VIEWER)
    response = client.get("/staff/login")
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/"


def test_logout_is_a_post_with_csrf(client):
    signed_in(client, Role.VIEWER)
    assert client.get("/staff/logout").status_code == 405
    assert client.post("/staff/logout").status_code == 400  # no CSRF token
    assert client.get("/staff/").status_code == 200  # still signed in

    token = any_csrf(client, "/staff/")
    response = client.post("/staff/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/login"
    assert "You are signed out." in client.get("/staff/login").get_data(as_text=True)
    assert client.get("/staff/").status_code == 302


def test_login_is_audited(client, admin):
    login(client, admin.email, password="not the password")
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    login(client, admin.email)
    entries = db.session.scalars(select(AuditEntry)).all()
    assert [(e.action, e.staff_user_id, e.object_id) for e in entries] == [
        ("staff.login", admin.id, str(admin.id))
    ]
    db.session.refresh(admin)
    assert admin.last_login_at is not None


def test_login_form_has_no_csrf_hole(client, admin):
    response = client.post("/staff/login", data={"email": admin.email, "password": STAFF_PASSWORD})
    assert response.status_code == 400
    assert client.get("/staff/").status_code == 302


@pytest.fixture
def rate_limited_app(app, make_app):
    """Build an app with rate limits on; afterwards put the shared limiter back as it was
    (Flask-Limiter keeps `enabled` and its counters on the one module-level Limiter) and
    close the app's database connections."""
    was_enabled = limiter.enabled
    built: list[Flask] = []

    def build(limit: str) -> Flask:
        limited = make_app(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT=limit)
        built.append(limited)
        limiter.reset()
        return limited

    yield build
    limiter.reset()
    limiter.enabled = was_enabled
    for limited in built:
        with limited.app_context():
            db.session.remove()
            db.engine.dispose()


def test_login_rate_limit_answers_with_the_friendly_429(rate_limited_app):
    limited = rate_limited_app("2 per minute")
    StaffFactory(email="slow@example.org")
    client = limited.test_client()
    token = csrf_token(client, "/staff/login")
    data = {"email": "slow@example.org", "password": "wrong password!", "csrf_token": token}
    assert client.post("/staff/login", data=data).status_code == 401
    assert client.post("/staff/login", data=data).status_code == 401
    response = client.post("/staff/login", data=data)
    html = response.get_data(as_text=True)
    assert response.status_code == 429
    assert "Please slow down" in html
    assert "Traceback" not in html
    assert "Retry-After" in response.headers
    # Reading the form is not limited; only attempts are.
    assert client.get("/staff/login").status_code == 200


def test_an_app_with_rate_limits_off_stays_unlimited_after_another_app_turned_them_on(
    client, rate_limited_app
):
    rate_limited_app("1 per minute")
    StaffFactory(email="fast@example.org")
    data = {"email": "fast@example.org", "password": "wrong password!"}
    for _ in range(3):
        data["csrf_token"] = csrf_token(client, "/staff/login")
        assert client.post("/staff/login", data=data).status_code == 401


# --- who may see what -------------------------------------------------------------------


@pytest.mark.parametrize("path", STAFF_ROUTES)
def test_every_staff_page_sends_anonymous_visitors_to_sign_in(client, path):
    SupporterFactory()
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/staff/login?next=")


def test_anonymous_post_to_a_supporter_changes_nothing(client):
    person = SupporterFactory()
    token = csrf_token(client, "/staff/login")
    response = client.post(f"/staff/supporters/{person.id}", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/staff/login")
    db.session.refresh(person)
    assert person.status == SupporterStatus.SUBSCRIBED


@pytest.mark.parametrize("role", [Role.VIEWER, Role.FUNDRAISER])
def test_roles_without_edit_rights_cannot_unsubscribe_a_supporter(client, role):
    person = SupporterFactory()
    signed_in(client, role)
    page = client.get(f"/staff/supporters/{person.id}")
    assert page.status_code == 200
    assert "Unsubscribe at their request" not in page.get_data(as_text=True)

    token = any_csrf(client, f"/staff/supporters/{person.id}")
    response = client.post(f"/staff/supporters/{person.id}", data={"csrf_token": token})
    assert response.status_code == 403
    db.session.refresh(person)
    assert person.status == SupporterStatus.SUBSCRIBED
    assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 0


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.ADMIN, 200), (Role.ORGANIZER, 403), (Role.FUNDRAISER, 403), (Role.VIEWER, 403)],
)
def test_only_admins_see_the_privacy_and_audit_page(client, role, status):
    signed_in(client, role)
    assert client.get("/staff/privacy").status_code == status
    nav = client.get("/staff/").get_data(as_text=True)
    assert ("Privacy &amp; audit" in nav) is (role == Role.ADMIN)


def test_missing_supporter_is_404(client):
    signed_in(client, Role.VIEWER)
    assert client.get("/staff/supporters/999999").status_code == 404


# --- dashboard --------------------------------------------------------------------------


def _stat(html: str, label: str) -> int:
    match = re.search(r'<span class="n">([\d,]+)</span> ' + re.escape(label) + "</li>", html)
    assert match, f"no {label!r} count on the dashboard"
    return int(match.group(1).replace(",", ""))


def test_dashboard_counts_match_the_data(client):
    now = utcnow()
    SupporterFactory.create_batch(3)
    SupporterFactory.create_batch(2, snoozed_until=now + timedelta(days=30))
    SupporterFactory(snoozed_until=now - timedelta(days=1))  # a break that ended: subscribed
    SupporterFactory.create_batch(4, status=SupporterStatus.UNSUBSCRIBED.value)
    SupporterFactory(status=SupporterStatus.BOUNCED.value)
    SupporterFactory(status=SupporterStatus.COMPLAINED.value)
    SupporterFactory(status=SupporterStatus.ERASED.value, created_at=now - timedelta(days=10))
    SupporterFactory(created_at=now - timedelta(days=10))  # subscribed, but not new this week
    signed_in(client, Role.VIEWER)

    html = client.get("/staff/").get_data(as_text=True)
    assert _stat(html, "supporters") == 13  # everyone but the erased record
    assert _stat(html, "receiving email") == 5
    assert _stat(html, "taking a break") == 2
    assert _stat(html, "unsubscribed") == 4
    assert _stat(html, "bounced or complained") == 2
    assert _stat(html, "new in 7 days") == 12


def test_dashboard_chart_shows_signups_per_day(client):
    now = utcnow()
    SupporterFactory.create_batch(3, created_at=now)
    SupporterFactory.create_batch(2, created_at=now - timedelta(days=2))
    SupporterFactory(created_at=now - timedelta(days=45))  # outside the 30 days
    signed_in(client, Role.VIEWER)

    html = client.get("/staff/").get_data(as_text=True)
    svg = re.search(r'<svg class="chart".*?</svg>', html, re.S)
    assert svg, "no chart"
    chart = svg.group(0)
    assert 'role="img"' in chart
    assert "Total 5 over 30 days; busiest day 3." in chart
    bars = re.findall(r"<title>(\d{4}-\d{2}-\d{2}): (\d+)</title>", chart)
    assert len(bars) == 30
    per_day = dict(bars)
    assert per_day[now.strftime("%Y-%m-%d")] == "3"
    assert per_day[(now - timedelta(days=2)).strftime("%Y-%m-%d")] == "2"
    assert sum(int(n) for _, n in bars) == 5
    # The same numbers as a table, for people who cannot see the chart.
    assert f"<td>{now.strftime('%Y-%m-%d')}</td><td>3</td>" in html


def test_dashboard_with_no_supporters_still_renders(client):
    signed_in(client, Role.VIEWER)
    response = client.get("/staff/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert _stat(html, "supporters") == 0
    assert "Total 0 over 30 days" in html


# --- supporters -------------------------------------------------------------------------


def _listed_emails(html: str) -> list[str]:
    return re.findall(r'<a href="/staff/supporters/\d+">([^<]+)</a>', html)


def test_supporter_search_by_email_and_by_name(client):
    SupporterFactory(email="ada@example.org", first_name="Ada", last_name="Lovelace")
    SupporterFactory(email="grace@example.org", first_name="Grace", last_name="Hopper")
    SupporterFactory(email="alan@example.net", first_name="Alan", last_name="Turing")
    signed_in(client, Role.VIEWER)

    def found(q: str) -> list[str]:
        response = client.get("/staff/supporters", query_string={"q": q})
        assert response.status_code == 200
        return sorted(_listed_emails(response.get_data(as_text=True)))

    assert found("") == ["ada@example.org", "alan@example.net", "grace@example.org"]
    assert found("grace@example.org") == ["grace@example.org"]
    assert found("example.net") == ["alan@example.net"]
    assert found("LOVELACE") == ["ada@example.org"]
    assert found("hopper grace") == ["grace@example.org"]
    assert found("ada turing") == []
    assert found("nobody") == []
    assert "No supporters match." in client.get("/staff/supporters?q=nobody").get_data(as_text=True)


def test_supporter_search_treats_wildcards_as_ordinary_characters(client):
    SupporterFactory(email="jane_doe@example.org")
    SupporterFactory(email="janexdoe@example.org")
    SupporterFactory(email="janedoe@example.org")
    signed_in(client, Role.VIEWER)

    def found(q: str) -> list[str]:
        html = client.get("/staff/supporters", query_string={"q": q}).get_data(as_text=True)
        return sorted(_listed_emails(html))

    # Staff paste the exact address from a supporter's email: it must find that person.
    assert found("jane_doe@example.org") == ["jane_doe@example.org"]
    assert found("100%") == []
    assert found("%") == []


def test_erased_supporters_are_not_listed(client):
    SupporterFactory(email="kept@example.org")
    SupporterFactory(email="gone@example.org", status=SupporterStatus.ERASED.value)
    signed_in(client, Role.VIEWER)
    html = client.get("/staff/supporters").get_data(as_text=True)
    assert _listed_emails(html) == ["kept@example.org"]


def test_supporter_list_pages_by_fifty(client):
    people = SupporterFactory.create_batch(55)
    signed_in(client, Role.VIEWER)

    first = client.get("/staff/supporters").get_data(as_text=True)
    assert "55 found" in first
    assert len(_listed_emails(first)) == 50
    assert "Page 1 of 2" in first
    assert 'rel="next"' in first and 'rel="prev"' not in first
    assert _listed_emails(first)[0] == people[-1].email  # newest first

    second = client.get("/staff/supporters?page=2").get_data(as_text=True)
    assert "Page 2 of 2" in second
    assert 'rel="prev"' in second and 'rel="next"' not in second
    assert sorted(_listed_emails(second)) == sorted(p.email for p in people[:5])
    assert set(_listed_emails(first)).isdisjoint(_listed_emails(second))

    # Nonsense page numbers fall back to the first page rather than erroring.
    for junk in ("0", "-1", "abc", "99999999999"):
        response = client.get(f"/staff/supporters?page={junk}")
        assert response.status_code == 200
        assert "Page 1 of 2" in response.get_data(as_text=True)


def test_pagination_keeps_the_search(client):
    SupporterFactory.create_batch(52, last_name="Smith")
    SupporterFactory.create_batch(3, last_name="Jones")
    signed_in(client, Role.VIEWER)
    html = client.get("/staff/supporters?q=smith").get_data(as_text=True)
    assert "52 found" in html
    assert 'href="/staff/supporters?q=smith&amp;page=2"' in html


def test_supporter_page_shows_consent_history(client):
    person = signup(client, "ada@example.org", "Ada", "Lovelace")
    signed_in(client, Role.VIEWER)
    response = client.get(f"/staff/supporters/{person.id}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<h1>Ada Lovelace</h1>" in html
    assert "ada@example.org" in html
    assert "Consent history" in html
    event = db.session.scalars(select(ConsentEvent)).one()
    assert f"<td>{event.kind}</td><td>signup form</td><td>{event.policy_version}</td>" in html
    assert "Sign me up for email from" in html  # the words the person agreed to


def test_staff_unsubscribe_writes_the_ledger_and_the_audit_log(client):
    person = signup(client, "ada@example.org", "Ada", "Lovelace")
    organizer = signed_in(client, Role.ORGANIZER)
    page = client.get(f"/staff/supporters/{person.id}").get_data(as_text=True)
    assert "Unsubscribe at their request" in page

    token = any_csrf(client, f"/staff/supporters/{person.id}")
    response = client.post(f"/staff/supporters/{person.id}", data={"csrf_token": token})
    assert response.status_code == 303
    after = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Unsubscribed. They will receive no more email." in after
    assert '<span class="badge">unsubscribed</span>' in after
    assert "Unsubscribe at their request" not in after

    db.session.refresh(person)
    assert person.status == SupporterStatus.UNSUBSCRIBED
    kinds = [(e.kind, e.source) for e in person.consent_events]
    assert kinds == [
        ("subscribe", "signup form"),
        ("unsubscribe", "staff, on the supporter's request"),
    ]
    audit = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "supporter.unsubscribe")
    ).one()
    assert audit.staff_user_id == organizer.id
    assert (audit.object_type, audit.object_id) == ("supporter", str(person.id))

    # A second press changes nothing and writes nothing more.
    client.post(f"/staff/supporters/{person.id}", data={"csrf_token": token})
    assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 2
    assert (
        db.session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "supporter.unsubscribe")
        )
        == 1
    )


def test_admin_sees_who_did_what_in_the_audit_log(client, admin):
    person = SupporterFactory()
    login(client, admin.email)
    token = any_csrf(client, f"/staff/supporters/{person.id}")
    client.post(f"/staff/supporters/{person.id}", data={"csrf_token": token})
    html = client.get("/staff/privacy").get_data(as_text=True)
    assert "supporter.unsubscribe" in html
    assert "staff.login" in html
    assert f"supporter {person.id}" in html
    assert "admin@example.org" in html


# --- outbox -----------------------------------------------------------------------------


def test_outbox_lists_the_welcome_email_and_shows_its_unsubscribe_headers(client, outbox):
    signup(client, "ada@example.org", "Ada")
    signed_in(client, Role.VIEWER)
    [entry] = outbox.entries()

    listing = client.get("/staff/outbox").get_data(as_text=True)
    assert "ada@example.org" in listing
    assert "Welcome to" in listing
    assert f'href="/staff/outbox/{entry.name}"' in listing

    response = client.get(f"/staff/outbox/{entry.name}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<th scope="row">List-Unsubscribe</th><td>&lt;http://localhost/u/' in html
    assert "/one-click&gt;" in html
    assert '<th scope="row">List-Unsubscribe-Post</th><td>List-Unsubscribe=One-Click</td>' in html
    assert "Dear Ada," in html


def test_empty_outbox_says_so(client):
    signed_in(client, Role.VIEWER)
    assert "The outbox is empty." in client.get("/staff/outbox").get_data(as_text=True)


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fsecret_key",
        "..%2Fsecret.eml",
        "%2E%2E%2Fsecret.eml",
        "..%5Csecret.eml",
        "secret_key",
        "..",
        "nothing-here.eml",
        "x%00.eml",
    ],
)
def test_outbox_refuses_names_outside_the_outbox(client, outbox, app, name):
    # Something that must never be served, just outside the outbox directory.
    outside = Path(app.config["OUTBOX_DIR"]).parent / "secret.eml"
    outside.write_text("Subject: secret\n\nsecret_key=do-not-show\n")
    try:
        signed_in(client, Role.ADMIN)
        response = client.get(f"/staff/outbox/{name}")
        assert response.status_code == 404
        assert "do-not-show" not in response.get_data(as_text=True)
    finally:
        outside.unlink()


def test_what_supporters_typed_is_shown_to_staff_as_text_not_markup(client):
    name = '<img src=x onerror="alert(1)">'
    signup(client, "mallory@example.org", first_name=name)
    signed_in(client, Role.VIEWER)
    person = db.session.scalar(select(Supporter).where(Supporter.email == "mallory@example.org"))
    [entry] = OutboxProvider(client.application.config["OUTBOX_DIR"]).entries()
    for path in (
        "/staff/supporters",
        f"/staff/supporters/{person.id}",
        f"/staff/outbox/{entry.name}",
    ):
        html = client.get(path).get_data(as_text=True)
        assert name not in html, path
        assert "&lt;img src=x" in html, path
