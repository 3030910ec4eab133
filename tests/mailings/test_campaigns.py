"""The staff campaign service: validation, audit entries, Send twice, test sends to staff
only, schedules and the progress snapshot."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.integrations.email.outbox import OutboxProvider
from app.mailings import campaigns
from app.mailings.campaigns import CampaignError, CampaignInvalid, DraftData
from app.mailings.models import Delivery, Mailing, MailingStatus
from app.staff.models import AuditEntry, Role
from app.timeutil import utcnow
from tests.factories import StaffFactory, SupporterFactory


def draft(**fields) -> DraftData:  # type: ignore[no-untyped-def]
    values = {"subject": "Save the river", "body_md": "Hello {{ first_name }}"}
    values.update(fields)
    return DraftData(**values)


def saved(**fields) -> Mailing:  # type: ignore[no-untyped-def]
    mailing = campaigns.save_draft(db.session, None, draft(**fields), None, utcnow())
    db.session.commit()
    return mailing


def ab(percent: int, minutes: int, metric: str = "opens") -> dict[str, object]:
    return {
        "subject_b": "B",
        "ab_test_percent": percent,
        "ab_decide_after_minutes": minutes,
        "ab_metric": metric,
    }


@pytest.mark.parametrize(
    "fields, field, words",
    [
        ({"subject": "  "}, "subject", "subject line"),
        ({"body_md": ""}, "body_md", "text"),
        ({"reply_to": "nobody@"}, "reply_to", "reply-to"),
        ({"throttle_per_hour": 0}, "throttle_per_hour", "1 or more"),
        ({"body_format": "pdf"}, "body_format", "Markdown or HTML"),
        ({"from_name": 'Us "them"'}, "from_name", "quotes"),
        ({"segment_id": 999}, "segment_id", "no longer exists"),
        (ab(4, 60), "ab_test_percent", "5 and 50"),
        (ab(51, 60), "ab_test_percent", "5 and 50"),
        (ab(10, 9), "ab_decide_after_minutes", "10 and 1440"),
        (ab(10, 1441), "ab_decide_after_minutes", "10 and 1440"),
        (ab(10, 60, "likes"), "ab_metric", "opens or clicks"),
    ],
)  # fmt: skip
def test_validation_names_the_field(app, fields, field, words):
    with pytest.raises(CampaignInvalid) as caught:
        campaigns.save_draft(db.session, None, draft(**fields), None, utcnow())
    assert list(caught.value.errors) == [field]
    assert words in caught.value.errors[field]


def test_ab_settings_at_their_limits_are_kept_and_dropped_without_a_second_subject(app):
    ab = saved(subject_b="Or the lake", ab_test_percent=50, ab_decide_after_minutes=10)
    assert (ab.ab_test_percent, ab.ab_decide_after_minutes) == (50, 10)
    plain = saved(ab_test_percent=20, ab_decide_after_minutes=30, ab_metric="clicks")
    assert (plain.ab_test_percent, plain.ab_decide_after_minutes, plain.ab_metric) == (
        None,
        None,
        "opens",
    )


def test_a_mailing_under_way_cannot_change(app, identity):
    SupporterFactory()
    mailing = saved()
    after = campaigns.send_now(db.session, mailing, None, identity, utcnow())
    db.session.commit()
    after.run()
    with pytest.raises(CampaignError, match="can no longer change"):
        campaigns.save_draft(db.session, mailing, draft(subject="Changed"), None, utcnow())


def test_send_twice_is_one_send_and_one_audit_entry(app, identity, outbox):
    people = [SupporterFactory() for _ in range(3)]
    staff = StaffFactory(role=Role.ORGANIZER.value)
    mailing = saved()
    # Two clicks before the worker has started: the second changes nothing.
    afters = []
    for _ in range(2):
        afters.append(campaigns.send_now(db.session, mailing, staff, identity, utcnow()))
        db.session.commit()
    for after in afters:
        after.run()
    with pytest.raises(CampaignError, match="is sent"):  # and once it has gone, it is refused
        campaigns.send_now(
            db.session, db.session.get(Mailing, mailing.id), staff, identity, utcnow()
        )

    assert sorted(e.to for e in outbox.entries()) == sorted(p.email for p in people)
    rows = db.session.scalars(select(Delivery).where(Delivery.mailing_id == mailing.id))
    assert len(list(rows)) == 3
    entries = list(
        db.session.scalars(select(AuditEntry).where(AuditEntry.action == "mailing.send"))
    )
    assert [(e.staff_user_id, e.object_id) for e in entries] == [(staff.id, str(mailing.id))]


def test_send_follows_the_checks(app, identity):
    from app.mailings.checks import Finding

    SupporterFactory()
    mailing = saved()
    with pytest.raises(CampaignError, match="must be fixed"):
        campaigns.send_now(
            db.session, mailing, None, identity, utcnow(), findings=[Finding("error", "x")]
        )
    with pytest.raises(CampaignError, match="read the warnings"):
        campaigns.send_now(
            db.session, mailing, None, identity, utcnow(), findings=[Finding("warning", "x")]
        )
    assert mailing.status == MailingStatus.DRAFT
    campaigns.send_now(
        db.session,
        mailing,
        None,
        identity,
        utcnow(),
        findings=[Finding("warning", "x"), Finding("hint", "y")],
        warnings_read=True,
    )
    assert mailing.status == MailingStatus.SENDING


def test_test_sends_go_only_to_active_staff(app, identity, outbox):
    supporter = SupporterFactory(email="member@example.org")
    active = StaffFactory(email="me@example.org")
    StaffFactory(email="gone@example.org", active=False)
    mailing = saved()
    provider = OutboxProvider(app.config["OUTBOX_DIR"])

    for addresses in ([supporter.email], ["gone@example.org"], [], ["me@example.org", "x@y.org"]):
        with pytest.raises(CampaignInvalid) as caught:
            campaigns.send_test(
                db.session, provider, identity, mailing, active, addresses, utcnow()
            )
        assert list(caught.value.errors) == ["addresses"]
    assert outbox.entries() == []

    sent = campaigns.send_test(
        db.session, provider, identity, mailing, active, ["  ME@example.org "], utcnow()
    )
    assert sent == 1 and [e.to for e in outbox.entries()] == ["me@example.org"]
    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "mailing.test_send"))
    assert entry.detail == {"messages": 1}  # how many, never to whom


def test_schedule_needs_a_future_time_and_unschedule_returns_a_draft(app, identity):
    mailing = saved()
    now = utcnow()
    for when in (None, now, now - timedelta(minutes=1)):
        with pytest.raises(CampaignInvalid) as caught:
            campaigns.schedule(db.session, mailing, None, identity, when, now)
        assert list(caught.value.errors) == ["send_at"]
    campaigns.schedule(db.session, mailing, None, identity, now + timedelta(hours=2), now)
    assert mailing.status == MailingStatus.SCHEDULED
    campaigns.unschedule(db.session, mailing, None, now)
    assert (mailing.status, mailing.send_at) == (MailingStatus.DRAFT, None)
    with pytest.raises(CampaignError, match="not scheduled"):
        campaigns.unschedule(db.session, mailing, None, now)


def test_progress_counts_each_state(app, identity):
    from app.mailings.tasks import send_mailing

    for _ in range(4):
        SupporterFactory()
    mailing = saved()
    before = campaigns.progress(db.session, mailing)
    assert (before.recipients, before.percent, before.active) == (0, 0, False)

    campaigns.send_now(
        db.session, mailing, None, identity, utcnow()
    )  # not run: the worker is "down"
    db.session.commit()
    waiting = campaigns.progress(db.session, mailing)
    assert waiting.active and waiting.materialising and waiting.recipients == 0

    campaigns.pause(db.session, mailing, None, utcnow())
    db.session.commit()
    send_mailing.apply(args=[mailing.id])
    db.session.expire_all()
    mailing = db.session.get(Mailing, mailing.id)
    rows = list(db.session.scalars(select(Delivery).where(Delivery.mailing_id == mailing.id)))
    rows[0].status, rows[1].status = "sent", "skipped"
    db.session.commit()
    snapshot = campaigns.progress(db.session, mailing)
    assert snapshot.as_dict() == {
        "status": "paused",
        "recipients": 4,
        "sent": 1,
        "skipped": 1,
        "failed": 0,
        "cancelled": 0,
        "queued": 2,
        "percent": 50,
        "materialising": False,
        "active": False,
    }
