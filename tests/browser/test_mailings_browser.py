"""Staff compose, target, preview, test, check, schedule and send a mailing, and watch its
progress bar reach the end, in a real browser on a phone and a desktop."""

from __future__ import annotations

from datetime import timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from app.extensions import db
from app.supporters.models import Segment
from app.timeutil import utcnow
from tests.browser.test_staff_flows import sign_in
from tests.factories import ActionPageFactory, StaffFactory, SupporterFactory

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def seeded(app, monkeypatch):  # type: ignore[no-untyped-def]
    # The links in this mailing are our own; nothing may reach another host.
    monkeypatch.setitem(app.config, "MAILING_CHECK_EXTERNAL_LINKS", False)
    StaffFactory(email="admin@example.org", role="admin")
    SupporterFactory(email="ada@example.org", first_name="Ada")
    SupporterFactory.create_batch(4)
    ActionPageFactory(slug="save-the-river", title="Save the river")
    db.session.add(Segment(name="Riverside neighbours", definition={}))
    db.session.commit()


def outbox(app) -> list:  # type: ignore[no-untyped-def,type-arg]
    folder = Path(app.config["OUTBOX_DIR"])
    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_compose_preview_test_check_schedule_send_and_watch(app, open_tab, seeded, viewport):
    from app.mailings.tasks import send_mailing

    tab = open_tab(viewport)
    page = tab.page
    sign_in(tab, "admin@example.org")

    # Compose, and pick a segment.
    tab.goto("/staff/mailings")
    page.get_by_role("link", name="New mailing").click()
    page.get_by_label("Subject", exact=True).fill("The river needs you, {{ first_name }}")
    page.get_by_label("Preheader").fill("Two minutes to sign")
    page.get_by_label("From name").fill("River Friends")
    page.get_by_label("Body", exact=True).fill(
        'Hello {{ first_name | default("friend") }},\n\n'
        f"Please [sign the petition]({tab.origin}/a/save-the-river) today."
    )
    page.get_by_label("Send to").select_option(label="Riverside neighbours")
    tab.shot("mailing-01-compose")
    tab.assert_fits_the_screen()
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("status")).to_contain_text("Mailing saved as a draft.")
    expect(page.locator(".meta").first).to_contain_text("To: Riverside neighbours")
    mailing_url = page.url

    # Preview as the first subscriber: their name in the subject and in the sandboxed HTML.
    page.get_by_role("link", name="Preview").click()
    expect(page.locator(".preview-subject")).to_have_text("The river needs you, Ada")
    expect(page.frame_locator("iframe.email-preview").locator("body")).to_contain_text("Hello Ada")
    expect(page.locator(".preview-text")).to_contain_text("Unsubscribe")
    tab.assert_fits_the_screen()
    tab.shot("mailing-02-preview")

    # Test send: to the signed-in staff member, and nobody else.
    page.goto(mailing_url)
    expect(page.get_by_label("admin@example.org")).to_be_checked()
    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_role("status")).to_contain_text("Test sent: 1 message to staff.")
    [test] = outbox(app)
    assert str(test["To"]) == "admin@example.org"
    assert str(test["Subject"]) == "[Test] The river needs you, friend"

    # The checks pass (only advice, if anything).
    page.get_by_role("link", name="Run the checks").click()
    expect(page.get_by_role("heading", name="Checks before sending")).to_be_visible()
    tab.shot("mailing-03-checks")
    assert page.locator(".finding-error").count() == 0, page.locator(".findings").inner_text()

    # Schedule for tomorrow (UTC), then change our mind.
    page.goto(mailing_url)
    when = (utcnow() + timedelta(days=1)).replace(second=0, microsecond=0)
    page.get_by_label("Send at (UTC)").fill(when.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Schedule").click()
    expect(page.get_by_role("status")).to_contain_text(f"{when:%Y-%m-%d %H:%M} UTC")
    tab.shot("mailing-04-scheduled")
    page.get_by_role("button", name="Unschedule").click()
    expect(page.get_by_role("status")).to_contain_text("a draft again")

    # Send now: the confirm step says how many; the worker is "down" at first, so the
    # page shows the mailing starting, then the bar moves once the worker runs.
    page.get_by_role("link", name="Send now…").click()
    expect(page.get_by_role("button", name="Send to 5 now")).to_be_visible()
    tab.shot("mailing-05-confirm")
    celery = app.extensions["celery"]
    celery.conf.task_always_eager = False
    try:
        page.get_by_role("button", name="Send to 5 now").click()
        expect(page.get_by_role("status")).to_contain_text("Sending has started.")
        expect(page.locator("#progress-text")).to_contain_text("0% done")
        tab.shot("mailing-06-sending")
    finally:
        celery.conf.task_always_eager = True
    mailing_id = int(mailing_url.rstrip("/").rsplit("/", 1)[1])
    send_mailing.apply(args=[mailing_id])  # the worker is back
    expect(page.locator("#progress-text")).to_contain_text("Finished", timeout=10_000)
    expect(page.locator("#progress-bar")).to_have_attribute("value", "100")
    expect(page.locator('[data-field="sent"]')).to_have_text("5")
    # Once done the page reloads itself, so the controls match: no Pause on a sent mailing.
    expect(page.locator(".badge")).to_have_text("sent", timeout=5_000)
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    tab.assert_fits_the_screen()
    tab.shot("mailing-07-sent")
    recipients = sorted(str(m["To"]) for m in outbox(app)[1:])
    assert len(recipients) == 5 and "ada@example.org" in recipients

    page.get_by_role("link", name="Open the report").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("The river needs you")
    tab.shot("mailing-08-report")
