"""Pre-send checks: links (own action pages in the database, others over HTTP to a local
server only), alt text, Gmail's clipping size, unknown merge fields, empty segments."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.actions.models import PageStatus
from app.extensions import db
from app.mailings import checks, pipeline
from app.mailings.checks import ERROR, HINT, WARNING
from app.mailings.models import Mailing
from app.supporters.models import Segment
from app.timeutil import utcnow
from tests.factories import ActionPageFactory, SupporterFactory


class _Site(BaseHTTPRequestHandler):
    """/ok answers 200; /head-refused refuses HEAD but answers GET; anything else is 404."""

    seen: list[tuple[str, str]] = []

    def _answer(self, with_body: bool) -> None:
        self.seen.append((self.command, self.path))
        if self.path == "/ok" or (self.path == "/head-refused" and self.command == "GET"):
            status = 200
        elif self.path == "/head-refused":
            status = 405
        elif self.path == "/down":
            status = 503
        else:
            status = 404
        self.send_response(status)
        self.send_header("Content-Length", "2" if with_body else "0")
        self.end_headers()
        if with_body:
            self.wfile.write(b"ok")

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    _Site.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def mailing(body: str, **fields) -> Mailing:  # type: ignore[no-untyped-def]
    made = pipeline.create_mailing(
        db.session,
        subject=fields.pop("subject", "Hello"),
        body_md=body,
        now=utcnow(),
        preheader=fields.pop("preheader", "A short line"),
        **fields,
    )
    db.session.commit()
    return made


def run(identity, made: Mailing, external: bool = True) -> list[checks.Finding]:  # type: ignore[no-untyped-def]
    return checks.run_checks(db.session, made, identity, utcnow(), external_links=external)


def messages(findings: list[checks.Finding], level: str) -> str:
    return " | ".join(f.message for f in findings if f.level == level)


def test_a_clean_mailing_passes(app, identity, site):
    SupporterFactory()
    page = ActionPageFactory(slug="river")
    made = mailing(f"[Sign]({identity.base_url}/a/{page.slug}) and [read]({site}/ok).")
    assert run(identity, made) == []


def test_external_links_are_checked_with_head_then_get(app, identity, site):
    SupporterFactory()
    made = mailing(
        f"[a]({site}/ok) [b]({site}/gone) [c]({site}/head-refused) [d]({site}/down) "
        "[e](http://127.0.0.1:9/closed-port)"
    )
    findings = run(identity, made)

    errors, warnings = messages(findings, ERROR), messages(findings, WARNING)
    assert f"{site}/gone is broken" in errors
    assert f"{site}/down answered with an error (503)" in warnings
    assert "127.0.0.1:9/closed-port could not be reached" in warnings
    assert "/ok" not in errors + warnings and "head-refused" not in errors + warnings
    assert ("HEAD", "/head-refused") in _Site.seen and ("GET", "/head-refused") in _Site.seen
    assert ("GET", "/ok") not in _Site.seen  # HEAD was enough


def test_the_setting_turns_the_network_part_off(app, identity, site):
    SupporterFactory()
    made = mailing(f"[b]({site}/gone)")
    assert run(identity, made, external=False) == []
    assert _Site.seen == []


def test_own_action_page_links_must_be_live_pages(app, identity):
    SupporterFactory()
    ActionPageFactory(slug="live-one")
    ActionPageFactory(slug="draft-one", status=PageStatus.DRAFT.value)
    ActionPageFactory(slug="closed-one", status=PageStatus.CLOSED.value)
    base = identity.base_url
    made = mailing(
        f"[1]({base}/a/live-one) [2]({base}/a/draft-one) [3]({base}/a/closed-one) "
        f"[4]({base}/a/never-made)"
    )
    errors = messages(run(identity, made, external=False), ERROR)
    assert "/a/draft-one goes to an action page that is draft" in errors
    assert "/a/closed-one goes to an action page that is closed" in errors
    assert "/a/never-made goes to an action page that does not exist" in errors
    assert "live-one" not in errors


def test_images_without_alt_text_are_a_warning(app, identity):
    SupporterFactory()
    made = mailing(
        '<p><img src="http://localhost/static/a.png" alt="A river at dawn">'
        '<img src="http://localhost/static/b.png">'
        '<img src="http://localhost/static/c.png" alt=" "></p>',
        body_format="html",
    )
    warnings = messages(run(identity, made, external=False), WARNING)
    assert "2 image(s) have no alt text" in warnings
    assert "b.png" in warnings and "c.png" in warnings and "a.png" not in warnings


def test_an_email_gmail_would_clip_is_a_warning(app, identity):
    SupporterFactory()
    small = mailing("Short and sweet.")
    assert messages(run(identity, small, external=False), WARNING) == ""
    huge = mailing("\n\n".join("word " * 50 for _ in range(500)))
    assert "Gmail cuts off emails over 102 KB" in messages(run(identity, huge, False), WARNING)


def test_unknown_merge_fields_are_errors(app, identity):
    SupporterFactory()
    made = mailing(
        'Hi {{ frist_name }} and {{ first_name | default("friend") }}',
        subject="For {{ last_nme }}",
    )
    errors = messages(run(identity, made, external=False), ERROR)
    assert "{{ frist_name }}" in errors and "{{ last_nme }}" in errors
    assert 'default("friend") }},' not in errors.split("available")[0]


def test_an_empty_segment_is_an_error_and_a_missing_preheader_a_hint(app, identity):
    nobody = mailing("Hello", preheader="")
    findings = run(identity, nobody, external=False)
    assert "Nobody would get this mailing" in messages(findings, ERROR)
    assert "no preheader" in messages(findings, HINT)
    assert checks.blocking(findings)

    SupporterFactory()
    segment = Segment(name="Everyone", definition={})
    db.session.add(segment)
    db.session.commit()
    someone = mailing("Hello", segment_id=segment.id)
    assert not checks.blocking(run(identity, someone, external=False))


def test_a_body_the_seal_refuses_is_an_error_not_a_crash(app, identity):
    SupporterFactory()
    made = mailing("Hello")
    no_address = dataclasses.replace(identity, postal_address="")
    findings = run(no_address, made, external=False)
    assert checks.blocking(findings)
    assert findings[0].message.startswith("The email cannot go out as it is")
