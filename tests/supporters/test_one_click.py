"""RFC 8058 one-click unsubscribe: a mail client POSTs `List-Unsubscribe=One-Click` with no
cookies and no CSRF token, and the person is unsubscribed at once."""

from __future__ import annotations

import pytest

from app.supporters.models import ConsentKind, SupporterStatus
from privacy import POLICY_VERSION
from tests.factories import SupporterFactory
from tests.supporters.conftest import ledger, page_text, token_for

BODY = "List-Unsubscribe=One-Click"


@pytest.fixture
def person(app):  # type: ignore[no-untyped-def]
    return SupporterFactory(email="mail-client@example.org")


@pytest.fixture
def url(app, person):  # type: ignore[no-untyped-def]
    return f"/u/{token_for(app, person)}/one-click"


@pytest.fixture
def mail_client(app):  # type: ignore[no-untyped-def]
    """What a mailbox provider's server is: no cookie jar, no session, no CSRF token."""
    return app.test_client(use_cookies=False)


def status_of(db_session, person) -> str:  # type: ignore[no-untyped-def]
    db_session.expire_all()
    return db_session.get(type(person), person.id).status


def post_urlencoded(mail_client, url: str, body: str = BODY):  # type: ignore[no-untyped-def]
    return mail_client.post(url, data=body, content_type="application/x-www-form-urlencoded")


def post_multipart(mail_client, url: str, value: str = "One-Click"):  # type: ignore[no-untyped-def]
    return mail_client.post(
        url, data={"List-Unsubscribe": value}, content_type="multipart/form-data"
    )


@pytest.mark.parametrize("post", [post_urlencoded, post_multipart])
def test_one_click_unsubscribes_at_once(mail_client, db_session, person, url, post):
    response = post(mail_client, url)
    assert response.status_code == 200  # not a redirect, not a confirmation step
    assert "You are unsubscribed" in page_text(response)
    assert status_of(db_session, person) == SupporterStatus.UNSUBSCRIBED
    [entry] = ledger(db_session, person.id)
    assert entry.kind == ConsentKind.UNSUBSCRIBE
    assert entry.policy_version == POLICY_VERSION
    assert "one-click" in entry.source
    # Nothing for a mail server to store, and nothing that could be cached.
    assert response.headers.getlist("Set-Cookie") == []
    assert response.headers["Cache-Control"] == "no-store"


def test_multipart_body_as_gmail_sends_it(mail_client, db_session, person, url):
    boundary = "----mailbox-provider"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        "One-Click\r\n"
        f"--{boundary}--\r\n"
    )
    response = mail_client.post(
        url, data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 200
    assert status_of(db_session, person) == SupporterStatus.UNSUBSCRIBED


def test_get_never_unsubscribes(mail_client, db_session, person, url):
    # Link scanners and previews fetch every URL in an email.
    for _ in range(3):
        response = mail_client.get(url)
        assert response.status_code == 200
        assert "Unsubscribe" in page_text(response)
    assert mail_client.head(url).status_code == 200
    assert status_of(db_session, person) == SupporterStatus.SUBSCRIBED
    assert ledger(db_session, person.id) == []


def test_the_page_button_sends_the_rfc_body(client, db_session, person, url):
    # A person who opens the link in a browser gets a button that posts the same body.
    html = client.get(url).get_data(as_text=True)
    assert 'name="List-Unsubscribe" value="One-Click"' in html
    assert client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert status_of(db_session, person) == SupporterStatus.UNSUBSCRIBED


@pytest.mark.parametrize(
    "body",
    ["", "List-Unsubscribe=Yes", "list-unsubscribe=one-click", "List-Unsubscribe=", "x=1"],
)
def test_wrong_body_is_refused_and_changes_nothing(mail_client, db_session, person, url, body):
    response = post_urlencoded(mail_client, url, body)
    assert response.status_code == 400
    assert status_of(db_session, person) == SupporterStatus.SUBSCRIBED
    assert ledger(db_session, person.id) == []


def test_wrong_multipart_value_is_refused(mail_client, db_session, person, url):
    assert post_multipart(mail_client, url, "Two-Clicks").status_code == 400
    assert status_of(db_session, person) == SupporterStatus.SUBSCRIBED


@pytest.mark.parametrize("token", ["nope", "IjAwMDAi.abc", "A" * 250])
def test_bad_token_is_404(app, mail_client, db_session, person, token):
    response = post_urlencoded(mail_client, f"/u/{token}/one-click")
    assert response.status_code == 404
    assert mail_client.get(f"/u/{token}/one-click").status_code == 404
    assert status_of(db_session, person) == SupporterStatus.SUBSCRIBED


def test_tampered_token_is_404(app, mail_client, db_session, person):
    token = token_for(app, person)
    tampered = token[:-2] + ("xx" if not token.endswith("xx") else "yy")
    assert post_urlencoded(mail_client, f"/u/{tampered}/one-click").status_code == 404
    assert status_of(db_session, person) == SupporterStatus.SUBSCRIBED


def test_repeated_posts_stay_200_and_record_once(mail_client, db_session, person, url):
    for _ in range(3):
        assert post_urlencoded(mail_client, url).status_code == 200
    assert status_of(db_session, person) == SupporterStatus.UNSUBSCRIBED
    assert [e.kind for e in ledger(db_session, person.id)] == [ConsentKind.UNSUBSCRIBE]


def test_one_click_ends_a_break_too(mail_client, db_session, person, url):
    from datetime import timedelta

    from app.timeutil import utcnow

    person.snoozed_until = utcnow() + timedelta(days=30)
    db_session.commit()
    assert post_urlencoded(mail_client, url).status_code == 200
    db_session.expire_all()
    again = db_session.get(type(person), person.id)
    assert again.status == SupporterStatus.UNSUBSCRIBED
    assert again.snoozed_until is None


def test_one_click_url_in_the_welcome_email_works(app, client, db_session, outbox):
    """End to end: the URL in the List-Unsubscribe header of a real email unsubscribes."""
    from tests.conftest import csrf_token
    from tests.supporters.conftest import adult_fields, supporters

    client.post("/signup", data=adult_fields() | {"csrf_token": csrf_token(client)})
    [sent] = outbox.entries()
    header = outbox.read(sent.name)["List-Unsubscribe"]
    target = header.split(",")[0].strip().strip("<>")
    assert target.startswith(app.config["BASE_URL"] + "/u/")
    path = target.removeprefix(app.config["BASE_URL"])
    response = post_urlencoded(app.test_client(use_cookies=False), path)
    assert response.status_code == 200
    [person] = supporters(db_session)
    assert person.status == SupporterStatus.UNSUBSCRIBED
