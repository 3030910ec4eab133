"""Taking action on petition, call-in and sign-up pages: counting, attribution, referral."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import func, select

from app.actions.models import Action, CallReport, PageStatus
from app.supporters.models import Supporter, SupporterStatus
from app.supporters.tokens import make_token
from app.timeutil import utcnow
from tests.conftest import csrf_token
from tests.factories import ActionPageFactory, SupporterFactory, TargetFactory

ADULT_YEAR = str(utcnow().year - 40)


def person(**extra: str) -> dict[str, str]:
    data = {
        "email": f"act-{uuid.uuid4().hex[:8]}@example.org",
        "first_name": "Nadia",
        "last_name": "Okafor",
        "postal_code": "10001",
        "country": "US",
        "birth_year": ADULT_YEAR,
    }
    data.update(extra)
    return data


def act(client, path: str, fields: dict[str, str]):  # type: ignore[no-untyped-def]
    slug_path = path.split("?")[0]
    return client.post(path, data={"csrf_token": csrf_token(client, slug_path), **fields})


def count(db_session, model, **where) -> int:  # type: ignore[no-untyped-def]
    stmt = select(func.count()).select_from(model)
    for name, value in where.items():
        stmt = stmt.where(getattr(model, name) == value)
    return db_session.scalar(stmt)


def test_petition_signature_is_counted_once_and_shown_only_if_chosen(client, db_session):
    page = ActionPageFactory(slug="protect-civilians", goal=10)
    shy, proud = person(), person(first_name="Omar")
    assert act(client, "/a/protect-civilians", shy).status_code == 303
    response = act(
        client,
        "/a/protect-civilians",
        {**proud, "show_publicly": "y", "town": "Leeds", "comment": "Never again"},
    )
    assert response.status_code == 303
    # The same person again, different case: still one action.
    assert (
        act(client, "/a/protect-civilians", {**shy, "email": shy["email"].upper()}).status_code
        == 303
    )

    assert count(db_session, Action, page_id=page.id) == 2
    html = client.get("/a/protect-civilians").get_data(as_text=True)
    assert "<strong>2</strong> signatures of a goal of 10" in html
    assert "Omar, Leeds" in html and "Never again" in html
    assert "Nadia" not in html  # public display is off by default
    assert 'value="2"' in html  # the progress bar


def test_opt_in_is_recorded_with_the_exact_text_and_unticked_means_not_subscribed(
    client, db_session
):
    page = ActionPageFactory(slug="opt", opt_in_text="Yes, email me about Sudan.")
    joined, did_not = person(), person()
    act(client, "/a/opt", {**joined, "email_opt_in": "y"})
    act(client, "/a/opt", did_not)

    yes = db_session.scalar(select(Supporter).where(Supporter.email == joined["email"]))
    no = db_session.scalar(select(Supporter).where(Supporter.email == did_not["email"]))
    assert yes.status == SupporterStatus.SUBSCRIBED
    assert [(e.kind, e.detail) for e in yes.consent_events] == [
        ("subscribe", "Yes, email me about Sudan.")
    ]
    assert no.status == SupporterStatus.NOT_SUBSCRIBED
    assert no.consent_events == []
    assert count(db_session, Action, page_id=page.id) == 2


def test_opt_in_default_is_set_per_page(client):
    ActionPageFactory(slug="ticked", opt_in_default=True)
    ActionPageFactory(slug="unticked", opt_in_default=False)
    ticked = client.get("/a/ticked").get_data(as_text=True)
    unticked = client.get("/a/unticked").get_data(as_text=True)
    assert re.search(r'<input checked[^>]*name="email_opt_in"', ticked)
    assert not re.search(r'<input checked[^>]*name="email_opt_in"', unticked)


def test_attribution_from_mailing_utm_and_other_site(client, db_session):
    page = ActionPageFactory(slug="attr")
    act(client, "/a/attr?mid=42", person())
    act(client, "/a/attr?utm_source=newsletter&utm_campaign=dec", person())
    act(client, "/a/attr", {**person(), "via": "news.example.com"})
    act(client, "/a/attr", person())
    rows = db_session.scalars(select(Action).where(Action.page_id == page.id).order_by(Action.id))
    got = [(a.source, a.mailing_id, a.utm, a.referrer_host) for a in rows]
    assert got == [
        ("mailing", 42, {}, ""),
        ("campaign link", None, {"utm_source": "newsletter", "utm_campaign": "dec"}, ""),
        ("other site", None, {}, "news.example.com"),
        ("direct", None, {}, ""),
    ]


def test_referral_link_on_thank_you_page_credits_the_sharer(client, db_session):
    page = ActionPageFactory(slug="share", share_text="I acted", hashtag="#endgenocide")
    sharer = person()
    thanks = client.get(act(client, "/a/share", sharer).headers["Location"])
    html = thanks.get_data(as_text=True)
    share_url = re.search(r'id="share-url" type="text" readonly value="([^"]+)"', html).group(1)
    code = share_url.split("ref=")[1]
    assert "twitter.com/intent/tweet" in html and "hashtags=endgenocide" in html
    assert "wa.me" in html and "facebook.com/sharer" in html and "mailto:?" in html
    assert "leaves this site" in html

    friend = person()
    act(client, f"/a/share?ref={code}", friend)
    # Sharing with yourself earns nothing.
    act(client, f"/a/share?ref={code}", sharer)
    sharer_row = db_session.scalar(select(Supporter).where(Supporter.email == sharer["email"]))
    friend_action = db_session.scalar(
        select(Action)
        .join(Supporter, Action.supporter_id == Supporter.id)
        .where(Supporter.email == friend["email"], Action.page_id == page.id)
    )
    assert friend_action.referrer_id == sharer_row.id and friend_action.source == "referral"
    own = db_session.scalar(select(Action).where(Action.supporter_id == sharer_row.id))
    assert own.referrer_id is None


def test_recognised_supporter_only_confirms_and_sees_nothing_personal(client, app, db_session):
    page = ActionPageFactory(slug="known")
    known = SupporterFactory(email="grace@example.org", first_name="Grace", postal_code="90210")
    token = make_token(app.config["SECRET_KEY"], known.public_id)
    html = client.get(f"/a/known?t={token}&mid=7").get_data(as_text=True)
    assert "grace@example.org" not in html and "Grace" not in html and "90210" not in html
    assert 'name="email"' not in html  # nothing to fill in: just confirm
    response = client.post(
        f"/a/known?t={token}&mid=7", data={"csrf_token": csrf_token(client), "t": token}
    )
    assert response.status_code == 303
    action = db_session.scalar(select(Action).where(Action.page_id == page.id))
    assert (action.supporter_id, action.mailing_id, action.source) == (known.id, 7, "mailing")


def test_forged_token_gets_the_ordinary_form(client):
    ActionPageFactory(slug="forged")
    html = client.get("/a/forged?t=not-a-real-token").get_data(as_text=True)
    assert 'name="email"' in html


def test_call_in_needs_an_outcome_and_tallies_it(client, db_session):
    target = TargetFactory(name="Senator Ortiz", phone="+1 202 555 0199")
    page = ActionPageFactory(kind="call", slug="call-day", settings={"call_script": "Say *hello*"})
    page.targets.append(target)
    db_session.commit()
    html = client.get("/a/call-day").get_data(as_text=True)
    assert 'href="tel:+12025550199"' in html and "<em>hello</em>" in html

    missing = act(client, "/a/call-day", person())
    assert missing.status_code == 422
    assert "Please tell us how your call went." in missing.get_data(as_text=True)
    ok = act(
        client,
        "/a/call-day",
        {**person(), "call_outcome": "voicemail", "call_target_id": str(target.id)},
    )
    assert ok.status_code == 303
    report = db_session.scalar(select(CallReport))
    assert (report.outcome, report.target_id) == ("voicemail", target.id)


@pytest.mark.parametrize("status", [PageStatus.CLOSED.value, "past"])
def test_closed_page_offers_the_next_action(client, db_session, status):
    nxt = ActionPageFactory(slug="next-one", title="Write to your senator")
    closed = ActionPageFactory(slug="old", next_page_id=nxt.id)
    if status == "past":
        closed.close_at = utcnow().replace(year=utcnow().year - 1)
    else:
        closed.status = status
    db_session.commit()
    response = client.get("/a/old")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "This action has closed" in html and "/a/next-one" in html
    posted = client.post("/a/old", data={"csrf_token": csrf_token(client), **person()})
    assert posted.status_code == 200
    assert count(db_session, Action, page_id=closed.id) == 0


def test_draft_pages_are_not_public(client):
    ActionPageFactory(slug="secret-draft", status=PageStatus.DRAFT.value)
    assert client.get("/a/secret-draft").status_code == 404


def test_validation_errors_keep_what_was_typed(client, db_session):
    ActionPageFactory(slug="keep")
    typed = person(email="not-an-email", first_name="Amina")
    response = act(client, "/a/keep", {**typed, "comment": "Act now"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'value="not-an-email"' in html and 'value="Amina"' in html and "Act now" in html
    assert count(db_session, Supporter) == 0


def test_home_lists_live_pages_only(client):
    ActionPageFactory(slug="live-one", title="Live page")
    ActionPageFactory(slug="draft-one", title="Draft page", status=PageStatus.DRAFT.value)
    html = client.get("/").get_data(as_text=True)
    assert "/a/live-one" in html and "/a/draft-one" not in html
