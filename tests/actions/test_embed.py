"""Embeds: /a/<slug>/embed may be framed by other sites; nothing else may."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from werkzeug.serving import make_server

from app.timeutil import utcnow
from tests.browser.conftest import CHROMIUM, LAUNCH_ARGS
from tests.factories import ActionPageFactory
from tests.test_security import csp_directives


def test_the_embed_can_be_framed_and_links_to_the_full_page(client):
    ActionPageFactory(slug="protect", title="Protect civilians", goal=200)
    response = client.get("/a/protect/embed")
    html = unescape(response.get_data(as_text=True))
    assert response.status_code == 200
    assert "X-Frame-Options" not in response.headers
    csp = csp_directives(response.headers["Content-Security-Policy"])
    assert csp["frame-ancestors"] == ["*"]
    # Everything else in the policy stays as strict as on every other page.
    assert csp["script-src"] == ["'self'"] and csp["default-src"] == ["'self'"]
    assert csp["form-action"] == ["'self'"] and csp["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]

    assert "Protect civilians" in html
    assert "<strong>0</strong> people have taken part · goal 200" in html
    link = re.search(r'<a class="button" href="([^"]+)" target="_top">', html)
    assert link and link.group(1) == "/a/protect?utm_medium=embed"
    # A card, not a form: nothing personal is typed inside someone else's page.
    assert "<form" not in html and "csrf_token" not in html
    assert 'class="site-header"' not in html and 'class="site-footer"' not in html
    assert '<script src="/static/embed.js" defer></script>' in html
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("path", ["/a/protect", "/", "/signup", "/a/protect/thanks/x"])
def test_every_other_page_still_refuses_to_be_framed(client, path):
    ActionPageFactory(slug="protect")
    response = client.get(path)
    assert response.headers["X-Frame-Options"] == "DENY", path
    csp = csp_directives(response.headers["Content-Security-Policy"])
    assert csp["frame-ancestors"] == ["'none'"], path


def test_embed_of_a_draft_is_a_404_that_cannot_be_framed(client):
    ActionPageFactory(slug="hidden", status="draft")
    response = client.get("/a/hidden/embed")
    assert response.status_code == 404
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert client.get("/a/no-such-page/embed").status_code == 404


def test_campaign_parameters_on_the_iframe_are_passed_on(client):
    ActionPageFactory(slug="protect")
    html = unescape(
        client.get(
            "/a/protect/embed?utm_source=partner&utm_campaign=spring&utm_medium=web&x=1"
        ).get_data(as_text=True)
    )
    link = re.search(r'<a class="button" href="([^"]+)" target="_top">', html)
    assert link
    assert link.group(1) == ("/a/protect?utm_source=partner&utm_medium=embed&utm_campaign=spring")


def test_a_closed_embed_offers_the_next_action(client):
    following = ActionPageFactory(slug="next-step", title="Call your senator")
    ActionPageFactory(
        slug="ended", next_page_id=following.id, close_at=utcnow() - timedelta(hours=1)
    )
    html = unescape(client.get("/a/ended/embed").get_data(as_text=True))
    assert "This action has closed" in html
    assert 'href="/a/next-step?utm_medium=embed" target="_top">Call your senator' in html


def test_embed_script_is_served_from_our_own_origin(client):
    with client.get("/static/embed.js") as response:
        assert response.status_code == 200
        assert response.mimetype in ("text/javascript", "application/javascript")
        script = response.get_data(as_text=True)
    assert 'type: "groundswell:height"' in script
    assert "window.parent.postMessage" in script
    assert 'addEventListener("resize"' in script and 'addEventListener("load"' in script
    # It loads nothing and talks to no one else.
    assert "http" not in script and "fetch(" not in script and "XMLHttpRequest" not in script


def test_frame_ancestors_can_be_limited_to_named_sites(make_app, app):
    ActionPageFactory(slug="partners-only")
    other = make_app(EMBED_FRAME_ANCESTORS="https://partner.example https://ally.example")
    client = other.test_client()
    response = client.get("/a/partners-only/embed")
    assert response.status_code == 200
    csp = csp_directives(response.headers["Content-Security-Policy"])
    assert csp["frame-ancestors"] == ["https://partner.example", "https://ally.example"]
    assert client.get("/a/partners-only").headers["X-Frame-Options"] == "DENY"


# --- in a real browser, framed by another origin ----------------------------------------------


PARTNER_PAGE = """<!doctype html>
<meta name="viewport" content="width=device-width">
<p>A partner's article about the campaign.</p>
<iframe id="card" src="{src}" title="Take action" style="width:100%;border:0" height="40"></iframe>
<script>
window.heights = [];
window.addEventListener("message", function (e) {{
  if (e.data && e.data.type === "groundswell:height") {{
    window.heights.push(e.data.height);
    document.getElementById("card").height = e.data.height;
  }}
}});
</script>"""


@pytest.fixture
def partner_site() -> Iterator[Callable[[str], str]]:
    """Another origin (localhost on its own port) serving a page that frames `src`."""
    pages: dict[str, str] = {}

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = pages.get("html", "").encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def host(src: str) -> str:
        pages["html"] = PARTNER_PAGE.format(src=src)
        return f"http://localhost:{server.server_port}/"

    try:
        yield host
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.mark.browser
def test_another_site_frames_the_embed_which_reports_its_height(live_server, partner_site):
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    ActionPageFactory(slug="framed", title="Protect civilians", goal=100)
    partner = partner_site(f"{live_server.url}/a/framed/embed?utm_source=partner")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            errors: list[str] = []
            # As in tests/browser/conftest.py: "Failed to load resource" console lines are
            # left to the response check below, which ignores only the partner's favicon.
            page.on(
                "console",
                lambda m: (
                    errors.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.on(
                "response",
                lambda r: (
                    errors.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico")
                    else None
                ),
            )
            page.goto(partner)
            frame = page.frame_locator("#card")
            frame.get_by_role("heading", name="Protect civilians").wait_for()
            page.wait_for_function("window.heights.length > 0")
            height = int(page.eval_on_selector("#card", "f => f.height"))
            assert height > 150  # the card's own height, told to the parent
            frame.get_by_role("link", name="Sign the petition").click()
            page.wait_for_url(f"{live_server.url}/a/framed?**")
            assert page.url.endswith("/a/framed?utm_source=partner&utm_medium=embed")
            assert errors == []
        finally:
            browser.close()
