"""POST /signup through the Flask test client: one person, one record, a ledger row, a welcome
email; and every kind of bad input answered with a message, never a 500."""

from __future__ import annotations

import re
from html import unescape

import pytest
from sqlalchemy import func, select

from app.mailings.models import EmailLog
from app.supporters.models import ConsentEvent, ConsentKind, SupporterStatus
from app.supporters.tokens import make_token
from app.timeutil import utcnow
from privacy import POLICY_VERSION
from privacy.age_screen import INVALID_MESSAGE, MISSING_MESSAGE
from tests.conftest import csrf_token
from tests.factories import SupporterFactory
from tests.supporters.conftest import (
    adult_fields,
    forget_request_globals,
    input_value,
    ledger,
    page_text,
    selected_option,
    supporter_count,
    supporters,
)


def consent_text_shown(client) -> str:  # type: ignore[no-untyped-def]
    """The consent sentence as printed beside the sign-up button."""
    html = client.get("/signup").get_data(as_text=True)
    match = re.search(r'<p class="consent">(.*?)Read our <a\b', html, re.S)
    assert match, "no consent text on /signup"
    return " ".join(unescape(match.group(1)).split())


def assert_nothing_stored(db_session, outbox) -> None:  # type: ignore[no-untyped-def]
    assert supporter_count(db_session) == 0
    assert db_session.scalar(select(func.count()).select_from(ConsentEvent)) == 0
    assert db_session.scalar(select(func.count()).select_from(EmailLog)) == 0
    assert outbox.entries() == []


# --- the happy path -------------------------------------------------------------


def test_adult_signs_up(app, client, db_session, outbox, post_signup):
    shown = consent_text_shown(client)
    response = post_signup()
    assert response.status_code == 200
    assert "Thank you, Ada!" in page_text(response)

    [person] = supporters(db_session)
    assert person.email == "ada@example.org"
    assert (person.first_name, person.last_name) == ("Ada", "Lovelace")
    assert (person.postal_code, person.country) == ("N1 9GU", "GB")
    assert person.status == SupporterStatus.SUBSCRIBED
    assert person.snoozed_until is None
    assert person.source == "signup form"
    # Nothing about the year of birth is kept: it is only a screen.
    assert "birth" not in str(person.custom_fields)

    [entry] = ledger(db_session, person.id)
    assert entry.kind == ConsentKind.SUBSCRIBE
    assert entry.policy_version == POLICY_VERSION
    assert entry.detail == shown
    assert entry.source == "signup form"

    # The welcome email went out at once (Celery is eager in tests), sealed.
    [sent] = outbox.entries()
    message = outbox.read(sent.name)
    assert message["To"] == "ada@example.org"
    token = make_token(app.config["SECRET_KEY"], person.public_id)
    assert message["List-Unsubscribe"].startswith(f"<{app.config['BASE_URL']}/u/{token}/one-click>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",)).get_content()
    assert f"{app.config['BASE_URL']}/u/{token}" in text
    assert app.config["ORG_POSTAL_ADDRESS"] in text
    assert "Dear Ada" in text
    assert person.welcomed_at is not None


def test_sign_up_from_the_home_page_form(client, db_session, post_signup):
    response = post_signup(from_home="1", email="home@example.org")
    assert response.status_code == 200
    assert [s.email for s in supporters(db_session)] == ["home@example.org"]


def test_only_the_email_and_year_are_needed(client, db_session, post_signup):
    response = post_signup(
        first_name=None, last_name=None, postal_code=None, country=None, email="min@example.org"
    )
    assert response.status_code == 200
    [person] = supporters(db_session)
    assert (person.first_name, person.last_name, person.country) == ("", "", "")


def test_source_is_recorded_and_cleaned(client, db_session, post_signup):
    response = post_signup(path="/signup?source=%00spring%0A%1Bdrive")
    assert response.status_code == 200
    [person] = supporters(db_session)
    assert person.source == "spring drive"
    assert ledger(db_session, person.id)[0].source == "spring drive"


