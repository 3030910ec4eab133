"""Security headers, friendly error pages (404, 405, 429, 500) and no third-party resources."""

from __future__ import annotations

import logging
import re
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from tests.conftest import csrf_token
from tests.factories import SupporterFactory

PUBLIC_PAGES = ("/", "/signup", "/privacy", "/staff/login")


@pytest.fixture
def token_path(app):  # type: ignore[no-untyped-def]
    from app.supporters.tokens import make_token

    person = SupporterFactory()
    return f"/u/{make_token(app.config['SECRET_KEY'], person.public_id)}"


def assert_friendly(response, code: int) -> str:  # type: ignore[no-untyped-def]
    """An HTML page of ours: no traceback, no debugger, no server internals."""
    assert response.status_code == code
    assert response.mimetype == "text/html"
    html = unescape(response.get_data(as_text=True))
    assert "<main" in html and "Go to the home page" in html
    for leak in ("Traceback", 'File "', "werkzeug", "Werkzeug", "sqlalchemy", "jinja2", "line "):
        assert leak not in html, leak
    return html


# --- headers ------------------------------------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def test_security_headers_on_every_kind_of_page(client, token_path):
    paths = [*PUBLIC_PAGES, token_path, f"{token_path}/one-click", "/no-such-page", "/healthz"]
    for path in paths:
        response = client.get(path)
        headers = response.headers
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        csp = csp_directives(headers["Content-Security-Policy"])
        assert csp["default-src"] == ["'self'"], path
        assert csp["frame-ancestors"] == ["'none'"], path
        assert csp["object-src"] == ["'none'"], path
        assert csp["base-uri"] == ["'none'"], path
        assert csp["form-action"] == ["'self'"], path
        for name, sources in csp.items():
            for source in sources:
                # Only keywords and data: images; never a host, a scheme wildcard or inline code.
                assert source in ("'self'", "'none'", "data:"), (path, name, source)
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        assert headers["Referrer-Policy"] in ("no-referrer", "same-origin"), path


def test_supporter_pages_keep_their_token_on_this_site(client, token_path):
    for path in (token_path, f"{token_path}/one-click", "/u/not-a-token"):
        response = client.get(path)
        # Same-origin: the token never goes to another site in a Referer header, while our
        # own forms still send the Referer that HTTPS CSRF checking requires.
        assert response.headers["Referrer-Policy"] == "same-origin", path
        assert response.headers["Cache-Control"] == "no-store", path
        # A <meta name="referrer"> would override the header in the browser.
        html = response.get_data(as_text=True)
        for meta in re.findall(r'<meta[^>]+name="referrer"[^>]*>', html):
            assert re.search(r'content="(no-referrer|same-origin)"', meta), (path, meta)


def test_preferences_forms_work_over_https(app, token_path):
    """A browser under our policy sends a same-origin Referer: the HTTPS CSRF check passes."""
    client = app.test_client()
    base = "https://localhost"
    html = client.get(token_path, base_url=base).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    response = client.post(
        token_path,
        base_url=base,
        data={"csrf_token": token, "action": "snooze", "days": "30"},
        headers={"Referer": f"{base}{token_path}"},
    )
    assert response.status_code == 303, response.get_data(as_text=True)[:500]


def test_no_page_weakens_the_referrer_policy_in_markup(client):
    for path in PUBLIC_PAGES:
        html = client.get(path).get_data(as_text=True)
        for meta in re.findall(r'<meta[^>]+name="referrer"[^>]*>', html):
            assert re.search(r'content="(no-referrer|same-origin)"', meta), (path, meta)


def test_session_cookie_is_httponly_and_lax(client):
    csrf_token(client, "/signup")  # a form page puts a CSRF token in the session
    response = client.get("/signup")
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert cookie.http_only
    assert cookie.same_site == "Lax"
    assert response.status_code == 200


# --- error pages -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/no-such-page", "/a/nothing-here", "/u/", "/staff/nope"])
def test_404_is_a_friendly_page(client, path):
    html = assert_friendly(client.get(path), 404)
    assert "We couldn't find that page" in html


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/privacy"), ("PUT", "/signup"), ("DELETE", "/"), ("POST", "/healthz")],
)
def test_405_is_a_friendly_page_that_says_what_is_allowed(client, method, path):
    response = client.open(path, method=method)
    html = assert_friendly(response, 405)
    assert "That didn't work" in html
    assert "GET" in response.headers["Allow"]


