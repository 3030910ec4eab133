"""Public pages in a real browser, as a person uses them: on a phone and on a desktop."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.integrations.email.outbox import OutboxProvider
from app.supporters.models import ConsentEvent, Supporter, SupporterStatus
from app.timeutil import utcnow

pytestmark = pytest.mark.browser
# Skipped, not failed, where Playwright is not installed (Chromium is checked in conftest).
expect = pytest.importorskip("playwright.sync_api").expect

HOME_TAB_ORDER = [
    ("a", "", "Skip to content"),
    ("a", "", "Groundswell Demo Campaign"),
    ("input", "email", ""),
    ("input", "first_name", ""),
    ("input", "last_name", ""),
    ("input", "postal_code", ""),
    ("select", "country", None),
    ("input", "birth_year", ""),
    ("a", "", "privacy policy"),
    ("button", "", "Sign up"),
]


def fresh() -> None:
    """End the test's own transaction, so the next query sees what the server wrote."""
    db.session.rollback()


def supporter_count() -> int:
    fresh()
    return db.session.scalar(select(func.count()).select_from(Supporter)) or 0


def type_in(tab, label: str, text: str) -> None:
    """Focus a field by its label and type into it key by key."""
    tab.page.get_by_label(label, exact=True).click()
    tab.page.keyboard.type(text)


def sign_up(tab, email: str, first_name: str = "Ada", birth_year: str = "1980") -> None:
    tab.goto("/")
    type_in(tab, "Email address", email)
    type_in(tab, "First name", first_name)
    type_in(tab, "Year you were born", birth_year)
    tab.page.get_by_role("button", name="Sign up").click()