def test_same_address_in_another_case_updates_the_one_record(
    client, db_session, outbox, post_signup
):
    assert post_signup(email="Ada@Example.ORG").status_code == 200
    response = post_signup(
        email="  ADA@example.org ", first_name="Augusta", last_name="", postal_code="", country="US"
    )
    assert response.status_code == 200

    [person] = supporters(db_session)
    assert person.email == "ada@example.org"
    assert person.first_name == "Augusta"
    # A blank field keeps what we had; a new value replaces it.
    assert (person.last_name, person.postal_code, person.country) == ("Lovelace", "N1 9GU", "US")
    # Still subscribed: no second subscribe, no resubscribe, no second welcome email.
    assert [e.kind for e in ledger(db_session, person.id)] == [ConsentKind.SUBSCRIBE]
    assert len(outbox.entries()) == 1


def test_unsubscribed_person_signing_up_again_is_resubscribed(client, db_session, post_signup):
    person = SupporterFactory(email="back@example.org", status=SupporterStatus.UNSUBSCRIBED.value)
    shown = consent_text_shown(client)

    response = post_signup(email="Back@example.org", first_name="Bea")
    assert response.status_code == 200

    [again] = supporters(db_session)
    assert again.id == person.id
    assert again.status == SupporterStatus.SUBSCRIBED
    assert again.first_name == "Bea"
    [entry] = ledger(db_session, person.id)
    assert entry.kind == ConsentKind.RESUBSCRIBE
    assert entry.policy_version == POLICY_VERSION
    assert entry.detail == shown


def test_snoozed_person_signing_up_again_ends_the_break(client, db_session, post_signup):
    from datetime import timedelta

    person = SupporterFactory(email="nap@example.org", snoozed_until=utcnow() + timedelta(days=20))
    assert post_signup(email="nap@example.org").status_code == 200
    [again] = supporters(db_session)
    assert again.id == person.id and again.snoozed_until is None
    assert [e.kind for e in ledger(db_session, person.id)] == [ConsentKind.RESUBSCRIBE]


# --- validation: a clear message, the typed values kept, nothing stored ----------


@pytest.mark.parametrize(
    "email",
    ["not-an-email", "ada@", "@example.org", "ada@@example.org", "ada@example", "a b@example.org"],
)
def test_bad_email_gets_a_message_and_keeps_what_was_typed(
    client, db_session, outbox, post_signup, email
):
    response = post_signup(email=email)
    assert response.status_code == 422
    text = page_text(response)
    assert "Please check the form" in text
    assert "That email address doesn't look right" in text
    assert input_value(response, "email") == email
    assert input_value(response, "first_name") == "Ada"
    assert input_value(response, "last_name") == "Lovelace"
    assert input_value(response, "postal_code") == "N1 9GU"
    assert input_value(response, "birth_year") == adult_fields()["birth_year"]
    assert selected_option(response, "country") == "GB"
    assert_nothing_stored(db_session, outbox)


def test_missing_email_gets_a_message(client, db_session, outbox, post_signup):
    response = post_signup(email="  ")
    assert response.status_code == 422
    assert "Please enter your email address." in page_text(response)
    assert_nothing_stored(db_session, outbox)


