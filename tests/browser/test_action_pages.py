"""Activists taking each kind of action page in Chromium, on a phone-sized screen."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.actions.models import Action, CallReport
from app.supporters.models import Supporter
from app.timeutil import utcnow
from tests.factories import ActionPageFactory, TargetFactory

pytestmark = pytest.mark.browser
ADULT_YEAR = str(utcnow().year - 35)


def fill_person(page, email: str, first: str = "Amara") -> None:  # type: ignore[no-untyped-def]
    page.get_by_label("Email address").fill(email)
    page.get_by_label("First name", exact=True).fill(first)
    page.get_by_label("Last name", exact=True).fill("Diallo")
    page.get_by_label("Postal code").fill("10001")
    page.get_by_label("Year you were born").fill(ADULT_YEAR)


def test_sign_a_petition_and_share_it_on_a_phone(open_tab, db_session):
    ActionPageFactory(
        slug="darfur",
        title="Protect civilians in Darfur",
        goal=100,
        share_text="I signed: protect civilians",
        hashtag="#endgenocide",
        thank_you_md="Thank you for **standing up**.",
    )
    tab = open_tab("phone")
    tab.goto("/")
    tab.page.get_by_role("link", name="Protect civilians in Darfur").click()
    tab.shot("action-01-petition")
    tab.assert_fits_the_screen()
    fill_person(tab.page, "amara@example.org")
    tab.page.get_by_label("Comment (optional)").fill("Never again means now.")
    tab.page.get_by_label("Show my first name and town with my signature", exact=False).check()
    tab.page.get_by_label("Town (optional)").fill("Brooklyn")
    tab.page.get_by_label("Email me", exact=False).check()
    tab.page.get_by_role("button", name="Sign the petition").click()

    tab.page.get_by_role("heading", name="Thank you!").wait_for()
    assert "standing up" in tab.page.inner_text("main")
    share_url = tab.page.get_by_label("Or copy your link").input_value()
    assert "/a/darfur?ref=" in share_url
    x_link = tab.page.get_by_role("link", name="X (opens X, leaves this site)")
    assert "hashtags=endgenocide" in x_link.get_attribute("href")
    tab.shot("action-02-petition-thanks")
    tab.assert_fits_the_screen()

    # A friend follows the shared link and signs too: the sharer gets the credit.
    friend = open_tab("phone")
    friend.page.goto(share_url)
    fill_person(friend.page, "kofi@example.org", first="Kofi")
    friend.page.get_by_role("button", name="Sign the petition").click()
    friend.page.get_by_role("heading", name="Thank you!").wait_for()

    tab.goto("/a/darfur")
    text = tab.page.inner_text("main")
    assert "2 signatures of a goal of 100" in text
    assert "Amara, Brooklyn" in text and "Kofi" not in text
    sharer = db_session.scalar(select(Supporter).where(Supporter.email == "amara@example.org"))
    kofi = db_session.scalar(select(Supporter).where(Supporter.email == "kofi@example.org"))
    kofi_action = db_session.scalar(select(Action).where(Action.supporter_id == kofi.id))
    assert kofi_action.referrer_id == sharer.id


def test_report_a_call_on_a_phone(open_tab, db_session):
    target = TargetFactory(name="Senator Rivera", phone="+1 202 555 0142")
    page = ActionPageFactory(
        kind="call",
        slug="call-in",
        title="Call-in day",
        settings={"call_script": "Ask the senator to **co-sponsor** the bill."},
    )
    page.targets.append(target)
    db_session.commit()
    tab = open_tab("phone")
    tab.goto("/a/call-in")
    call = tab.page.get_by_role("link", name="+1 202 555 0142")
    assert call.get_attribute("href") == "tel:+12025550142"
    fill_person(tab.page, "caller@example.org")
    tab.page.get_by_role("button", name="Report your call").click()
    assert "Please tell us how your call went." in tab.page.inner_text("main")
    tab.shot("action-03-call-error")
    tab.page.get_by_label("I left a voicemail").check()
    tab.page.get_by_role("button", name="Report your call").click()
    tab.page.get_by_role("heading", name="Thank you!").wait_for()
    report = db_session.scalar(select(CallReport))
    assert (report.outcome, report.target_id) == ("voicemail", target.id)


def test_closed_page_offers_the_next_step(open_tab, db_session):
    nxt = ActionPageFactory(slug="write-now", title="Write to your senator")
    ActionPageFactory(slug="over", title="Old petition", status="closed", next_page_id=nxt.id)
    tab = open_tab("phone")
    tab.goto("/a/over")
    assert "This action has closed" in tab.page.inner_text("main")
    tab.page.get_by_role("link", name="Write to your senator").click()
    tab.page.get_by_role("heading", name="Write to your senator").wait_for()
    tab.shot("action-04-closed-next")


def test_child_is_stopped_on_an_action_page(open_tab, db_session):
    ActionPageFactory(slug="kids", title="Sign for peace")
    tab = open_tab("phone")
    tab.goto("/a/kids")
    tab.page.get_by_label("Email address").fill("young@example.org")
    tab.page.get_by_label("Year you were born").fill(str(utcnow().year - 11))
    tab.page.get_by_role("button", name="Sign the petition").click()
    assert "ask a parent or guardian" in tab.page.inner_text("main")
    tab.shot("action-05-child-stopped")
    tab.page.go_back()
    tab.page.reload()
    assert "ask a parent or guardian" in tab.page.inner_text("main")
    assert db_session.scalar(select(func.count()).select_from(Supporter)) == 0
    assert db_session.scalar(select(func.count()).select_from(Action)) == 0


def test_write_to_an_official_on_a_phone(open_tab, db_session, outbox):
    office = TargetFactory(name="Senator Okoye", office_email="okoye@senate.example")
    page = ActionPageFactory(
        kind="letter",
        slug="write",
        title="Write to your senator",
        settings={
            "letter_subject": "Fund atrocity prevention",
            "letter_body": "Dear Senator,\n\nPlease fund early warning.",
            "letter_editable": "body",
            "letter_max_length": 2000,
        },
    )
    page.targets.append(office)
    db_session.commit()
    tab = open_tab("phone")
    tab.goto("/a/write")
    assert "Senator Okoye" in tab.page.inner_text("main")
    fill_person(tab.page, "writer@example.org")
    body = tab.page.get_by_role("textbox", name="Your letter")
    body.fill("Dear Senator,\n\nI live in your district. Please fund early warning now.")
    tab.shot("action-06-letter")
    tab.assert_fits_the_screen()
    tab.page.get_by_role("button", name="Send your letter").click()
    tab.page.get_by_role("heading", name="Your letter is on its way to").wait_for()
    assert "Senator Okoye" in tab.page.inner_text("main")
    tab.shot("action-07-letter-thanks")

    sent = {entry.to: outbox.read(entry.name) for entry in outbox.entries()}
    to_office = sent["okoye@senate.example"]
    text = to_office.get_body(preferencelist=("plain",)).get_content()
    assert "I live in your district" in text and "writer@example.org" not in text
    assert to_office["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "writer@example.org" in sent  # the signer's copy


def test_rsvp_to_an_event_on_a_phone(open_tab, db_session):
    ActionPageFactory(
        kind="event",
        slug="vigil",
        title="Candlelight vigil",
        settings={
            "starts_at": "2031-03-10T18:30",
            "ends_at": "2031-03-10T20:00",
            "timezone": "America/New_York",
            "venue": "Union Square, New York",
            "capacity": 1,
        },
    )
    first = open_tab("phone")
    first.goto("/a/vigil")
    text = first.page.inner_text("main")
    assert "Union Square" in text and "America/New_York" in text
    fill_person(first.page, "first@example.org")
    first.page.get_by_role("button", name="RSVP").click()
    first.page.get_by_text("You're going.").wait_for()
    calendar = first.page.get_by_role("link", name="Add the event to your calendar (.ics)")
    assert calendar.get_attribute("href") == "/a/vigil/event.ics"
    first.shot("action-08-event-going")

    second = open_tab("phone")
    second.goto("/a/vigil")
    fill_person(second.page, "second@example.org", first="Lena")
    second.page.get_by_role("button", name="RSVP").click()
    second.page.get_by_text("You're on the waitlist", exact=False).wait_for()
    second.shot("action-09-event-waitlist")


def test_signup_page_on_a_phone(open_tab, db_session):
    ActionPageFactory(kind="signup", slug="join", title="Join the rapid response network")
    tab = open_tab("phone")
    tab.goto("/a/join")
    fill_person(tab.page, "joiner@example.org")
    tab.page.get_by_label("Email me", exact=False).check()
    tab.page.get_by_role("button", name="Sign up").click()
    tab.page.get_by_role("heading", name="Thank you!").wait_for()
    joined = db_session.scalar(select(Supporter).where(Supporter.email == "joiner@example.org"))
    assert joined.status == "subscribed"
