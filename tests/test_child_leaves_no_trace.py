"""Rule 3, end to end: a child who fills in the sign-up form leaves no trace anywhere.

Not in any table, not in any file under the instance directory (the SQLite
database and its WAL included, the outbox too), not in any log line at DEBUG,
not in a cookie. Pressing Back and typing an adult year changes nothing for a
day, in that browser; another browser is unaffected.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from flask import g
from sqlalchemy import func, select

from app.extensions import db
from app.timeutil import utcnow
from privacy.age_screen import SCREEN_COOKIE_NAME
from tests.conftest import csrf_token

YEAR = utcnow().year
ADULT_YEAR = str(YEAR - 40)
KIND_PAGE = "ask a parent or guardian"


@pytest.fixture
def all_logs(caplog):  # type: ignore[no-untyped-def]
    """caplog at DEBUG for every logger, including those configured quieter (alembic's
    logging config sets sqlalchemy.engine to WARN) or not propagating to the root."""
    attached = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        caplog.set_level(logging.DEBUG, logger=name)
        if not logger.propagate and caplog.handler not in logger.handlers:
            logger.addHandler(caplog.handler)
            attached.append(logger)
    yield caplog
    for logger in attached:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def kid() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {
        "email": f"kid-{tag}@example.org",
        "first_name": f"Kidfirst{tag[:10]}",
        "last_name": f"Kidlast{tag[10:20]}",
        "postal_code": f"KP{tag[20:26]}",
        "country": "GB",
    }


def traces(person: dict[str, str]) -> list[str]:
    """Every string that would betray the person, as stored or logged in any case."""
    values = [person["email"], person["email"].split("@")[0]]
    values += [person["first_name"], person["last_name"], person["postal_code"]]
    return sorted({v for value in values for v in (value, value.lower(), value.upper())})


def table_dump() -> str:
    """Every row of every table, as text."""
    lines = []
    with db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def row_counts() -> dict[str, int]:
    with db.engine.connect() as conn:
        return {
            t.name: conn.scalar(select(func.count()).select_from(t)) or 0
            for t in db.metadata.sorted_tables
        }


def instance_bytes(instance_dir: Path) -> list[tuple[Path, bytes]]:
    """Every file under the instance directory, read raw (SQLite pages and WAL included).

    Read by a child process: closing any descriptor of a SQLite file in this
    process would drop the POSIX locks SQLite holds on it here, and a later
    write would fail with "disk I/O error".
    """
    found = []
    for root, _dirs, files in os.walk(instance_dir):
        for name in files:
            path = Path(root) / name
            result = subprocess.run(["cat", "--", str(path)], capture_output=True, check=False)
            if result.returncode == 0:  # else removed while walking (SQLite journal)
                found.append((path, result.stdout))
    return found


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


def session_contents(app, client) -> dict:  # type: ignore[no-untyped-def]
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    if cookie is None:
        return {}
    data = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    assert isinstance(data, dict)
    return data


def assert_no_trace(app, client, caplog, instance_dir, person, responses) -> None:  # type: ignore[no-untyped-def]
    needles = traces(person)

    dump = table_dump()
    for needle in needles:
        assert needle not in dump, f"{needle!r} is in the database"

    for path, content in instance_bytes(Path(instance_dir)):
        for needle in needles:
            assert needle.encode() not in content, f"{needle!r} is in {path}"
            assert needle.encode("utf-16-le") not in content, f"{needle!r} is in {path}"

    logged = log_text(caplog)
    for needle in needles:
        assert needle not in logged, f"{needle!r} is in the logs"

    for response in responses:
        for header in response.headers.getlist("Set-Cookie"):
            for needle in needles:
                assert needle not in header
        for needle in needles:
            assert needle not in response.get_data(as_text=True), "echoed back to the browser"

    session = session_contents(app, client)
    assert set(session) <= {"csrf_token"}, session
    for needle in needles:
        assert needle not in repr(session)
    for cookie_name in (app.config["SESSION_COOKIE_NAME"], SCREEN_COOKIE_NAME):
        cookie = client.get_cookie(cookie_name)
        if cookie is not None:
            for needle in needles:
                assert needle not in cookie.value


def assert_kind_page(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert KIND_PAGE in html
    assert 'name="email"' not in html  # no form to try again with
    assert response.headers["Cache-Control"] == "no-store"


def assert_only_the_flag_cookie(response) -> None:  # type: ignore[no-untyped-def]
    cookies = response.headers.getlist("Set-Cookie")
    assert len(cookies) == 1, cookies
    first, *attributes = [part.strip() for part in cookies[0].split(";")]
    assert first == f"{SCREEN_COOKIE_NAME}=1"
    assert "HttpOnly" in attributes
    assert "Max-Age=86400" in attributes
    assert "SameSite=Lax" in attributes


def submit(client, fields: dict[str, str], birth_year: str, token: str | None):  # type: ignore[no-untyped-def]
    data = {**fields, "birth_year": birth_year}
    if token is not None:
        data["csrf_token"] = token
    return client.post("/signup", data=data)


@pytest.mark.parametrize("age", [10, 14], ids=["ten-years-ago", "boundary-year"])
@pytest.mark.parametrize("visited_form_first", [True, False], ids=["from-form", "direct-post"])
def test_child_leaves_no_trace(
    app, client, all_logs, instance_dir, outbox, kid, age, visited_form_first
):
    counts_before = row_counts()
    assert all(n == 0 for n in counts_before.values())

    token = csrf_token(client, "/signup") if visited_form_first else None
    response = submit(client, kid, str(YEAR - age), token)
    assert_kind_page(response)
    assert_only_the_flag_cookie(response)

    # Back, change the year to an adult's, submit again; reload the form and the home page.
    retry = submit(client, kid, ADULT_YEAR, token)
    assert_kind_page(retry)
    assert_only_the_flag_cookie(retry)
    again = [retry, client.get("/signup"), client.get("/"), client.post("/", data=kid)]
    for page in again[1:3]:
        assert_kind_page(page)
    home_form = client.post("/signup", data={**kid, "birth_year": ADULT_YEAR, "from_home": "1"})
    assert_kind_page(home_form)

    assert row_counts() == counts_before
    assert outbox.entries() == []
    assert_no_trace(app, client, all_logs, instance_dir, kid, [response, *again, home_form])


def _bad_email(kid: dict[str, str]) -> dict[str, str]:
    return {"email": kid["email"].replace("@", "@@")}  # would re-show the form, echoing it


def _typo_domain(kid: dict[str, str]) -> dict[str, str]:
    return {"email": kid["email"].split("@")[0] + "@gmial.com"}  # would ask "did you mean"


def _bad_country(kid: dict[str, str]) -> dict[str, str]:
    return {"country": "XX"}


def _long_name(kid: dict[str, str]) -> dict[str, str]:
    return {"first_name": kid["first_name"] * 20}


@pytest.mark.parametrize("trouble", [_bad_email, _typo_domain, _bad_country, _long_name])
def test_child_is_screened_before_any_validation(app, client, all_logs, instance_dir, kid, trouble):
    person = {**kid, **trouble(kid)}
    response = submit(client, person, str(YEAR - 12), csrf_token(client, "/signup"))
    assert_kind_page(response)
    assert all(n == 0 for n in row_counts().values())
    assert_no_trace(app, client, all_logs, instance_dir, person, [response])


def test_child_without_a_csrf_token_is_screened_too(app, client, all_logs, instance_dir, kid):
    response = submit(client, kid, str(YEAR - 9), "stale-token")
    assert_kind_page(response)
    assert_only_the_flag_cookie(response)
    assert_no_trace(app, client, all_logs, instance_dir, kid, [response])


def test_another_browser_can_still_sign_up(app, client, all_logs, instance_dir, outbox, kid):
    assert_kind_page(submit(client, kid, str(YEAR - 10), csrf_token(client, "/signup")))

    other = app.test_client()  # no cookie
    # The `app` fixture keeps one app context (so one `g`) across requests; a real
    # request has its own, so drop the CSRF token Flask-WTF cached there for `client`.
    g.pop("csrf_token", None)
    adult = {
        "email": f"adult-{uuid.uuid4().hex}@example.org",
        "first_name": f"Grown{uuid.uuid4().hex[:8]}",
        "last_name": "Up",
        "postal_code": "10001",
        "country": "US",
    }
    response = submit(other, adult, ADULT_YEAR, csrf_token(other, "/signup"))
    assert response.status_code == 200
    assert "Thank you" in response.get_data(as_text=True)
    assert other.get_cookie(SCREEN_COOKIE_NAME) is None

    # The checks above would have seen a leak: the adult's details are in each place.
    assert adult["email"] in table_dump()
    assert adult["email"] in log_text(all_logs)  # SQL parameters are logged at this level
    assert any(adult["email"].encode() in content for _, content in instance_bytes(instance_dir))
    assert len(outbox.entries()) == 1

    # And the child's are still nowhere.
    assert_no_trace(app, client, all_logs, instance_dir, kid, [])


def test_screened_browser_sees_the_kind_page_for_a_day_only(client, kid):
    response = submit(client, kid, str(YEAR - 10), csrf_token(client, "/signup"))
    cookie = client.get_cookie(SCREEN_COOKIE_NAME)
    assert cookie is not None and cookie.value == "1"
    assert cookie.max_age == 24 * 3600 or "Max-Age=86400" in response.headers["Set-Cookie"]
    # Once the flag is gone (a day later), the form is there again.
    client.delete_cookie(SCREEN_COOKIE_NAME)
    assert 'name="email"' in client.get("/signup").get_data(as_text=True)


def test_kind_page_names_no_age(client, kid):
    import re

    response = submit(client, kid, str(YEAR - 10), csrf_token(client, "/signup"))
    html = response.get_data(as_text=True)
    main = re.search(r"<main\b.*?</main>", html, re.S).group(0)
    text = re.sub(r"<[^>]+>", " ", main)
    assert not re.search(r"\d", text), text
    assert not re.search(r"\b(age|aged|old|older|under|years?)\b", text, re.I), text