def test_error_page_marks_only_the_fields_in_error(client, post_signup):
    response = post_signup(email="nope")
    html = response.get_data(as_text=True)
    # Attributes are left out rather than written as "None" (screen readers read
    # aria-invalid="None" as invalid).
    assert '="None"' not in html
    email_input = re.search(r'<input[^>]*name="email"[^>]*>', html).group(0)
    name_input = re.search(r'<input[^>]*name="first_name"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in email_input
    assert "aria-invalid" not in name_input


def test_home_form_errors_come_back_on_the_home_page(client, db_session, post_signup):
    response = post_signup(from_home="1", email="nope")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'name="from_home"' in html
    assert input_value(response, "email") == "nope"


@pytest.mark.parametrize(
    ("birth_year", "message"),
    [("", MISSING_MESSAGE), ("nineteen", INVALID_MESSAGE), ("1800", INVALID_MESSAGE)],
)
def test_bad_birth_year_gets_a_neutral_message(
    client, db_session, outbox, post_signup, birth_year, message
):
    response = post_signup(birth_year=birth_year)
    assert response.status_code == 422
    assert message in page_text(response)
    assert input_value(response, "email") == "ada@example.org"
    assert_nothing_stored(db_session, outbox)


def test_typo_domain_prompts_once_then_goes_through(client, db_session, outbox, post_signup):
    token = csrf_token(client, "/signup")
    data = adult_fields(email="x@gmial.com") | {"csrf_token": token}
    first = client.post("/signup", data=data)
    assert first.status_code == 422
    assert "Did you mean x@gmail.com" in page_text(first)
    assert input_value(first, "email") == "x@gmial.com"
    assert input_value(first, "first_name") == "Ada"
    assert_nothing_stored(db_session, outbox)

    # The person keeps their spelling and submits the re-shown form unchanged.
    checked = input_value(first, "email_checked")
    assert checked == "x@gmial.com"
    second = client.post("/signup", data=data | {"email_checked": checked})
    assert second.status_code == 200
    assert [s.email for s in supporters(db_session)] == ["x@gmial.com"]


def test_typo_domain_corrected_goes_through(client, db_session, post_signup):
    first = post_signup(email="x@hotmial.com")
    assert "Did you mean x@hotmail.com" in page_text(first)
    second = post_signup(email="x@hotmail.com", email_checked=input_value(first, "email_checked"))
    assert second.status_code == 200
    assert [s.email for s in supporters(db_session)] == ["x@hotmail.com"]


def test_a_changed_address_is_checked_again(client, db_session, post_signup):
    first = post_signup(email="x@gmial.com")
    second = post_signup(email="y@yaho.com", email_checked=input_value(first, "email_checked"))
    assert second.status_code == 422
    assert "Did you mean y@yahoo.com" in page_text(second)
    assert supporter_count(db_session) == 0


@pytest.mark.parametrize("token", [None, "", "garbage", "IjAwMCI.bad.signature"])
def test_missing_or_bad_csrf_token_keeps_the_data_and_stores_nothing(
    client, db_session, outbox, token
):
    client.get("/signup")  # a session, as a browser would have
    data = adult_fields()
    if token is not None:
        data["csrf_token"] = token
    response = client.post("/signup", data=data)
    assert response.status_code == 422
    assert "This form had expired" in page_text(response)
    assert input_value(response, "email") == "ada@example.org"
    assert input_value(response, "first_name") == "Ada"
    # A fresh token comes with the re-shown form, so the next submit works.
    fresh = input_value(response, "csrf_token")
    assert fresh
    assert_nothing_stored(db_session, outbox)
    assert client.post("/signup", data=adult_fields() | {"csrf_token": fresh}).status_code == 200
    assert supporter_count(db_session) == 1


def test_token_from_an_expired_session_is_refused(app, client, db_session, outbox):
    token = csrf_token(client, "/signup")
    # The browser lost its session cookie (expired, cleared): the token no longer matches.
    client.delete_cookie(app.config["SESSION_COOKIE_NAME"])
    forget_request_globals()
    response = client.post("/signup", data=adult_fields() | {"csrf_token": token})
    assert response.status_code == 422
    assert "This form had expired" in page_text(response)
    assert input_value(response, "email") == "ada@example.org"
    assert_nothing_stored(db_session, outbox)
    # The re-shown form carries a token for the new session, and it works.
    forget_request_globals()
    fresh = input_value(response, "csrf_token")
    assert fresh and fresh != token
    assert client.post("/signup", data=adult_fields() | {"csrf_token": fresh}).status_code == 200


def test_token_from_another_browser_is_refused(app, client, db_session, outbox):
    other = app.test_client()
    token = csrf_token(other, "/signup")
    forget_request_globals()
    assert csrf_token(client, "/signup") != token
    response = client.post("/signup", data=adult_fields() | {"csrf_token": token})
    assert response.status_code == 422
    assert_nothing_stored(db_session, outbox)


@pytest.mark.parametrize("bait", ["http://spam.example", "x", " y "])
def test_honeypot_gets_thanks_but_nothing_is_stored(client, db_session, outbox, post_signup, bait):
    response = post_signup(website=bait)
    assert response.status_code == 200
    assert "Thank you" in page_text(response)
    assert "Ada" not in page_text(response)
    assert_nothing_stored(db_session, outbox)


def test_empty_honeypot_is_a_person(client, db_session, post_signup):
    assert post_signup(website="   ").status_code == 200
    assert supporter_count(db_session) == 1


@pytest.mark.parametrize("country", ["XX", "USA", "U", "<script>", "G\x00B", "gb " * 500])
def test_bad_country_gets_a_message(client, db_session, outbox, post_signup, country):
    response = post_signup(country=country)
    assert response.status_code == 422
    assert "Please choose a country from the list." in page_text(response)
    assert input_value(response, "email") == "ada@example.org"
    assert_nothing_stored(db_session, outbox)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("first_name", "A" * 101),
        ("last_name", "B" * 5000),
        ("postal_code", "9" * 21),
        ("email", "a" * 300 + "@example.org"),
        ("email", "ada@" + "a" * 63 + "." + "b" * 300 + ".org"),
        ("birth_year", "1" * 10_000),
        ("first_name", "\u00e9" * 101),
    ],
)
def test_over_long_fields_get_a_message_not_a_500(
    client, db_session, outbox, post_signup, field, value
):
    response = post_signup(**{field: value})
    assert response.status_code == 422
    assert "Please check the form" in page_text(response)
    assert_nothing_stored(db_session, outbox)


