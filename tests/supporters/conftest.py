"""Helpers for the public supporter flows: a valid sign-up, a supporter's own link, the ledger."""

from __future__ import annotations

import re
from html import unescape

import pytest
from flask import g
from sqlalchemy import func, select

from app.supporters.models import ConsentEvent, Supporter
from app.supporters.tokens import make_token
from app.timeutil import utcnow
from tests.conftest import csrf_token

ADULT_YEAR = str(utcnow().year - 40)


def adult_fields(**changes: str | None) -> dict[str, str]:
    """Sign-up form values a real adult would send; None drops a field."""
    values: dict[str, str | None] = {
        "email": "ada@example.org",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "postal_code": "N1 9GU",
        "country": "GB",
        "birth_year": ADULT_YEAR,
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


@pytest.fixture
def post_signup(client):  # type: ignore[no-untyped-def]
    """POST /signup as a browser would: the page first, then the form with its CSRF token."""

    def post(path: str = "/signup", with_token: bool = True, **changes: str | None):  # type: ignore[no-untyped-def]
        data = adult_fields(**changes)
        if with_token:
            data["csrf_token"] = csrf_token(client, "/signup")
        return client.post(path, data=data)

    return post


def forget_request_globals() -> None:
    """Start the next request with an empty `g`, as a real request does.

    The `app` fixture keeps one app context pushed for the whole test, and test-client
    requests reuse it, so `g` (where Flask-WTF caches the CSRF token) outlives a request.
    Tests that switch browsers or sessions call this between requests.
    """
    g.pop("csrf_token", None)
    g.pop("_login_user", None)


def supporters(db_session) -> list[Supporter]:  # type: ignore[no-untyped-def]
    db_session.expire_all()
    return list(db_session.scalars(select(Supporter).order_by(Supporter.id)))


def supporter_count(db_session) -> int:  # type: ignore[no-untyped-def]
    return db_session.scalar(select(func.count()).select_from(Supporter)) or 0


def ledger(db_session, supporter_id: int) -> list[ConsentEvent]:  # type: ignore[no-untyped-def]
    db_session.expire_all()
    return list(
        db_session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.supporter_id == supporter_id)
            .order_by(ConsentEvent.id)
        )
    )


def token_for(app, supporter: Supporter) -> str:  # type: ignore[no-untyped-def]
    return make_token(app.config["SECRET_KEY"], supporter.public_id)


def page_text(response) -> str:  # type: ignore[no-untyped-def]
    """The visible text of a page's <main>, entities decoded and whitespace collapsed."""
    html = response.get_data(as_text=True)
    main = re.search(r"<main\b.*?</main>", html, re.S)
    assert main, "no <main> on the page"
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", main.group(0))).split())


def input_value(response, name: str) -> str | None:  # type: ignore[no-untyped-def]
    """The value of the named <input> as rendered, or None when there is no such input."""
    html = response.get_data(as_text=True)
    for tag in re.findall(r"<input\b[^>]*>", html):
        if re.search(rf'\bname="{re.escape(name)}"', tag):
            value = re.search(r'\bvalue="([^"]*)"', tag)
            return unescape(value.group(1)) if value else ""
    return None


def selected_option(response, name: str) -> str | None:  # type: ignore[no-untyped-def]
    html = response.get_data(as_text=True)
    select_html = re.search(rf'<select\b[^>]*name="{name}".*?</select>', html, re.S)
    assert select_html, f"no <select name={name}>"
    chosen = re.search(r'<option\b[^>]*\bselected\b[^>]*value="([^"]*)"', select_html.group(0))
    chosen = chosen or re.search(
        r'<option\b[^>]*value="([^"]*)"[^>]*\bselected\b', select_html.group(0)
    )
    return chosen.group(1) if chosen else None
