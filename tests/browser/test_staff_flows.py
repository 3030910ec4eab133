"""The staff area in a real browser: sign in, dashboard, supporters, consent history, outbox."""

from __future__ import annotations

import itertools

import pytest

from app.extensions import db
from app.supporters import service
from app.supporters.tasks import send_welcome_email
from app.timeutil import utcnow
from tests.factories import STAFF_PASSWORD, StaffFactory, SupporterFactory

pytestmark = pytest.mark.browser
# Skipped, not failed, where Playwright is not installed (Chromium is checked in conftest).
expect = pytest.importorskip("playwright.sync_api").expect

LOGIN_TAB_ORDER = ["Skip to content", "Groundswell staff", "email", "password", "Sign in"]


@pytest.fixture
def seeded(app):
    """An admin, a supporter who joined through the form (with a welcome email), and others."""
    admin = StaffFactory(email="admin@example.org", role="admin")
    result = service.signup(
        db.session,
        service.SignupData("ada.lovelace_1815@example.org", "Ada", "Lovelace", "N1 9GU", "GB"),
        source="signup form",
        consent_text="Sign me up for email from the demo campaign.",
        now=utcnow(),
    )
    db.session.commit()
    send_welcome_email.delay(result.supporter.id)
    SupporterFactory.create_batch(3)
    # A long, unbroken address: tables must not push the page sideways on a phone.
    SupporterFactory(email="a-very-long-address-that-does-not-wrap@subdomain.example.org")
    return admin


def assert_chart_labels_readable(page) -> None:
    """Day labels inside the chart, apart from each other, and big enough to read."""
    labels = page.evaluate(
        """() => [...document.querySelectorAll("svg.chart text")].map(t => {
            const r = t.getBoundingClientRect();
            return {text: t.textContent, left: r.left, right: r.right, height: r.height};
        })"""
    )
    chart = page.locator("svg.chart").bounding_box()
    assert len(labels) >= 4
    for label in labels:
        assert chart["x"] <= label["left"] and label["right"] <= chart["x"] + chart["width"], label
        assert label["height"] >= 10, f"label too small to read: {label}"
    for before, after in itertools.pairwise(labels):
        assert before["right"] < after["left"], f"labels overlap: {before} {after}"


def sign_in(tab, email: str, password: str = STAFF_PASSWORD) -> None:
    page = tab.page
    tab.goto("/staff/")
    expect(page.get_by_role("heading", name="Staff sign-in")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Please sign in to see that page.")
    page.get_by_label("Email address", exact=True).click()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    with page.expect_navigation():
        page.keyboard.press("Enter")


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_staff_sign_in_dashboard_search_consent_history_and_outbox(open_tab, seeded, viewport):
    tab = open_tab(viewport)
    page = tab.page

    tab.goto("/staff/login")
    tab.assert_fits_the_screen()
    tab.shot("staff-01-login")
    sign_in(tab, "admin@example.org")

    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    stats = page.get_by_role("list", name="Supporter counts")
    expect(stats).to_contain_text("5 supporters")
    chart = page.get_by_role("img", name="New supporters, last 30 days")
    expect(chart).to_be_visible()
    expect(page.locator("svg.chart rect.bar")).to_have_count(30)
    box = chart.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 80
    assert_chart_labels_readable(page)
    tab.assert_fits_the_screen()
    tab.shot("staff-02-dashboard")

    page.get_by_role("link", name="Supporters").click()
    expect(page.get_by_role("heading", name="Supporters")).to_be_visible()
    expect(page.get_by_text("5 found")).to_be_visible()
    tab.assert_fits_the_screen()
    tab.shot("staff-03-supporters")
    search = page.get_by_label("Search by email or name")
    search.click()
    page.keyboard.type("lovelace_1815")
    page.keyboard.press("Enter")
    expect(page.get_by_text("1 found")).to_be_visible()
    expect(search).to_have_value("lovelace_1815")
    tab.shot("staff-04-search")

    page.get_by_role("link", name="ada.lovelace_1815@example.org").click()
    expect(page.get_by_role("heading", name="Ada Lovelace")).to_be_visible()
    history = page.locator("table").filter(has_text="Policy version")
    expect(history).to_contain_text("subscribe")
    expect(history).to_contain_text("signup form")
    expect(history).to_contain_text("Sign me up for email from the demo campaign.")
    expect(page.get_by_role("button", name="Unsubscribe at their request")).to_be_visible()
    tab.assert_fits_the_screen()
    tab.shot("staff-05-supporter")

    page.get_by_role("link", name="Outbox").click()
    expect(page.get_by_role("heading", name="Outbox")).to_be_visible()
    tab.assert_fits_the_screen()
    tab.shot("staff-06-outbox")
    page.get_by_role("link", name="Welcome to Groundswell Demo Campaign").click()
    expect(page.get_by_role("heading", name="Outbox message")).to_be_visible()
    expect(page.get_by_role("rowheader", name="List-Unsubscribe", exact=True)).to_be_visible()
    expect(page.get_by_role("rowheader", name="List-Unsubscribe-Post")).to_be_visible()
    expect(page.locator("pre").first).to_contain_text("Dear Ada,")
    tab.assert_fits_the_screen()
    tab.shot("staff-07-outbox-message")

    page.get_by_role("link", name="Privacy & audit").click()
    expect(page.get_by_role("heading", name="Privacy and audit log")).to_be_visible()
    ledger, audit_log = page.locator("table").nth(0), page.locator("table").nth(1)
    expect(ledger).to_contain_text("No personal data has left the system.")
    expect(audit_log).to_contain_text("staff.login")
    tab.assert_fits_the_screen()
    tab.shot("staff-08-audit")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out.")
    tab.goto("/staff/supporters")
    expect(page.get_by_role("heading", name="Staff sign-in")).to_be_visible()


def test_staff_unsubscribe_at_a_supporters_request(open_tab, seeded):
    tab = open_tab("desktop")
    page = tab.page
    sign_in(tab, "admin@example.org")
    tab.goto("/staff/supporters?q=lovelace")
    page.get_by_role("link", name="ada.lovelace_1815@example.org").click()
    page.get_by_role("button", name="Unsubscribe at their request").click()
    expect(page.get_by_role("status")).to_contain_text("They will receive no more email.")
    history = page.locator("table").filter(has_text="Policy version")
    expect(history).to_contain_text("staff, on the supporter's request")
    expect(page.get_by_role("button", name="Unsubscribe at their request")).to_have_count(0)
    tab.shot("staff-09-unsubscribed")


def test_wrong_password_in_the_browser(open_tab, seeded):
    tab = open_tab("phone")
    page = tab.page
    sign_in(tab, "admin@example.org", password="not the password at all")
    expect(page.get_by_role("alert")).to_contain_text("do not match an active staff account")
    expect(page.get_by_label("Email address", exact=True)).to_have_value("admin@example.org")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    tab.assert_fits_the_screen()
    tab.shot("staff-10-login-error")


def test_keyboard_order_on_the_staff_sign_in_page(open_tab, seeded):
    tab = open_tab("desktop")
    page = tab.page
    tab.goto("/staff/login")
    seen = []
    for _ in LOGIN_TAB_ORDER:
        page.keyboard.press("Tab")
        focused = tab.focused()
        assert focused["outline"], f"no visible focus indicator on {focused}"
        seen.append(focused["id"] or focused["text"])
    assert seen == LOGIN_TAB_ORDER