def test_longest_allowed_values_are_stored_whole(client, db_session, post_signup):
    response = post_signup(first_name="\u00e9" * 100, last_name="L" * 100, postal_code="9" * 20)
    assert response.status_code == 200
    [person] = supporters(db_session)
    assert person.first_name == "\u00e9" * 100
    assert person.last_name == "L" * 100 and person.postal_code == "9" * 20


@pytest.mark.parametrize("field", ["first_name", "last_name", "postal_code"])
def test_control_characters_never_cause_a_500(client, db_session, post_signup, field):
    # PostgreSQL refuses NUL in text; the sign-up must still work.
    response = post_signup(**{field: "Ab\x00c\x1b d"})
    assert response.status_code == 200
    [person] = supporters(db_session)
    assert getattr(person, field) == "Abc d"


def test_control_characters_in_the_email_are_dropped(client, db_session, post_signup):
    response = post_signup(email="ada\x00@exam\x1bple.org")
    assert response.status_code == 200
    assert [s.email for s in supporters(db_session)] == ["ada@example.org"]


def test_whitespace_in_names_is_tidied(client, db_session, post_signup):
    post_signup(first_name="  Ada \t Augusta\n", last_name=" King ")
    [person] = supporters(db_session)
    assert (person.first_name, person.last_name) == ("Ada Augusta", "King")


def test_markup_in_fields_is_shown_as_text(client, post_signup):
    response = post_signup(email="<b>x</b>", first_name="<script>alert(1)</script>")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert input_value(response, "first_name") == "<script>alert(1)</script>"


def test_head_is_answered_like_get(client, db_session, outbox):
    # Link checkers and previews send HEAD: it must not be taken for a form submission.
    for path in ("/", "/signup"):
        response = client.head(path)
        assert response.status_code == 200, path
    assert_nothing_stored(db_session, outbox)