def welcome_email_links(app, address: str) -> tuple[str, str]:
    """The preferences URL in the body and the one-click URL in the header of the welcome."""
    outbox = OutboxProvider(app.config["OUTBOX_DIR"])
    [entry] = [e for e in outbox.entries() if e.to == address]
    message = outbox.read(entry.name)
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"unsubscribe: (\S+)", body)
    assert match, body
    header = re.match(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    assert header
    return match.group(1), header.group(1)


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_adult_signs_up_from_the_home_page_with_the_keyboard(open_tab, app, viewport):
    tab = open_tab(viewport)
    tab.goto("/")
    expect(tab.page.get_by_role("heading", level=1)).to_be_visible()
    tab.assert_fits_the_screen()
    tab.shot("public-01-home")

    page = tab.page
    type_in(tab, "Email address", "ada@example.org")
    for label, text in (
        ("First name", "Ada"),
        ("Last name", "Lovelace"),
        ("Postal code", "N1 9GU"),
    ):
        page.keyboard.press("Tab")
        expect(page.get_by_label(label, exact=True)).to_be_focused()
        page.keyboard.type(text)
    page.keyboard.press("Tab")
    country = page.get_by_label("Country", exact=True)
    expect(country).to_be_focused()
    country.select_option(label="United Kingdom")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Year you were born", exact=True)).to_be_focused()
    page.keyboard.type("1980")
    tab.shot("public-02-home-filled")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.keyboard.press("Enter")
    assert posted.value.status == 200

    expect(page.get_by_role("heading", name="Thank you, Ada!")).to_be_visible()
    tab.assert_fits_the_screen()
    tab.shot("public-03-thank-you")

    fresh()
    person = db.session.scalars(select(Supporter)).one()
    assert (person.email, person.first_name, person.last_name) == (
        "ada@example.org",
        "Ada",
        "Lovelace",
    )
    assert (person.postal_code, person.country) == ("N1 9GU", "GB")
    assert [e.kind for e in person.consent_events] == ["subscribe"]
    # The welcome email went out at once (Celery runs eagerly here).
    assert [e.to for e in OutboxProvider(app.config["OUTBOX_DIR"]).entries()] == ["ada@example.org"]


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_validation_errors_are_summarised_and_typed_values_kept(open_tab, viewport):
    tab = open_tab(viewport)
    page = tab.page
    tab.goto("/signup")
    type_in(tab, "Email address", "ada@")
    type_in(tab, "First name", "Ada")
    type_in(tab, "Postal code", "10001")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Sign up").click()
    assert posted.value.status == 422

    summary = page.get_by_role("alert")
    expect(summary.get_by_role("heading", name="Please check the form")).to_be_visible()
    expect(summary.get_by_role("link", name=re.compile("email address"))).to_be_visible()
    expect(summary.get_by_role("link", name="Please enter the year you were born.")).to_be_visible()
    expect(page.get_by_label("Email address", exact=True)).to_have_value("ada@")
    expect(page.get_by_label("Email address", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("First name", exact=True)).to_have_value("Ada")
    expect(page.get_by_label("Postal code", exact=True)).to_have_value("10001")
    tab.assert_fits_the_screen()
    tab.shot("public-04-validation-errors")

    # The summary's links take the person to the field to fix.
    summary.get_by_role("link", name="Please enter the year you were born.").click()
    expect(page.get_by_label("Year you were born", exact=True)).to_be_focused()
    page.keyboard.type("1980")
    email = page.get_by_label("Email address", exact=True)
    email.click()
    page.keyboard.press("End")
    page.keyboard.type("example.org")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Thank you, Ada!")).to_be_visible()
    assert supporter_count() == 1


@pytest.mark.parametrize("viewport", ["phone"])
def test_a_child_is_stopped_kindly_and_back_does_not_get_round_it(open_tab, app, viewport):
    tab = open_tab(viewport)
    page = tab.page
    child_year = str(utcnow().year - 10)
    # A second tab with the sign-up form already open, as a child might keep one.
    other = page.context.new_page()
    other.goto(tab.url("/signup"))
    page.bring_to_front()  # a background tab is throttled
    tab.goto("/")
    type_in(tab, "Email address", "kid@example.org")
    type_in(tab, "First name", "Kiddo")
    type_in(tab, "Year you were born", child_year)
    page.get_by_role("button", name="Sign up").click()

    expect(page.get_by_role("heading", name="Thank you for wanting to help")).to_be_visible()
    expect(page.get_by_text("ask a parent or guardian")).to_be_visible()
    content = page.content()
    assert "kid@example.org" not in content and "Kiddo" not in content
    tab.assert_fits_the_screen()
    tab.shot("public-05-age-screen")
    assert supporter_count() == 0

    # Back to the form, change the year to an adult's, and try again. Chromium may show
    # the form from its cache or fetch the page again (which shows the kind page).
    page.go_back()
    page.wait_for_load_state()
    year = page.get_by_label("Year you were born", exact=True)
    if year.count():
        year.fill("")
        year.click()
        page.keyboard.type("1980")
        page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Thank you for wanting to help")).to_be_visible()
    tab.shot("public-06-age-screen-after-back")

    # The form still open in the other tab: an adult's year does not get past it either.
    other.bring_to_front()
    other.get_by_label("Email address", exact=True).fill("kid@example.org")
    other.get_by_label("Year you were born", exact=True).fill("1980")
    with other.expect_response(lambda r: r.request.method == "POST") as posted:
        other.get_by_role("button", name="Sign up").click()
    assert posted.value.status == 200
    expect(other.get_by_role("heading", name="Thank you for wanting to help")).to_be_visible()
    assert "kid@example.org" not in other.content()

    # Nor does going to the sign-up page afresh.
    tab.goto("/signup")
    expect(page.get_by_role("heading", name="Thank you for wanting to help")).to_be_visible()
    assert supporter_count() == 0
    fresh()
    assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 0
    assert OutboxProvider(app.config["OUTBOX_DIR"]).entries() == []


def test_supporter_unsubscribes_from_the_link_in_their_welcome_email(open_tab, app, live_server):
    tab = open_tab("phone")
    page = tab.page
    sign_up(tab, "ada@example.org")
    expect(page.get_by_role("heading", name="Thank you, Ada!")).to_be_visible()

    preferences, one_click = welcome_email_links(app, "ada@example.org")
    assert preferences.startswith(live_server.url + "/u/")
    assert one_click == preferences + "/one-click"

    page.goto(preferences)
    expect(page.get_by_role("heading", name="Your email preferences")).to_be_visible()
    expect(page.get_by_text("receiving our email")).to_be_visible()
    tab.assert_fits_the_screen()
    tab.shot("public-07-preferences")

    page.get_by_role("button", name="Unsubscribe from all email").click()
    expect(page.get_by_role("status")).to_contain_text("You are unsubscribed")
    expect(page.get_by_text("not receiving our email")).to_be_visible()
    expect(page.get_by_role("button", name="Start receiving email again")).to_be_visible()
    tab.assert_fits_the_screen()
    tab.shot("public-08-unsubscribed")

    fresh()
    person = db.session.scalars(select(Supporter)).one()
    assert person.status == SupporterStatus.UNSUBSCRIBED
    assert [(e.kind, e.source) for e in person.consent_events] == [
        ("subscribe", "signup form"),
        ("unsubscribe", "preferences page"),
    ]


def test_supporter_takes_a_break_then_comes_back(open_tab, app):
    tab = open_tab("desktop")
    page = tab.page
    sign_up(tab, "grace@example.org", first_name="Grace")
    expect(page.get_by_role("heading", name="Thank you, Grace!")).to_be_visible()
    preferences, _ = welcome_email_links(app, "grace@example.org")

    page.goto(preferences)
    page.get_by_role("button", name="Pause for 30 days").click()
    expect(page.get_by_role("status")).to_contain_text("Enjoy the break")
    expect(page.get_by_text("taking a break until")).to_be_visible()
    tab.shot("public-09-snoozed")

    fresh()
    person = db.session.scalars(select(Supporter)).one()
    assert person.status == SupporterStatus.SUBSCRIBED
    assert person.snoozed_until is not None
    assert abs(person.snoozed_until - (utcnow() + timedelta(days=30))) < timedelta(minutes=5)

    page.get_by_role("button", name="Start receiving email again").click()
    expect(page.get_by_role("status")).to_contain_text("Welcome back!")
    fresh()
    person = db.session.scalars(select(Supporter)).one()
    assert person.snoozed_until is None
    assert [e.kind for e in person.consent_events] == ["subscribe", "snooze", "resubscribe"]


def test_one_click_link_opened_in_a_browser_asks_first(open_tab, app):
    tab = open_tab("phone")
    page = tab.page
    sign_up(tab, "alan@example.org", first_name="Alan")
    expect(page.get_by_role("heading", name="Thank you, Alan!")).to_be_visible()
    _, one_click = welcome_email_links(app, "alan@example.org")

    page.goto(one_click)  # a link scanner's GET changes nothing
    expect(page.get_by_role("heading", name="Unsubscribe")).to_be_visible()
    fresh()
    assert db.session.scalars(select(Supporter)).one().status == SupporterStatus.SUBSCRIBED
    tab.shot("public-10-one-click")
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    fresh()
    assert db.session.scalars(select(Supporter)).one().status == SupporterStatus.UNSUBSCRIBED


def test_keyboard_reaches_the_skip_link_first_then_the_form_in_order(open_tab):
    tab = open_tab("desktop")
    page = tab.page
    tab.goto("/")
    seen = []
    for _ in HOME_TAB_ORDER:
        page.keyboard.press("Tab")
        focused = tab.focused()
        assert focused["outline"], f"no visible focus indicator on {focused}"
        assert focused["visible"], f"focused element is off screen: {focused}"
        seen.append(focused)
        if len(seen) == 1:
            tab.shot("public-11-skip-link-focused")
    got = [
        (f["tag"], f["id"], f["text"] if want is not None else None)
        for f, (_, _, want) in zip(seen, HOME_TAB_ORDER, strict=True)
    ]
    assert got == HOME_TAB_ORDER

    # The skip link takes keyboard users past the header, to the main content.
    tab.goto("/")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert tab.focused()["id"] == "main"
    page.keyboard.press("Tab")
    assert tab.focused()["id"] == "email"


def test_privacy_policy_and_error_pages_fit_a_phone(open_tab):
    tab = open_tab("phone")
    tab.goto("/privacy")
    expect(tab.page.get_by_role("heading", level=1)).to_be_visible()
    tab.assert_fits_the_screen()
    tab.shot("public-12-privacy")
    response = tab.goto("/no-such-page")
    assert response.status == 404
    expect(tab.page.get_by_role("heading", name="We couldn't find that page")).to_be_visible()
    tab.assert_fits_the_screen()
