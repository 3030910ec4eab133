"""The supporter's own page /u/<token>: unsubscribe, take a break, come back, fix a name; every
consent change in the ledger; tokens that reveal nothing, cannot be forged and never expire."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import pytest
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from app.supporters import tokens
from app.supporters.models import ConsentKind, SupporterStatus
from app.supporters.tokens import make_token, read_token
from app.timeutil import utcnow
from privacy import POLICY_VERSION
from privacy.seal import Recipient, SkipReason, skip_reason
from tests.conftest import csrf_token
from tests.factories import SupporterFactory
from tests.supporters.conftest import input_value, ledger, page_text, token_for


@pytest.fixture
def person(app):  # type: ignore[no-untyped-def]
    return SupporterFactory(
        email="grace.hopper@example.org", first_name="Grace", last_name="Hopper"
    )


@pytest.fixture
def page(app, person):  # type: ignore[no-untyped-def]
    return f"/u/{token_for(app, person)}"


def press(client, page: str, **fields: str):  # type: ignore[no-untyped-def]
    """Press one of the page's buttons, with the page's own CSRF token."""
    return client.post(page, data={"csrf_token": csrf_token(client, page), **fields})


def refreshed(db_session, person):  # type: ignore[no-untyped-def]
    db_session.expire_all()
    return db_session.get(type(person), person.id)


def test_page_shows_the_settings(client, page, person):
    response = client.get(page)
    assert response.status_code == 200
    text = page_text(response)
    assert "grace.hopper@example.org" in text
    assert "receiving our email" in text
    assert input_value(response, "first_name") == "Grace"
    for days in (30, 60, 90):
        assert f"Pause for {days} days" in text
    assert response.headers["Cache-Control"] == "no-store"


def test_unsubscribe(client, db_session, page, person):
    response = press(client, page, action="unsubscribe")
    assert response.status_code == 303
    assert refreshed(db_session, person).status == SupporterStatus.UNSUBSCRIBED
    [entry] = ledger(db_session, person.id)
    assert entry.kind == ConsentKind.UNSUBSCRIBE
    assert entry.policy_version == POLICY_VERSION
    assert entry.source == "preferences page"

    shown = client.get(response.headers["Location"])
    assert "You are unsubscribed" in page_text(shown)
    assert "not receiving our email" in page_text(shown)
    # The recipient check the mail pipeline uses agrees at once.
    person = refreshed(db_session, person)
    recipient = Recipient(person.email, person.status, person.snoozed_until)
    assert skip_reason(recipient, utcnow()) is SkipReason.UNSUBSCRIBED


@pytest.mark.parametrize("days", [30, 60, 90])
def test_snooze(client, db_session, page, person, days):
    before = utcnow()
    response = press(client, page, action="snooze", days=str(days))
    assert response.status_code == 303
    person = refreshed(db_session, person)
    assert person.status == SupporterStatus.SUBSCRIBED
    assert person.snoozed_until is not None
    assert before + timedelta(days=days) <= person.snoozed_until
    assert person.snoozed_until <= utcnow() + timedelta(days=days)
    [entry] = ledger(db_session, person.id)
    assert entry.kind == ConsentKind.SNOOZE
    assert entry.policy_version == POLICY_VERSION
    assert str(days) in entry.detail

    shown = page_text(client.get(response.headers["Location"]))
    assert "Enjoy the break" in shown
    assert person.snoozed_until.strftime("%B %Y") in shown


@pytest.mark.parametrize("days", ["45", "0", "-30", "1000", "thirty", "30.0", ""])
def test_forged_snooze_length_is_refused(client, db_session, page, person, days):
    response = press(client, page, action="snooze", days=days)
    assert response.status_code == 422
    assert "Please choose a break of 30, 60 or 90 days." in page_text(response)
    person = refreshed(db_session, person)
    assert person.snoozed_until is None
    assert ledger(db_session, person.id) == []


def test_unknown_action_is_refused(client, db_session, page, person):
    response = press(client, page, action="delete-everything")
    assert response.status_code == 422
    assert "Please choose one of the buttons" in page_text(response)
    assert refreshed(db_session, person).status == SupporterStatus.SUBSCRIBED
    assert ledger(db_session, person.id) == []


def test_snoozed_supporter_ends_the_break(client, db_session, page, person):
    press(client, page, action="snooze", days="60")
    shown = page_text(client.get(page))
    assert "taking a break until" in shown
    assert "End the break" in shown

    response = press(client, page, action="resubscribe")
    assert response.status_code == 303
    person = refreshed(db_session, person)
    assert person.snoozed_until is None
    assert [e.kind for e in ledger(db_session, person.id)] == [
        ConsentKind.SNOOZE,
        ConsentKind.RESUBSCRIBE,
    ]


def test_unsubscribe_during_a_break(client, db_session, page, person):
    press(client, page, action="snooze", days="30")
    assert press(client, page, action="unsubscribe").status_code == 303
    person = refreshed(db_session, person)
    assert person.status == SupporterStatus.UNSUBSCRIBED
    assert person.snoozed_until is None


def test_resubscribe_after_unsubscribe(client, db_session, page, person):
    press(client, page, action="unsubscribe")
    response = press(client, page, action="resubscribe")
    assert response.status_code == 303
    assert "Welcome back" in page_text(client.get(response.headers["Location"]))
    person = refreshed(db_session, person)
    assert person.status == SupporterStatus.SUBSCRIBED
    entries = ledger(db_session, person.id)
    assert [e.kind for e in entries] == [ConsentKind.UNSUBSCRIBE, ConsentKind.RESUBSCRIBE]
    assert all(e.policy_version == POLICY_VERSION for e in entries)
    assert entries[1].detail  # what the person agreed to, in words


def test_resubscribe_when_already_subscribed_changes_nothing(client, db_session, page, person):
    response = press(client, page, action="resubscribe")
    assert response.status_code == 422
    assert "already receiving" in page_text(response)
    assert ledger(db_session, person.id) == []


def test_snooze_when_unsubscribed_is_refused(client, db_session, page, person):
    press(client, page, action="unsubscribe")
    response = press(client, page, action="snooze", days="30")
    assert response.status_code == 422
    person = refreshed(db_session, person)
    assert person.status == SupporterStatus.UNSUBSCRIBED and person.snoozed_until is None
    assert [e.kind for e in ledger(db_session, person.id)] == [ConsentKind.UNSUBSCRIBE]


def test_unsubscribing_twice_records_it_once(client, db_session, page, person):
    press(client, page, action="unsubscribe")
    assert press(client, page, action="unsubscribe").status_code == 303
    assert [e.kind for e in ledger(db_session, person.id)] == [ConsentKind.UNSUBSCRIBE]


def test_correct_name(client, db_session, page, person):
    response = press(client, page, first_name="  Grace  Brewster ", last_name="Murray Hopper")
    assert response.status_code == 303
    assert "Your name is updated" in page_text(client.get(response.headers["Location"]))
    person = refreshed(db_session, person)
    assert (person.first_name, person.last_name) == ("Grace Brewster", "Murray Hopper")
    assert person.status == SupporterStatus.SUBSCRIBED
    entries = ledger(db_session, person.id)
    assert [(e.kind, e.detail) for e in entries] == [(ConsentKind.DETAILS, "name corrected")]
    # The ledger says that the name changed, never what it was.
    assert "Grace" not in entries[0].detail and "Hopper" not in entries[0].detail


def test_saving_the_same_name_records_nothing(client, db_session, page, person):
    assert press(client, page, first_name="Grace", last_name="Hopper").status_code == 303
    assert ledger(db_session, person.id) == []


def test_over_long_name_gets_a_message(client, db_session, page, person):
    response = press(client, page, first_name="G" * 101, last_name="Hopper")
    assert response.status_code == 422
    assert "Please check the form" in page_text(response)
    assert input_value(response, "first_name") == "G" * 101
    assert refreshed(db_session, person).first_name == "Grace"


def test_name_form_honeypot_changes_nothing(client, db_session, page, person):
    press(client, page, first_name="Spam", last_name="Bot", website="http://spam.example")
    assert refreshed(db_session, person).first_name == "Grace"


@pytest.mark.parametrize("fields", [{"action": "unsubscribe"}, {"first_name": "Mallory"}])
def test_a_post_without_the_csrf_token_changes_nothing(client, db_session, page, person, fields):
    # A page on another site cannot unsubscribe or rename someone by posting here.
    response = client.post(page, data=fields)
    assert response.status_code in (400, 422)
    assert "expired" in page_text(response)
    person = refreshed(db_session, person)
    assert (person.status, person.first_name) == (SupporterStatus.SUBSCRIBED, "Grace")
    assert ledger(db_session, person.id) == []


# --- the token ---------------------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        # (Not the last character: its low bits are base64 padding, so changing it can
        # leave the decoded signature as it was.)
        lambda t: t.replace(".", "." + ("A" if t.split(".")[1][0] != "A" else "B"), 1)[:-1],
        lambda t: ("A" if t[0] != "A" else "B") + t[1:],
        lambda t: t[:-3],
        lambda t: t.split(".")[0],
        lambda t: "x" + t,
        lambda t: t + t,
        lambda t: "not-a-token",
        lambda t: "A" * 300,
        lambda t: "..",
    ],
)
def test_forged_or_garbled_token_gets_the_404_page(app, client, db_session, person, mangle):
    bad = mangle(token_for(app, person))
    # The POST carries a good CSRF token (the session's, from another page), so
    # it is the token in the address that is refused.
    valid = {"csrf_token": csrf_token(client, "/signup"), "action": "unsubscribe"}
    for response in (client.get(f"/u/{bad}"), client.post(f"/u/{bad}", data=valid)):
        assert response.status_code == 404
        assert "We couldn't find that page" in page_text(response)
        assert "grace" not in response.get_data(as_text=True).lower()
    assert refreshed(db_session, person).status == SupporterStatus.SUBSCRIBED


def test_token_signed_with_another_key_is_refused(app, client, person):
    forged = make_token("not-our-secret-key", person.public_id)
    assert client.get(f"/u/{forged}").status_code == 404


def test_token_of_another_kind_of_value_is_refused(app, client, person):
    # Same key and salt, but not a public id string: must not match anyone.
    serializer = URLSafeSerializer(app.config["SECRET_KEY"], salt=tokens._SALT)
    for value in ({"public_id": person.public_id}, [person.public_id], person.id, None):
        assert client.get(f"/u/{serializer.dumps(value)}").status_code == 404


def test_token_of_an_erased_supporter_is_refused(app, client, person, db_session):
    token = token_for(app, person)
    person.status = SupporterStatus.ERASED.value
    db_session.commit()
    assert client.get(f"/u/{token}").status_code == 404


def _payload(token: str) -> bytes:
    data = token.split(".")[0]
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def test_token_holds_no_personal_data(app, person):
    token = token_for(app, person)
    payload = _payload(token)
    assert json.loads(payload) == person.public_id
    lowered = (payload + token.encode()).lower()
    for secret in ("grace", "hopper", "example.org", person.postal_code):
        assert secret.encode() not in lowered
    assert re.fullmatch(r"[0-9a-f]{32}", person.public_id)


def test_token_never_expires(app, person):
    # Links in years-old emails must still work: an untimed serializer, no timestamp.
    serializer = tokens._serializer(app.config["SECRET_KEY"])
    assert isinstance(serializer, URLSafeSerializer)
    assert not isinstance(serializer, URLSafeTimedSerializer)
    token = token_for(app, person)
    assert token.count(".") == 1  # payload.signature: a timed token has a third part
    assert read_token(app.config["SECRET_KEY"], token) == person.public_id
    assert token_for(app, person) == token  # stable, so old emails and new agree


def test_snoozed_mail_resumes_by_itself(client, db_session, page, person):
    press(client, page, action="snooze", days="30")
    person = refreshed(db_session, person)
    recipient = Recipient(person.email, person.status, person.snoozed_until)
    assert skip_reason(recipient, utcnow()) is SkipReason.SNOOZED
    assert skip_reason(recipient, utcnow() + timedelta(days=29)) is SkipReason.SNOOZED
    # No job has to run: once the date passes, they may be mailed again.
    assert skip_reason(recipient, person.snoozed_until) is None
    assert skip_reason(recipient, utcnow() + timedelta(days=31)) is None
    assert person.status == SupporterStatus.SUBSCRIBED