def test_413_is_a_friendly_page(client):
    body = "email=a%40example.org&first_name=" + "x" * (3 * 1024 * 1024)
    response = client.post("/signup", data=body, content_type="application/x-www-form-urlencoded")
    assert "That was too large" in assert_friendly(response, 413)


@pytest.fixture
def fresh_app(make_app):  # type: ignore[no-untyped-def]
    """An app of its own, to add throwaway routes before its first request."""
    built = []

    def build(**overrides):  # type: ignore[no-untyped-def]
        app = make_app(**overrides)
        built.append(app)
        return app

    yield build
    from app.extensions import db, limiter

    if limiter._storage is not None:
        limiter.reset()  # no hits left behind for other tests
    for app in built:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_a_view_that_raises_gets_the_friendly_500_page(fresh_app, caplog):
    app = fresh_app()

    from app.extensions import csrf

    @app.route("/boom", methods=["GET", "POST"])
    @csrf.exempt
    def boom() -> str:
        raise RuntimeError("database exploded while storing secret-kid@example.org")

    client = app.test_client()
    caplog.set_level(logging.DEBUG)
    for response in (
        client.get("/boom"),
        client.post("/boom", data={"email": "form-value@example.org", "first_name": "Zebedee"}),
    ):
        html = assert_friendly(response, 500)
        assert "Sorry, something went wrong on our side" in html
        assert "exploded" not in html and "secret-kid" not in html
    # Staff are told (the error is logged) but no form value or message reaches the log.
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    for secret in ("form-value@example.org", "Zebedee", "secret-kid"):
        assert secret not in logged
    assert "secret-kid" not in caplog.text


def test_rate_limit_on_signup_gets_the_friendly_429(fresh_app):
    app = fresh_app(RATELIMIT_ENABLED=True, SIGNUP_RATE_LIMIT="2 per minute")
    client = app.test_client()
    data = {"email": "not-an-email", "birth_year": "1980"}
    assert client.post("/signup", data=data).status_code == 422
    assert client.post("/signup", data=data).status_code == 422
    response = client.post("/signup", data=data)
    html = assert_friendly(response, 429)
    assert "Please slow down" in html
    assert "Retry-After" in response.headers
    # Only POST is limited: the person can still read the form.
    assert client.get("/signup").status_code == 200
    # Another address is not affected.
    other = client.post("/signup", data=data, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 422


def test_rate_limits_off_in_the_main_test_app(client):
    # The shared limiter must not leak a limit from an app built with limits on.
    for _ in range(12):
        assert client.post("/signup", data={"email": "x"}).status_code == 422


# --- nothing third-party ------------------------------------------------------------


class _Refs(HTMLParser):
    ATTRS = {"src", "href", "action", "srcset", "poster", "data", "formaction", "background"}

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in self.ATTRS and value is not None:
                for part in value.split(",") if name == "srcset" else [value]:
                    self.refs.append((tag, name, part.strip().split(" ")[0]))
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script" and not dict(attrs).get("src"):
            self.inline.append("<script>")


def test_pages_load_nothing_from_other_sites(app, client, token_path):
    own = urlsplit(app.config["BASE_URL"])
    for path in (*PUBLIC_PAGES, token_path, f"{token_path}/one-click"):
        response = client.get(path)
        assert response.status_code == 200, path
        parser = _Refs()
        parser.feed(response.get_data(as_text=True))
        assert parser.refs, path
        for tag, attr, url in parser.refs:
            parts = urlsplit(url)
            same_origin = not parts.scheme and not parts.netloc
            same_origin = same_origin or (parts.scheme == own.scheme and parts.netloc == own.netloc)
            assert same_origin, (path, tag, attr, url)
            assert not url.startswith("//"), (path, url)
        # The CSP forbids inline code and styles: none may be relied on.
        assert parser.inline == [], (path, parser.inline)


def test_stylesheet_loads_nothing_from_elsewhere(client):
    with client.get("/static/site.css") as response:
        css = response.get_data(as_text=True)
    assert "@import" not in css
    for url in re.findall(r"url\(([^)]*)\)", css):
        assert not re.match(r"""['"]?(https?:)?//""", url), url
