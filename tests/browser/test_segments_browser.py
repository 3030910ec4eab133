"""On a phone, staff build a segment with two conditions and an exclusion, with a live count."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.actions.models import Action
from app.supporters.models import Segment, Tag, supporter_tags
from tests.browser.test_staff_flows import sign_in
from tests.factories import ActionPageFactory, StaffFactory, SupporterFactory

pytestmark = pytest.mark.browser


def seed(db_session) -> None:  # type: ignore[no-untyped-def]
    volunteer, donor = Tag(name="volunteer"), Tag(name="donor")
    db_session.add_all([volunteer, donor])
    db_session.flush()
    page = ActionPageFactory(title="Save the river")
    acted = SupporterFactory(country="GB")
    people = [
        acted,
        SupporterFactory(country="GB"),
        SupporterFactory(country="GB", status="unsubscribed"),
        SupporterFactory(country="US"),
    ]
    SupporterFactory(country="GB")  # no tag
    for person in people:
        db_session.execute(
            supporter_tags.insert().values(supporter_id=person.id, tag_id=volunteer.id)
        )
    db_session.add(Action(page_id=page.id, supporter_id=acted.id))
    db_session.commit()


def test_build_a_segment_with_a_live_count_on_a_phone(open_tab, db_session) -> None:  # type: ignore[no-untyped-def]
    seed(db_session)
    StaffFactory(email="organizer@example.org", role="organizer")
    tab = open_tab("phone")
    page = tab.page
    sign_in(tab, "organizer@example.org")
    tab.goto("/staff/segments/")
    page.get_by_role("link", name="New segment").click()
    expect(page.get_by_role("heading", name="New segment")).to_be_visible()
    count = page.locator("#segment-count")
    # With the script, a row shows only the inputs for its kind of condition.
    expect(page.locator("#include-0-tag_ids")).to_be_hidden()

    page.get_by_label("Name", exact=True).fill("GB volunteers who have not acted")
    page.locator("#include-0-type").select_option(label="Has tags")
    page.locator("#include-0-tag_ids").select_option(label="volunteer")
    # Four volunteers, one of them unsubscribed.
    expect(count).to_contain_text("3 can be mailed")
    expect(count).to_contain_text("4 match in all")

    page.locator("#include-1-type").select_option(label="Country and postal code")
    page.locator("#include-1-country").fill("GB")
    expect(count).to_contain_text("2 can be mailed")

    page.locator("#exclude-0-type").select_option(label="Took action (or did not)")
    page.locator("#exclude-0-page_ids").select_option(label="Save the river (live)")
    expect(count).to_contain_text("1 can be mailed")
    expect(count).to_contain_text("2 match in all")
    assert count.get_attribute("aria-live") == "polite"
    tab.assert_fits_the_screen()
    tab.shot("segments-01-builder")

    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_role("status").first).to_contain_text("saved")
    row = page.get_by_role("row").filter(has_text="GB volunteers who have not acted")
    expect(row).to_contain_text("1")
    tab.assert_fits_the_screen()
    tab.shot("segments-02-list")
    saved = db_session.scalar(select(Segment))
    assert saved.definition["match"] == "all"
    assert [c["type"] for c in saved.definition["include"]] == ["tags", "location"]
    assert [c["type"] for c in saved.definition["exclude"]] == ["action"]
