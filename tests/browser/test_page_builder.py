"""Staff build each kind of action page in the browser; an activist then takes it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.actions.models import Action, ActionPage
from app.timeutil import utcnow
from tests.browser.test_staff_flows import sign_in
from tests.factories import StaffFactory, TargetFactory

pytestmark = pytest.mark.browser
ADULT_YEAR = str(utcnow().year - 30)

# The kind-specific settings sit in closed <details> on a new form: open them as a person would.
SECTIONS = {
    "Letter to officials": [
        "Letter settings (letter pages only)",
        "Targets (letters to fixed targets, and calls)",
    ],
    "Call-in": ["Call script (call pages only)", "Targets (letters to fixed targets, and calls)"],
    "Event": ["Event details (event pages only)"],
}
KINDS = {
    "Petition": {},
    "Letter to officials": {
        "Letter subject": "Fund early warning",
        "Letter text": "Dear Senator, please fund atrocity early warning.",
    },
    "Call-in": {"Call script (Markdown)": "Ask for a **yes** vote."},
    "Event": {"Starts": "2031-06-01T18:00", "Venue": "Community hall"},
}


def build_page(tab, kind: str, slug: str, extra: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    page = tab.page
    tab.goto("/staff/pages/new")
    page.get_by_label("Kind of page").select_option(label=kind)
    page.get_by_label("Title").fill(f"{kind}: act for peace")
    page.get_by_label("Address (slug)").fill(slug)
    page.get_by_label("Page text (Markdown)").fill("Atrocities are **preventable**.")
    page.get_by_label("Email opt-in text shown to signers").fill(
        "Email me about this campaign. I can unsubscribe at any time."
    )
    for summary in SECTIONS.get(kind, []):
        page.get_by_text(summary, exact=True).click()
    for label, value in extra.items():
        page.get_by_label(label, exact=True).fill(value)
    if kind in ("Letter to officials", "Call-in"):
        page.get_by_label("Targets").select_option(label="Senator Amadi, Senator (NY)")
    page.get_by_label("Status").select_option("live")
    page.get_by_role("button", name="Create page").click()
    page.get_by_text("created").first.wait_for()


def test_staff_build_each_kind_and_an_activist_takes_it(open_tab, db_session):
    StaffFactory(email="organizer@example.org", role="organizer")
    TargetFactory(name="Senator Amadi", office_email="amadi@senate.example")
    staff = open_tab("desktop")
    sign_in(staff, "organizer@example.org")
    for n, (kind, extra) in enumerate(KINDS.items()):
        build_page(staff, kind, f"kind-{n}", extra)
    staff.shot("builder-01-edit-after-create")
    staff.goto("/staff/pages")
    staff.shot("builder-02-list")
    assert db_session.scalar(select(func.count()).select_from(ActionPage)) == len(KINDS)

    activist = open_tab("phone")
    for n, kind in enumerate(KINDS):
        activist.goto(f"/a/kind-{n}")
        page = activist.page
        page.get_by_label("Email address").fill(f"activist{n}@example.org")
        page.get_by_label("First name", exact=True).fill("Sam")
        page.get_by_label("Postal code").fill("10001")
        page.get_by_label("Year you were born").fill(ADULT_YEAR)
        if kind == "Call-in":
            page.get_by_label("I spoke to someone").check()
        page.locator("form button[type=submit]").click()
        page.get_by_role("heading", name="Thank you!").wait_for()
    assert db_session.scalar(select(func.count()).select_from(Action)) == len(KINDS)

    first = db_session.scalar(select(ActionPage).where(ActionPage.slug == "kind-0"))
    staff.goto(f"/staff/pages/{first.id}/report")
    report = staff.page.inner_text("main")
    assert re.search(r"\b1\s+actions\b", report), report
    assert re.search(r"direct\s+1\b", report), report
    staff.shot("builder-03-report")
