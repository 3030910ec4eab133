"""Tracked links and the pixel, range-by-range materialising, A/B subject tests,
scheduling, previews and test sends: the send pipeline's features, end to end."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import func, select, update

from app.extensions import db
from app.mailings import pipeline, tracking
from app.mailings.models import (
    Delivery,
    Mailing,
    MailingLink,
    MailingStatus,
    TrackingEvent,
)
from app.mailings.service import SenderIdentity
from app.mailings.tasks import (
    decide_ab_tests,
    reconcile_mailings,
    send_mailing,
    start_scheduled_mailings,
)
from app.supporters.models import SupporterStatus
from app.timeutil import utcnow
from tests.factories import SupporterFactory
from tests.mailings.helpers import deliveries, outbox_messages

BODY = (
    'Hi {{ first_name | default("friend") }},\n\n'
    "Please [sign the petition](https://org.example/a/stop) and "
    "[read more](https://news.example/story?id=7&x=1), or "
    "[sign again](https://org.example/a/stop).\n\n"
    "Questions? [Write to us](mailto:team@org.example)."
)


def new_mailing(**fields) -> Mailing:  # type: ignore[no-untyped-def]
    fields.setdefault("subject", "Act now")
    mailing = pipeline.create_mailing(db.session, body_md=BODY, now=utcnow(), **fields)
    db.session.commit()
    return mailing


def html_of(message) -> str:  # type: ignore[no-untyped-def]
    return message.get_body(preferencelist=("html",)).get_content()


def text_of(message) -> str:  # type: ignore[no-untyped-def]
    return message.get_body(preferencelist=("plain",)).get_content()


# --- tracked links and the open pixel ------------------------------------------------------


def test_sendgrid_request_carries_click_and_open_placeholders_per_recipient(
    app, sendgrid_config, fake_sendgrid
):
    people = [SupporterFactory() for _ in range(3)]
    mailing = new_mailing()

    send_mailing.delay(mailing.id)

    links = db.session.scalars(
        select(MailingLink).where(MailingLink.mailing_id == mailing.id).order_by("position")
    ).all()
    # Repeated URLs share a position; mailto: links are not tracked.
    assert [(link.position, link.url) for link in links] == [
        (1, "https://org.example/a/stop"),
        (2, "https://news.example/story?id=7&x=1"),
    ]
    [request] = fake_sendgrid.accepted
    contents = {c["type"]: c["value"] for c in request.json["content"]}
    for part in contents.values():
        assert "-click_1-" in part and "-click_2-" in part
        assert "https://org.example/a/stop" not in part and "news.example" not in part
    assert "-open_url-" in contents["text/html"] and "-open_url-" not in contents["text/plain"]
    assert "mailto:team@org.example" in contents["text/html"]
    secret = app.config["SECRET_KEY"]
    by_delivery = {d.id: d for d in deliveries(mailing.id)}
    assert len(by_delivery) == len(people)
    for personalization in request.json["personalizations"]:
        delivery_id = int(personalization["custom_args"]["delivery_id"])
        subs = personalization["substitutions"]
        open_token = urlsplit(subs["-open_url-"]).path.removeprefix("/o/").removesuffix(".gif")
        assert tracking.read_open_token(secret, open_token) == delivery_id
        for position in (1, 2):
            token = urlsplit(subs[f"-click_{position}-"]).path.removeprefix("/c/")
            target = tracking.read_click_token(secret, token)
            assert target == tracking.ClickTarget(delivery_id, mailing.id, position)


def test_outbox_message_links_click_through_to_the_stored_link_and_record_it(app, client):
    supporter = SupporterFactory(first_name="Ada")
    mailing = new_mailing()
    send_mailing.delay(mailing.id)

    [message] = outbox_messages(app)
    body = html_of(message)
    assert "Hi Ada," in body
    base = app.config["BASE_URL"]
    click_links = sorted(
        {part.split('"')[0] for part in body.split(f'href="{base}/c/')[1:]}, key=len
    )
    assert len(click_links) == 2
    opens = [part.split('"')[0] for part in body.split(f'src="{base}/o/')[1:]]
    assert len(opens) == 1
    assert f"{base}/c/" in text_of(message)

    responses = [client.get(f"/c/{token}") for token in click_links]
    locations = sorted(r.headers["Location"] for r in responses)
    assert all(r.status_code == 302 for r in responses)
    assert locations == ["https://news.example/story?id=7&x=1", "https://org.example/a/stop"]
    assert client.get(f"/o/{opens[0]}").status_code == 200
    [delivery] = deliveries(mailing.id)
    assert delivery.supporter_id == supporter.id
    kinds = sorted(
        db.session.scalars(
            select(TrackingEvent.kind).where(TrackingEvent.delivery_id == delivery.id)
        )
    )
    assert kinds == ["click", "click", "open"]


def test_a_name_that_looks_like_a_placeholder_is_not_used(app, sendgrid_config, fake_sendgrid):
    SupporterFactory(first_name="-click_1-")
    send_mailing.delay(new_mailing().id)
    [p] = fake_sendgrid.accepted[0].json["personalizations"]
    assert p["substitutions"]["-first_name-"] == "friend"


def test_html_body_is_sanitised_and_gets_a_text_part(app):
    SupporterFactory(first_name="Ada")
    body = (
        '<h2>Hello</h2><p>Dear {{ first_name }}, <a href="https://org.example/a/x">act</a>'
        '<script>alert(1)</script><img src="https://org.example/i.png" alt="A march"></p>'
    )
    mailing = pipeline.create_mailing(
        db.session, subject="HTML", body_md=body, body_format="html", now=utcnow()
    )
    db.session.commit()
    send_mailing.delay(mailing.id)

    [message] = outbox_messages(app)
    html_part, text_part = html_of(message), text_of(message)
    assert "<script" not in html_part and "alert(1)" not in html_part
    assert "Dear Ada," in html_part and 'alt="A march"' in html_part
    assert "Hello" in text_part and "Dear Ada, act (" in text_part and "<" not in text_part


# --- materialising range by range ------------------------------------------------------------


def test_recipients_materialise_in_ranges_and_each_gets_it_once(app, monkeypatch):
    people = [SupporterFactory() for _ in range(11)]
    SupporterFactory(status=SupporterStatus.UNSUBSCRIBED)
    monkeypatch.setattr(pipeline, "MATERIALISE_RANGE", 3)
    ranges: list[tuple[int, int] | None] = []
    original = pipeline.materialise

    def spy(session, mailing, now, daily_cap=1, id_range=None):  # type: ignore[no-untyped-def]
        ranges.append(id_range)
        return original(session, mailing, now, daily_cap, id_range)

    monkeypatch.setattr(pipeline, "materialise", spy)
    mailing = new_mailing()

    assert send_mailing.delay(mailing.id).get() == 11

    top = max(p.id for p in people) + 1  # the unsubscribed one has the highest id
    assert ranges == [(low, min(low + 3, top)) for low in range(0, top, 3)]

    rows = deliveries(mailing.id)
    assert sorted(r.supporter_id for r in rows) == sorted(p.id for p in people)
    assert {r.status for r in rows} == {"sent"}
    db.session.refresh(mailing)
    assert mailing.status == MailingStatus.SENT and mailing.recipients_count == 11
    assert len(outbox_messages(app)) == 11


def test_a_mailing_is_not_finished_while_ranges_remain(app):
    SupporterFactory()
    mailing = new_mailing()
    identity = SenderIdentity.from_config(app.config)
    pipeline.request_send(db.session, mailing, identity, utcnow())
    db.session.commit()
    # Nothing is queued yet, but nothing is materialised either: not done.
    assert not pipeline.finish_if_done(db.session, mailing.id, utcnow())
    while pipeline.materialise_next_range(db.session, mailing, utcnow()) is not None:
        pass
    db.session.execute(update(Delivery).values(status="sent"))
    assert pipeline.finish_if_done(db.session, mailing.id, utcnow())


def test_reconcile_restarts_a_materialiser_that_died_part_way(app, monkeypatch):
    people = [SupporterFactory() for _ in range(5)]
    monkeypatch.setattr(pipeline, "MATERIALISE_RANGE", 2)
    mailing = new_mailing()
    identity = SenderIdentity.from_config(app.config)
    pipeline.request_send(db.session, mailing, identity, utcnow())
    pipeline.materialise_next_range(db.session, mailing, utcnow())  # one range, then "dies"
    mailing.updated_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    assert len(deliveries(mailing.id)) == 2

    reconcile_mailings.delay()

    rows = deliveries(mailing.id)
    assert sorted(r.supporter_id for r in rows) == sorted(p.id for p in people)
    assert {r.status for r in rows} == {"sent"}


def test_send_clicked_twice_queues_nobody_twice(app):
    [SupporterFactory() for _ in range(4)]
    mailing = new_mailing()
    identity = SenderIdentity.from_config(app.config)
    for _ in range(2):
        pipeline.request_send(db.session, mailing, identity, utcnow())
        db.session.commit()
        send_mailing.delay(mailing.id)
    assert len(deliveries(mailing.id)) == 4
    assert len(outbox_messages(app)) == 4


# --- A/B subject tests ---------------------------------------------------------------------


def test_ab_test_sends_each_subject_to_its_share_then_the_winner_to_the_rest(app):
    people = [SupporterFactory() for _ in range(200)]
    mailing = new_mailing(
        subject="Subject A",
        subject_b="Subject B",
        ab_test_percent=10,
        ab_metric="opens",
        ab_decide_after_minutes=60,
    )

    send_mailing.delay(mailing.id)

    db.session.refresh(mailing)
    assert mailing.status == MailingStatus.TESTING
    test_rows = deliveries(mailing.id)
    expected = {p.id for p in people if (p.id * 2654435761) % 100 < 20}
    assert {r.supporter_id for r in test_rows} == expected
    for row in test_rows:
        assert row.variant == ("a" if (row.supporter_id * 2654435761) % 100 < 10 else "b")
    subjects = sorted(str(m["Subject"]) for m in outbox_messages(app))
    assert set(subjects) == {"Subject A", "Subject B"}
    assert len(subjects) == len(expected)

    # Machine opens don't count: variant a gets only machine opens, b one human open.
    for row in test_rows:
        machine = row.variant == "a"
        if machine or row == next(r for r in test_rows if r.variant == "b"):
            db.session.add(TrackingEvent(delivery_id=row.id, kind="open", machine=machine))
    db.session.commit()

    assert decide_ab_tests.delay().get() == 0  # the hour is not over
    db.session.execute(
        update(Mailing)
        .where(Mailing.id == mailing.id)
        .values(started_at=utcnow() - timedelta(minutes=61))
    )
    db.session.commit()
    assert decide_ab_tests.delay().get() == 1

    db.session.refresh(mailing)
    assert mailing.ab_winner == "b" and mailing.status == MailingStatus.SENT
    rows = deliveries(mailing.id)
    assert sorted(r.supporter_id for r in rows) == sorted(p.id for p in people)
    rest = [r for r in rows if r.supporter_id not in expected]
    assert rest and {r.variant for r in rest} == {"b"}
    # The report shows both subjects with their rates, and the winner.
    from tests.conftest import csrf_token
    from tests.factories import STAFF_PASSWORD, StaffFactory

    staff = StaffFactory(role="viewer")
    login = {"email": staff.email, "password": STAFF_PASSWORD}
    client = app.test_client()
    login["csrf_token"] = csrf_token(client, "/staff/login")
    assert client.post("/staff/login", data=login).status_code == 302
    report = client.get(f"/staff/mailings/{mailing.id}/report").get_data(as_text=True)
    assert "A/B subject test" in report and "B: Subject B (winner)" in report
    assert "A: Subject A</th>" in report

    messages = outbox_messages(app)
    assert len(messages) == 200  # nobody twice
    assert sum(str(m["Subject"]) == "Subject B" for m in messages) == len(rest) + sum(
        r.variant == "b" for r in test_rows
    )


def test_ab_settings_are_checked(app):
    with pytest.raises(pipeline.PipelineError, match="1 to 50 percent"):
        new_mailing(subject_b="B", ab_test_percent=70, ab_decide_after_minutes=60)
    with pytest.raises(pipeline.PipelineError, match="after how many minutes"):
        new_mailing(subject_b="B", ab_test_percent=10)


# --- scheduling ----------------------------------------------------------------------------


def test_a_scheduled_mailing_starts_when_its_time_comes(app):
    SupporterFactory()
    mailing = new_mailing()
    identity = SenderIdentity.from_config(app.config)
    with pytest.raises(pipeline.PipelineError, match="future"):
        pipeline.schedule(db.session, mailing, identity, utcnow() - timedelta(minutes=1), utcnow())
    pipeline.schedule(db.session, mailing, identity, utcnow() + timedelta(hours=2), utcnow())
    db.session.commit()

    assert start_scheduled_mailings.delay().get() == 0
    assert deliveries(mailing.id) == []
    mailing.send_at = utcnow() - timedelta(seconds=1)  # two hours later
    db.session.commit()
    assert start_scheduled_mailings.delay().get() == 1

    db.session.refresh(mailing)
    assert mailing.status == MailingStatus.SENT
    assert [r.status for r in deliveries(mailing.id)] == ["sent"]
    assert start_scheduled_mailings.delay().get() == 0  # started once


def test_unscheduled_mailing_goes_back_to_draft_and_can_change(app):
    mailing = new_mailing()
    identity = SenderIdentity.from_config(app.config)
    pipeline.schedule(db.session, mailing, identity, utcnow() + timedelta(hours=1), utcnow())
    pipeline.unschedule(db.session, mailing, utcnow())
    pipeline.update_draft(db.session, mailing, utcnow(), subject="Better subject")
    assert mailing.status == MailingStatus.DRAFT and mailing.send_at is None
    pipeline.request_send(db.session, mailing, identity, utcnow())
    with pytest.raises(pipeline.PipelineError, match="no longer change"):
        pipeline.update_draft(db.session, mailing, utcnow(), subject="Too late")


# --- previews and test sends -----------------------------------------------------------------


def test_preview_is_what_the_supporter_gets_and_says_when_they_would_not(app):
    ada = SupporterFactory(first_name="Ada")
    gone = SupporterFactory(first_name="Bo", status=SupporterStatus.UNSUBSCRIBED)
    mailing = new_mailing()
    identity = SenderIdentity.from_config(app.config)

    shown = pipeline.preview(mailing, identity, ada, utcnow())
    assert "Hi Ada," in shown.html and "Hi Ada," in shown.text
    assert 'href="https://org.example/a/stop"' in shown.html  # untracked for staff
    assert identity.postal_address in shown.text and "/u/" in shown.html
    assert shown.skip_reason == ""
    assert pipeline.preview(mailing, identity, gone, utcnow()).skip_reason
    assert "Hi friend," in pipeline.preview(mailing, identity, None, utcnow()).html


def test_test_send_goes_only_to_the_given_addresses_with_the_footer(app):
    SupporterFactory()
    mailing = new_mailing(
        subject="Hello", subject_b="Howdy", ab_test_percent=10, ab_decide_after_minutes=30
    )
    identity = SenderIdentity.from_config(app.config)
    from app.integrations.email import provider_from_config

    sent = pipeline.send_test(
        provider_from_config(app.config), identity, mailing, ["staff@org.example"], utcnow()
    )

    messages = outbox_messages(app)
    assert sent == 2 and len(messages) == 2
    assert sorted(str(m["Subject"]) for m in messages) == ["[Test] Hello", "[Test] Howdy"]
    for message in messages:
        assert str(message["To"]) == "staff@org.example"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert identity.postal_address in text_of(message)
    assert db.session.scalar(select(func.count()).select_from(Delivery)) == 0


# --- a per-recipient provider failing part-way -----------------------------------------------


def test_smtp_failing_part_way_sends_nobody_twice(app, smtp_server, monkeypatch):
    # Eager Celery replays a retry at once, but only when errors are not propagated.
    monkeypatch.setitem(app.extensions["celery"].conf, "task_eager_propagates", False)
    monkeypatch.setitem(app.config, "EMAIL_PROVIDER", "smtp")
    monkeypatch.setitem(app.config, "SMTP_HOST", smtp_server.host)
    monkeypatch.setitem(app.config, "SMTP_PORT", smtp_server.port)
    people = [SupporterFactory() for _ in range(5)]
    refused = people[2].email
    smtp_server.collector.refuse.add(refused)  # a mailbox that does not exist

    send_mailing.delay(new_mailing().id)

    got = sorted(e.rcpt_tos[0] for e in smtp_server.collector.envelopes)
    assert got == sorted(p.email for p in people if p.email != refused)  # each once
    status = {r.supporter_id: r.status for r in deliveries(Mailing.query.one().id)}
    assert status[people[2].id] == "failed"
    assert [status[p.id] for p in people if p.email != refused] == ["sent"] * 4


# --- segments --------------------------------------------------------------------------------


def test_a_mailing_to_a_segment_reaches_only_its_members_minus_exclusions(app):
    from app.supporters import segments
    from app.supporters.models import Tag
    from tests.factories import StaffFactory

    volunteers, donors = Tag(name="volunteer"), Tag(name="donor")
    db.session.add_all([volunteers, donors])
    SupporterFactory(tags=[volunteers, donors])
    only_volunteer = SupporterFactory(tags=[volunteers])
    SupporterFactory(tags=[volunteers], snoozed_until=utcnow() + timedelta(days=9))
    SupporterFactory(tags=[donors])
    SupporterFactory()
    db.session.commit()
    segment = segments.create_segment(
        db.session,
        name="Volunteers who are not donors",
        description="",
        definition={
            "match": "all",
            "include": [{"type": "tags", "mode": "any", "tag_ids": [volunteers.id]}],
            "exclude": [{"type": "tags", "mode": "any", "tag_ids": [donors.id]}],
        },
        actor=StaffFactory(role="organizer"),
        now=utcnow(),
    )
    db.session.commit()
    mailing = new_mailing(segment_id=segment.id)
    assert segments.count(db.session, segment.definition, utcnow()).mailable == 1

    send_mailing.delay(mailing.id)

    assert [r.supporter_id for r in deliveries(mailing.id)] == [only_volunteer.id]
    db.session.refresh(mailing)
    assert mailing.segment["name"] == "Volunteers who are not donors"  # what it went to


def test_a_draft_whose_segment_was_deleted_is_not_sent_to_everyone(app):
    SupporterFactory()
    mailing = new_mailing()
    mailing.segment = {"segment_id": 999, "name": "Gone"}  # chosen, then deleted (SET NULL)
    db.session.commit()
    identity = SenderIdentity.from_config(app.config)
    with pytest.raises(pipeline.PipelineError, match="was deleted"):
        pipeline.request_send(db.session, mailing, identity, utcnow())


def test_action_page_clicks_carry_the_reader_without_a_lookup(app, client, monkeypatch):
    from app.supporters.tokens import read_token

    reader = SupporterFactory()
    base = app.config["BASE_URL"]
    mailing = pipeline.create_mailing(
        db.session,
        subject="Act",
        body_md=f"[Sign]({base}/a/stop?src=mail) or [read](https://news.example/x)",
        now=utcnow(),
    )
    db.session.commit()
    send_mailing.delay(mailing.id)
    [message] = outbox_messages(app)
    tokens = [part.split('"')[0] for part in html_of(message).split(f'href="{base}/c/')[1:]]
    targets = [tracking.read_click_token(app.config["SECRET_KEY"], t) for t in tokens]
    assert [t.reader for t in targets if t] == [reader.public_id, ""]  # only our own page

    def no_lookup(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the reader is in the token: no database lookup")

    monkeypatch.setattr(tracking, "reader_token", no_lookup)
    page, other = (client.get(f"/c/{t}").headers["Location"] for t in tokens)
    query = dict(parse_qsl(urlsplit(page).query))
    assert page.startswith(f"{base}/a/stop?") and query["src"] == "mail"
    assert read_token(app.config["SECRET_KEY"], query["t"]) == reader.public_id
    assert query["mid"] == str(mailing.id)
    assert other == "https://news.example/x"  # never our token on another site


def test_reconcile_queues_tasks_again_for_rows_whose_tasks_were_lost(app):
    people = [SupporterFactory() for _ in range(3)]
    mailing = new_mailing()
    identity = SenderIdentity.from_config(app.config)
    # Materialised and committed, but the chunk tasks never reached the broker.
    pipeline.start_send(db.session, mailing, identity, utcnow())
    mailing.materialised_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    assert reconcile_mailings.delay().get() == 0  # nothing was being sent: no duplicates

    rows = deliveries(mailing.id)
    assert sorted(r.supporter_id for r in rows) == sorted(p.id for p in people)
    assert {r.status for r in rows} == {"sent"}
    db.session.refresh(mailing)
    assert mailing.status == MailingStatus.SENT and mailing.duplicates_count == 0


def test_a_throttled_mailing_waiting_for_its_hour_is_left_alone(app):
    SupporterFactory()
    mailing = new_mailing(throttle_per_hour=10)
    identity = SenderIdentity.from_config(app.config)
    pipeline.start_send(db.session, mailing, identity, utcnow())
    mailing.materialised_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    assert pipeline.stalled_queues(db.session, utcnow()) == []
