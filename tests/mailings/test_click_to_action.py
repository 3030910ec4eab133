"""A click on an action-page link in a mailing: the page knows the reader, credits the mailing."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from app.actions.models import Action
from app.extensions import db
from app.mailings import tracking
from app.mailings.models import Delivery, Mailing
from app.supporters.models import Supporter
from app.supporters.tokens import read_token
from tests.factories import ActionPageFactory
from tests.mailings.test_tracking import click_path, events, make_delivery

# BASE_URL in the tests is http://localhost.
PAGE = "http://localhost/a/save-the-river?src=email#sign"
ELSEWHERE = "https://example.org/report?t=theirs&mid=1"
STALE = "http://localhost/a/save-the-river?t=stale&mid=999&src=old"
LOOKALIKES = [
    "http://localhost.evil.example/a/save-the-river",
    "http://localhost:8080/a/save-the-river",
    "https://localhost/a/save-the-river",
    "http://localhost/about",
    "http://localhost/a/",
]


@pytest.fixture(autouse=True)
def _fresh_link_cache(app):  # type: ignore[no-untyped-def]
    tracking.clear_link_cache()
    yield
    tracking.clear_link_cache()


def _reader(delivery: Delivery) -> Supporter:
    return db.session.get(Supporter, delivery.supporter_id)


def _form(page_html: str) -> tuple[str, str]:
    """The action form's target and CSRF token, as a browser would read them."""
    action = re.search(r'<form method="post" action="([^"]+)"', page_html)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page_html)
    assert action and token
    return html.unescape(action.group(1)), token.group(1)


def test_click_then_page_then_action_credits_the_mailing(app, client) -> None:  # type: ignore[no-untyped-def]
    page = ActionPageFactory(slug="save-the-river")
    delivery = make_delivery(links=[PAGE])
    reader = _reader(delivery)

    response = client.get(click_path(app, delivery, 0))
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == (
        "http",
        "localhost",
        f"/a/{page.slug}",
    )
    assert location.fragment == "sign"
    query = parse_qs(location.query)
    assert query["src"] == ["email"] and query["mid"] == [str(delivery.mailing_id)]
    assert read_token(app.config["SECRET_KEY"], query["t"][0]) == reader.public_id
    assert [(e.kind, e.link_position) for e in events()] == [("click", 0)]

    # The page recognises the reader: nothing to fill in, just confirm.
    landed = client.get(f"{location.path}?{location.query}")
    assert landed.status_code == 200
    page_html = landed.get_data(as_text=True)
    assert 'name="email"' not in page_html
    target, csrf = _form(page_html)
    assert "mid=" in target  # the form posts back to the URL that carries the attribution
    done = client.post(target, data={"csrf_token": csrf, "t": query["t"][0]})
    assert done.status_code == 303

    action = db.session.scalar(select(Action).where(Action.page_id == page.id))
    assert (action.supporter_id, action.mailing_id, action.source) == (
        reader.id,
        delivery.mailing_id,
        "mailing",
    )


def test_other_sites_get_exactly_the_stored_link(app, client) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery(links=[ELSEWHERE, *LOOKALIKES])
    for position, url in enumerate([ELSEWHERE, *LOOKALIKES]):
        response = client.get(click_path(app, delivery, position))
        assert response.status_code == 302
        assert response.headers["Location"] == url  # never our reader's token elsewhere
    assert len(events()) == 1 + len(LOOKALIKES)


def test_existing_token_and_mailing_id_are_replaced(app, client) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery(links=[STALE])
    location = urlsplit(client.get(click_path(app, delivery, 0)).headers["Location"])
    query = parse_qs(location.query)
    assert query["mid"] == [str(delivery.mailing_id)] and query["src"] == ["old"]
    assert read_token(app.config["SECRET_KEY"], query["t"][0]) == _reader(delivery).public_id


def test_reader_lookup_failing_gives_the_plain_link_and_keeps_the_click(
    app, client, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery(links=[PAGE])

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(tracking, "reader_token", broken)
    response = client.get(click_path(app, delivery, 0))
    assert response.status_code == 302 and response.headers["Location"] == PAGE
    assert [(e.kind, e.link_position) for e in events()] == [("click", 0)]


def test_a_crossed_token_gets_no_reader(app, client) -> None:  # type: ignore[no-untyped-def]
    """A signed token naming another mailing than the delivery's: the plain link only."""
    delivery = make_delivery(links=[PAGE])
    other = make_delivery(links=[PAGE])
    crossed = tracking.make_click_token(app.config["SECRET_KEY"], delivery.id, other.mailing_id, 0)
    response = client.get(f"/c/{crossed}")
    assert response.status_code == 302 and response.headers["Location"] == PAGE


def test_links_of_a_draft_are_not_cached(app, client) -> None:  # type: ignore[no-untyped-def]
    """A draft's links may still change (test sends are clicked): only sent ones are kept."""
    delivery = make_delivery(links=["https://example.org/first"])
    mailing = db.session.get(Mailing, delivery.mailing_id)
    mailing.status = "draft"
    db.session.commit()
    assert client.get(click_path(app, delivery, 0)).headers["Location"] == (
        "https://example.org/first"
    )
    assert tracking.cached_link_url(mailing.id, 0) is None
    mailing.status = "sent"
    db.session.commit()
    client.get(click_path(app, delivery, 0))
    assert tracking.cached_link_url(mailing.id, 0) == "https://example.org/first"


def test_action_page_recognition() -> None:
    base = "https://act.example.org"
    assert tracking.is_action_page("https://act.example.org/a/x", base)
    assert tracking.is_action_page("https://ACT.example.org/a/x/embed?y=1", base)
    assert not tracking.is_action_page("https://act.example.org/a/", base)
    assert not tracking.is_action_page("https://act.example.org/about/a/x", base)
    assert not tracking.is_action_page("http://act.example.org/a/x", base)
    assert not tracking.is_action_page("https://act.example.org.evil.example/a/x", base)
    assert tracking.with_reader("https://h/a/x?b=2&t=old#f", "TOK", 5) == (
        "https://h/a/x?b=2&t=TOK&mid=5#f"
    )
