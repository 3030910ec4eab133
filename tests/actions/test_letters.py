"""Letters to officials, end to end: addressing, delivery through the seal, copies, opt-outs."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from email.message import EmailMessage
from html import unescape

import pytest
from sqlalchemy import func, select

from app.actions import letter_tasks, letters
from app.actions import service as actions
from app.actions import targets as target_service
from app.actions.models import Action, ActionPage, LetterDelivery, PageTarget, Target
from app.extensions import db
from app.integrations.email import EmailProviderError
from app.mailings import tasks as mailing_tasks
from app.mailings.models import EmailLog
from app.mailings.service import SenderIdentity
from app.supporters import service as supporters
from app.supporters.models import Supporter
from app.supporters.tokens import make_token
from app.timeutil import utcnow
from tests.conftest import csrf_token
from tests.factories import ActionPageFactory, SupporterFactory, TargetFactory

ADULT_YEAR = str(utcnow().year - 40)
PAGE_SUBJECT = "Protect civilians in El Fasher"
PAGE_BODY = "Dear official,\n\nPlease press for an arms embargo now.\n\nThank you."


def letter_page(slug: str = "write", targets: tuple[Target, ...] = (), **settings) -> ActionPage:  # type: ignore[no-untyped-def]
    page = ActionPageFactory(
        kind="letter",
        slug=slug,
        settings={"letter_subject": PAGE_SUBJECT, "letter_body": PAGE_BODY, **settings},
    )
    for target in targets:
        db.session.add(PageTarget(page_id=page.id, target_id=target.id))
    db.session.commit()
    db.session.expire_all()
    return page


def signer(**extra: str) -> dict[str, str]:
    data = {
        "email": f"writer-{uuid.uuid4().hex[:8]}@example.org",
        "first_name": "Nadia",
        "last_name": "Okafor",
        "postal_code": "10001",
        "country": "US",
        "birth_year": ADULT_YEAR,
        "letter_subject": PAGE_SUBJECT,
        "letter_body": PAGE_BODY,
    }
    data.update(extra)
    return data


def write(client, slug: str, fields: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(
        f"/a/{slug}", data={"csrf_token": csrf_token(client, f"/a/{slug}"), **fields}
    )


def mail(outbox) -> list[EmailMessage]:  # type: ignore[no-untyped-def]
    """Every message in the outbox (in no particular order)."""
    return [outbox.read(e.name) for e in outbox.entries()]


def mail_to(outbox, address: str) -> list[EmailMessage]:  # type: ignore[no-untyped-def]
    return [m for m in mail(outbox) if m["To"] == address]


def text_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def html_text(message: EmailMessage) -> str:
    html = message.get_body(preferencelist=("html",)).get_content()
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def deliveries(db_session) -> list[LetterDelivery]:  # type: ignore[no-untyped-def]
    db_session.expire_all()
    return list(db_session.scalars(select(LetterDelivery).order_by(LetterDelivery.id)))


def token_for(app, target: Target) -> str:  # type: ignore[no-untyped-def]
    return target_service.make_target_token(app.config["SECRET_KEY"], target.public_id)


def test_a_letter_reaches_each_office_through_the_seal_and_the_signer_gets_a_copy(
    app, client, db_session, outbox
):
    senator = TargetFactory(name="Senator Ada Byron", office_email="byron@senate.example")
    rep = TargetFactory(name="Rep. Grace Hopper", office_email="hopper@house.example")
    letter_page("write", (senator, rep))
    fields = signer(letter_body="Dear official,\n\nMy own words: act now.")

    response = write(client, "write", fields)
    assert response.status_code == 303, response.get_data(as_text=True)

    postal_address = app.config["ORG_POSTAL_ADDRESS"]
    for target in (senator, rep):
        [letter] = mail_to(outbox, target.office_email)
        assert letter["Subject"] == PAGE_SUBJECT
        one_click = f"http://localhost/t/{token_for(app, target)}/one-click"
        assert letter["List-Unsubscribe"] == f"<{one_click}>"
        assert letter["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text, html = text_of(letter), html_text(letter)
        for part in (text, html):
            assert "My own words: act now." in part
            assert "Nadia Okafor" in part and "10001" in part
            assert " ".join(postal_address.split()) in " ".join(part.split())
            # The office learns the signer's name and postal code, never their email.
            assert fields["email"] not in part
        assert f"http://localhost/t/{token_for(app, target)}" in text
        assert letter["Reply-To"] is None and fields["email"] not in str(letter)

    [copy] = mail_to(outbox, fields["email"])
    assert copy["Subject"] == f"A copy of your letter: {PAGE_SUBJECT}"
    assert "My own words: act now." in text_of(copy)
    assert "Senator Ada Byron" in text_of(copy) and "Rep. Grace Hopper" in html_text(copy)
    assert copy["List-Unsubscribe"].startswith("<http://localhost/u/")
    assert len(mail(outbox)) == 3

    assert {(d.target_id, d.status) for d in deliveries(db_session)} == {
        (senator.id, "sent"),
        (rep.id, "sent"),
    }
    assert all(d.sent_at is not None for d in deliveries(db_session))
    thanks = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Your letter is on its way to" in thanks
    assert "Senator Ada Byron" in thanks and "Rep. Grace Hopper" in thanks


def test_the_service_reports_the_addressed_offices(db_session):
    senator = TargetFactory(name="Senator Ada Byron")
    page = letter_page("svc", (senator,))
    result = actions.take_action(
        db_session,
        page,
        supporters.SignupData("svc@example.org", "Sam", "Lee", "10001", "US"),
        False,
        actions.ActionDetails(letter_subject="x", letter_body="Dear official, hello."),
        actions.Attribution(),
        utcnow(),
    )
    assert result.extra["letter_targets"] == ["Senator Ada Byron"]
    assert result.extra["letter_copy"] is True
    assert len(result.extra["letter_deliveries"]) == 1


@pytest.mark.parametrize(
    ("editable", "expected_subject", "expected_body"),
    [
        ("none", PAGE_SUBJECT, PAGE_BODY),
        ("body", PAGE_SUBJECT, "My forged body"),
        ("all", "My forged subject", "My forged body"),
    ],
)
def test_editing_limits_hold_on_the_server(
    client, db_session, outbox, editable, expected_subject, expected_body
):
    target = TargetFactory()
    letter_page("limits", (target,), letter_editable=editable)
    fields = signer(letter_subject="My forged subject", letter_body="My forged body")

    assert write(client, "limits", fields).status_code == 303
    action = db_session.scalar(select(Action))
    assert (action.letter_subject, action.letter_body) == (expected_subject, expected_body)
    [letter] = mail_to(outbox, target.office_email)
    assert letter["Subject"] == expected_subject
    assert expected_body.splitlines()[-1] in text_of(letter)


def test_the_service_itself_ignores_fields_the_signer_may_not_edit(db_session):
    """The limits hold for any caller of take_action, not only for the public form."""
    page = letter_page("svc-limits", (TargetFactory(),), letter_editable="none")
    result = actions.take_action(
        db_session,
        page,
        supporters.SignupData("forger@example.org", "F", "G", "10001", "US"),
        False,
        actions.ActionDetails(letter_subject="Forged", letter_body="Forged body"),
        actions.Attribution(),
        utcnow(),
    )
    assert result.action.letter_subject == PAGE_SUBJECT
    assert result.action.letter_body == PAGE_BODY


def test_a_letter_over_the_length_limit_is_refused_and_nothing_is_sent(client, db_session, outbox):
    letter_page("short", (TargetFactory(),), letter_max_length=50)
    response = write(client, "short", signer(letter_body="x" * 51))
    assert response.status_code == 422
    assert "Please keep your letter under 50 characters" in response.get_data(as_text=True)
    assert db_session.scalar(select(func.count()).select_from(Action)) == 0
    assert deliveries(db_session) == [] and mail(outbox) == []

    page = db_session.scalar(select(ActionPage))
    with pytest.raises(actions.ActionError, match="under 50 characters"):
        letters.letter_text(page, actions.ActionDetails(letter_body="y" * 51))


def test_control_characters_never_reach_the_database(client, db_session):
    letter_page("nul", (TargetFactory(),))
    assert write(client, "nul", signer(letter_body="Dear\x00 official,\r\nact\x1b now")).status_code
    action = db_session.scalar(select(Action))
    assert action.letter_body == "Dear official,\nact now"


def test_acting_twice_sends_no_second_letter_and_no_second_copy(client, db_session, outbox):
    senator, rep = TargetFactory(), TargetFactory()
    letter_page("twice", (senator, rep))
    fields = signer()
    assert write(client, "twice", fields).status_code == 303
    assert len(mail(outbox)) == 3

    again = write(client, "twice", {**fields, "letter_body": "Changed my mind about the words."})
    assert again.status_code == 303
    assert db_session.scalar(select(func.count()).select_from(Action)) == 1
    assert len(deliveries(db_session)) == 2
    assert len(mail(outbox)) == 3
    assert "Changed my mind" not in db_session.scalar(select(Action)).letter_body
    thanks = client.get(again.headers["Location"]).get_data(as_text=True)
    assert senator.name in thanks and rep.name in thanks


def test_match_mode_writes_to_the_signers_own_officials(client, db_session, outbox):
    mine = TargetFactory(name="My Representative", postal_codes="100*")
    TargetFactory(name="Someone Else's", postal_codes="20001")
    TargetFactory(name="Phone Only", office_email="", postal_codes="10001")
    letter_page("match", target_mode="match")

    response = write(client, "match", signer(postal_code="10001-4321"))
    assert response.status_code == 303
    assert [d.target_id for d in deliveries(db_session)] == [mine.id]
    assert len(mail_to(outbox, mine.office_email)) == 1
    thanks = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "My Representative" in thanks and "Someone Else" not in thanks
    assert "Phone Only" not in thanks


def test_when_no_official_matches_the_signer_is_told_and_nothing_is_sent(
    client, db_session, outbox
):
    TargetFactory(postal_codes="20001")
    letter_page("nomatch", target_mode="match")
    fields = signer(postal_code="99999")

    response = write(client, "nomatch", fields)
    assert response.status_code == 303
    thanks = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Your letter could not be sent" in thanks
    assert "could not find an official who takes letters for your postal code" in thanks
    assert deliveries(db_session) == [] and mail(outbox) == []

    # A corrected postal code addresses the letter after all, and the copy follows.
    match = TargetFactory(postal_codes="99999")
    response = write(client, "nomatch", {**fields, "postal_code": "99999"})
    assert [d.target_id for d in deliveries(db_session)] == [match.id]
    assert len(mail_to(outbox, match.office_email)) == 1
    assert len(mail_to(outbox, fields["email"])) == 1


def run_digests() -> int:
    return letter_tasks.send_daily_digests.delay().get()


def test_digest_mode_sends_each_office_one_email_with_all_its_letters(
    app, client, db_session, outbox
):
    senator, rep = TargetFactory(name="Senator"), TargetFactory(name="Representative")
    letter_page("digest", (senator, rep), letter_delivery="digest", letter_editable="all")
    letter_page("digest-too", (senator,), letter_delivery="digest")
    letter_page("each", (senator,))  # sends one by one: never in a digest
    first = signer(first_name="Amina", letter_subject="First subject", letter_body="First letter")
    second = signer(first_name="Bo", postal_code="N1 9GU", letter_body="Second letter")
    third = signer(first_name="Chen", letter_body="Third letter")
    for fields in (first, second):
        response = write(client, "digest", fields)
        assert response.status_code == 303
    thanks = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Your letter will be delivered today to" in thanks and "Representative" in thanks
    assert write(client, "digest-too", third).status_code == 303
    assert write(client, "each", third).status_code == 303

    # Only the signers' copies and the one-by-one letter have gone so far.
    assert len(mail_to(outbox, senator.office_email)) == 1
    assert mail_to(outbox, rep.office_email) == []
    assert len(mail(outbox)) == 4 + 1

    assert run_digests() == 2
    [digest] = mail_to(outbox, rep.office_email)
    text = text_of(digest)
    assert "First letter" in text and "Second letter" in text and "Third letter" not in text
    assert "Amina Okafor" in text and "N1 9GU" in text and "First subject" in text
    assert digest["Subject"].startswith("2 letters from constituents")
    assert digest["List-Unsubscribe"] == f"<http://localhost/t/{token_for(app, rep)}/one-click>"
    assert first["email"] not in text and first["email"] not in html_text(digest)
    senators = mail_to(outbox, senator.office_email)
    assert len(senators) == 2  # the one-by-one letter, and one digest of three
    [senators_digest] = [m for m in senators if "from constituents" in m["Subject"]]
    assert all(f"{n} letter" in text_of(senators_digest) for n in ("First", "Second", "Third"))
    assert senators_digest["Subject"].startswith("3 letters from constituents")
    assert {d.status for d in deliveries(db_session)} == {"sent"}
    keys = set(db_session.scalars(select(EmailLog.dedupe_key)))
    today = utcnow().date().isoformat()
    assert {f"letter-digest:{senator.id}:{today}", f"letter-digest:{rep.id}:{today}"} <= keys

    # Once sent, a second run the same day has nothing to send.
    assert run_digests() == 0
    assert len(mail(outbox)) == 4 + 1 + 2


def test_a_digest_too_big_for_one_email_goes_in_parts(app, client, db_session, outbox, monkeypatch):
    monkeypatch.setattr(letters, "DIGEST_MAX_LETTERS", 2)
    office = TargetFactory()
    letter_page("parts", (office,), letter_delivery="digest")
    for n in range(5):
        write(client, "parts", signer(first_name=f"Writer{n}"))
    run_digests()
    parts = mail_to(outbox, office.office_email)
    assert sorted(m["Subject"].split()[0] for m in parts) == ["1", "2", "2"]
    written = "".join(text_of(m) for m in parts)
    assert all(f"Writer{n} Okafor" in written for n in range(5))
    assert {d.status for d in deliveries(db_session)} == {"sent"}


def test_one_click_stops_letters_at_once_without_cookies_or_a_csrf_token(
    app, client, db_session, outbox
):
    office, other = TargetFactory(name="Opting Out"), TargetFactory(name="Still Reading")
    letter_page("optout", (office, other), letter_delivery="digest")
    first_thanks = write(client, "optout", signer()).headers["Location"]
    assert "Opting Out" in client.get(first_thanks).get_data(as_text=True)

    mail_client = app.test_client(use_cookies=False)
    url = f"/t/{token_for(app, office)}/one-click"
    assert mail_client.get(url).status_code == 200  # a link scanner changes nothing
    assert db_session.get(Target, office.id).opted_out_at is None
    assert mail_client.post(url, data={"something": "else"}).status_code == 400
    response = mail_client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert "receive no more letters" in response.get_data(as_text=True)
    assert response.headers["Referrer-Policy"] == "same-origin"
    db_session.expire_all()
    assert db_session.get(Target, office.id).opted_out_at is not None

    # The queued letter to that office is skipped, with the reason; new letters skip it.
    by_target = {d.target_id: d for d in deliveries(db_session)}
    assert (by_target[office.id].status, by_target[office.id].skip_reason) == (
        "skipped",
        "unsubscribed",
    )
    response = write(client, "optout", signer())
    assert [d.target_id for d in deliveries(db_session)].count(office.id) == 1
    for url in (first_thanks, response.headers["Location"]):
        thanks = client.get(url).get_data(as_text=True)
        assert "Still Reading" in thanks and "Opting Out" not in thanks

    run_digests()
    assert mail_to(outbox, office.office_email) == []
    assert len(mail_to(outbox, other.office_email)) == 1


def test_an_office_that_opted_out_after_a_letter_was_queued_is_skipped_by_the_seal(
    app, db_session, outbox
):
    office = TargetFactory()
    page = letter_page("late", (office,))
    actions.take_action(
        db_session,
        page,
        supporters.SignupData("late@example.org", "La", "Te", "10001", "US"),
        False,
        actions.ActionDetails(letter_body="Hello"),
        actions.Attribution(),
        utcnow(),
    )
    db_session.commit()
    # Marked opted out without the service (say, by hand): the seal still refuses it.
    office.opted_out_at = utcnow()
    db_session.commit()
    [delivery] = deliveries(db_session)
    assert letter_tasks.send_letter.delay(delivery.id).get() == "skipped:unsubscribed"
    [delivery] = deliveries(db_session)
    assert (delivery.status, delivery.skip_reason) == ("skipped", "unsubscribed")
    assert mail(outbox) == []


def test_the_office_page_stops_and_restarts_letters_with_a_csrf_protected_button(
    app, client, db_session
):
    office = TargetFactory(name="Senator Byron")
    url = f"/t/{token_for(app, office)}"
    page = client.get(url)
    assert page.status_code == 200 and "Senator Byron" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    token = csrf_token(client, url)

    assert client.post(url, data={"choice": "stop"}).status_code == 400  # no token
    assert db_session.get(Target, office.id).opted_out_at is None
    response = client.post(url, data={"choice": "stop", "csrf_token": token})
    assert response.status_code == 303
    db_session.expire_all()
    assert db_session.get(Target, office.id).opted_out_at is not None
    assert "no more letters" in client.get(response.headers["Location"]).get_data(as_text=True)

    client.post(url, data={"choice": "resume", "csrf_token": token})
    db_session.expire_all()
    assert db_session.get(Target, office.id).opted_out_at is None


@pytest.mark.parametrize("path", ["/t/forged", "/t/forged/one-click"])
def test_forged_office_links_open_nothing(client, path):
    assert client.get(path).status_code == 404
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code in (400, 404)


class FlakyProvider:
    """Fails the first `failures` sends, then hands messages to the outbox."""

    name = "flaky"

    def __init__(self, outbox, failures: int, retryable: bool = True) -> None:  # type: ignore[no-untyped-def]
        self.outbox, self.failures, self.retryable, self.calls = outbox, failures, retryable, 0

    def send(self, message, custom_args=None) -> str:  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls <= self.failures:
            raise EmailProviderError("provider is down", retryable=self.retryable)
        return self.outbox.send(message, custom_args)


def queued_letter(db_session) -> LetterDelivery:  # type: ignore[no-untyped-def]
    page = letter_page("flaky", (TargetFactory(),), letter_delivery="digest")
    actions.take_action(
        db_session,
        page,
        supporters.SignupData("flaky@example.org", "Fl", "Aky", "10001", "US"),
        False,
        actions.ActionDetails(letter_body="Hello"),
        actions.Attribution(),
        utcnow(),
    )
    db_session.commit()
    [delivery] = deliveries(db_session)
    return delivery


def test_a_provider_outage_is_retried_and_the_letter_goes_once(db_session, outbox, monkeypatch):
    delivery = queued_letter(db_session)
    provider = FlakyProvider(outbox, failures=1)
    monkeypatch.setattr(mailing_tasks, "provider_from_config", lambda config: provider)
    # Called directly (not through a worker), Celery's retry re-raises the cause.
    with pytest.raises(EmailProviderError):
        letter_tasks.send_letter(delivery.id)
    [delivery] = deliveries(db_session)
    assert delivery.status == "queued" and mail(outbox) == []
    log = db_session.scalar(select(EmailLog).where(EmailLog.dedupe_key == f"letter:{delivery.id}"))
    assert log.status == "failed" and "provider is down" in log.error

    assert letter_tasks.send_letter(delivery.id) == "sent"
    assert letter_tasks.send_letter(delivery.id) == "not-needed"
    assert provider.calls == 2
    [delivery] = deliveries(db_session)
    assert delivery.status == "sent" and len(mail(outbox)) == 1
    log = db_session.scalar(select(EmailLog).where(EmailLog.dedupe_key == f"letter:{delivery.id}"))
    assert log.status == "sent"


def test_a_permanent_provider_failure_marks_the_letter_failed(db_session, outbox, monkeypatch):
    delivery = queued_letter(db_session)
    provider = FlakyProvider(outbox, failures=1, retryable=False)
    monkeypatch.setattr(mailing_tasks, "provider_from_config", lambda config: provider)
    assert letter_tasks.send_letter.delay(delivery.id).get() == "failed"
    [delivery] = deliveries(db_session)
    assert (delivery.status, delivery.skip_reason) == ("failed", "provider-error")
    assert provider.calls == 1 and mail(outbox) == []


def test_letters_whose_task_was_never_queued_are_swept_up(db_session, outbox, monkeypatch):
    office = TargetFactory()
    page = letter_page("sweep", (office,))
    monkeypatch.setattr(letter_tasks.send_letter, "delay", lambda *a: 1 / 0)  # broker down
    monkeypatch.setattr(letter_tasks.send_copy, "delay", lambda *a: None)
    actions.take_action(
        db_session,
        page,
        supporters.SignupData("sweep@example.org", "Sw", "Eep", "10001", "US"),
        False,
        actions.ActionDetails(letter_body="Hello"),
        actions.Attribution(),
        utcnow(),
    )
    db_session.commit()
    [delivery] = deliveries(db_session)
    letter_tasks._enqueue(letter_tasks.send_letter, delivery.id)  # logs, does not raise
    monkeypatch.undo()

    assert letter_tasks.send_stale_letters.delay().get() == 0  # not stale yet
    delivery.created_at = utcnow() - timedelta(hours=2)
    db_session.commit()
    assert letter_tasks.send_stale_letters.delay().get() == 1
    assert len(mail_to(outbox, office.office_email)) == 1
    assert deliveries(db_session)[0].status == "sent"


def test_a_signer_erased_before_the_digest_takes_their_letter_back(app, db_session, outbox):
    delivery = queued_letter(db_session)
    supporter = db_session.get(Supporter, delivery.action.supporter_id)
    supporter.status = "erased"
    db_session.commit()
    identity = SenderIdentity.from_config(app.config)
    assert letters.send_digest(db_session, outbox, identity, delivery.target_id, utcnow()) == (
        "nothing-queued"
    )
    db_session.commit()
    [delivery] = deliveries(db_session)
    assert (delivery.status, delivery.skip_reason) == ("skipped", "erased")
    assert mail(outbox) == []


def test_a_recognised_supporter_writes_with_the_postal_code_we_hold(app, client, outbox):
    mine = TargetFactory(postal_codes="N1*")
    letter_page("known", target_mode="match")
    person = SupporterFactory(postal_code="N1 7AA", country="GB", first_name="Kofi")
    token = make_token(app.config["SECRET_KEY"], person.public_id)
    html = client.get(f"/a/known?t={token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    response = client.post(
        f"/a/known?t={token}",
        data={"csrf_token": csrf, "t": token, "letter_subject": "x", "letter_body": "Hello"},
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    [letter] = mail_to(outbox, mine.office_email)
    assert "N1 7AA" in text_of(letter) and person.email not in text_of(letter)
