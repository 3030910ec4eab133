"""The mailing report: every figure from set-based SQL, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.actions.models import Action
from app.extensions import db
from app.mailings import reports
from app.mailings.models import (
    Delivery,
    DeliveryStatus,
    Mailing,
    MailingLink,
    ProviderEvent,
    TrackingEvent,
)
from app.staff.models import Role
from app.supporters.models import ConsentEvent
from tests.conftest import csrf_token
from tests.factories import STAFF_PASSWORD, ActionPageFactory, StaffFactory, SupporterFactory

START = datetime(2026, 11, 2, 15, 0, 0)
LINKS = ["https://example.org/a/river", "https://example.org/donate"]


def hours(n: float) -> datetime:
    return START + timedelta(hours=n)


def build_mailing() -> tuple[Mailing, list[Delivery]]:
    """Six recipients: five sent (one still sending, never sent)."""
    mailing = Mailing(subject="Save the river", status="sent", started_at=START)
    other = Mailing(subject="Another mailing", status="sent", started_at=START)
    db.session.add_all([mailing, other])
    db.session.flush()
    for position, url in enumerate(LINKS):
        db.session.add(MailingLink(mailing_id=mailing.id, position=position, url=url))
    deliveries = []
    for i in range(6):
        sent = i < 5
        row = Delivery(
            mailing_id=mailing.id,
            supporter_id=SupporterFactory().id,
            status=DeliveryStatus.SENT if sent else DeliveryStatus.SENDING,
            sent_at=hours(0) + timedelta(minutes=i) if sent else None,
        )
        deliveries.append(row)
    stray = Delivery(
        mailing_id=other.id,
        supporter_id=deliveries[0].supporter_id,
        status=DeliveryStatus.SENT,
        sent_at=hours(0),
    )
    db.session.add_all([*deliveries, stray])
    db.session.flush()

    def hit(d: Delivery, kind: str, at: float, machine: bool = False, pos: int | None = None):  # type: ignore[no-untyped-def]
        db.session.add(
            TrackingEvent(
                delivery_id=d.id,
                kind=kind,
                created_at=hours(at),
                machine=machine,
                link_position=pos,
            )
        )

    d = deliveries
    hit(d[0], "open", 0.5)
    hit(d[0], "open", 3.2)  # a repeat open
    hit(d[0], "click", 0.6, pos=0)
    hit(d[0], "click", 0.7, pos=0)  # a repeat click
    hit(d[0], "click", 0.8, pos=1)
    hit(d[1], "open", 0.01, machine=True)  # a proxy on delivery …
    hit(d[1], "open", 5.5)  # … then the person
    hit(d[2], "open", 0.01, machine=True)  # only ever a machine
    hit(d[3], "open", 50)  # after the chart's 48 hours
    hit(d[3], "click", 50.1, pos=1)
    hit(stray, "open", 1)  # another mailing's open: not counted here
    hit(stray, "click", 1, pos=0)

    def provider(d: Delivery, kind: str, n: int) -> None:
        db.session.add(
            ProviderEvent(
                provider="sendgrid",
                event_id=f"e{n}",
                event_type=kind,
                delivery_id=d.id,
                payload={},
                received_at=hours(1),
            )
        )

    for n, row in enumerate(d[:4]):
        provider(row, "delivered", n)
    provider(d[0], "delivered", 10)  # SendGrid sometimes repeats
    provider(d[4], "bounce", 11)
    provider(d[3], "spamreport", 12)
    provider(d[3], "unsubscribe", 13)
    provider(stray, "bounce", 14)

    # d[2] unsubscribed on our own page a day later; d[1] had unsubscribed before the mailing.
    db.session.add_all(
        [
            ConsentEvent(
                supporter_id=d[2].supporter_id,
                kind="unsubscribe",
                source="preferences page",
                policy_version="1",
                created_at=hours(24),
            ),
            ConsentEvent(
                supporter_id=d[1].supporter_id,
                kind="unsubscribe",
                source="preferences page",
                policy_version="1",
                created_at=hours(-24),
            ),
        ]
    )
    page = ActionPageFactory()
    for row in d[:2]:
        db.session.add(
            Action(page_id=page.id, supporter_id=row.supporter_id, mailing_id=mailing.id)
        )
    db.session.add(Action(page_id=page.id, supporter_id=d[2].supporter_id))  # not from a mailing
    db.session.commit()
    return mailing, deliveries


def test_the_mailing_report_counts(app) -> None:  # type: ignore[no-untyped-def]
    mailing, _ = build_mailing()
    report = reports.mailing_report(db.session, mailing.id)
    assert report is not None
    assert report.started_at == START
    assert (report.recipients, report.sent, report.delivered) == (6, 5, 4)
    assert (report.bounced, report.dropped, report.complaints) == (1, 0, 1)
    assert report.opens_total == 6
    assert report.opens_unique == 4
    assert report.opens_unique_human == 3
    assert report.opens_unique_machine == 1
    assert (report.clicks_total, report.clicks_unique, report.clicks_unique_human) == (4, 2, 2)
    assert report.links == [
        reports.LinkClicks(0, LINKS[0], unique=1, total=2),
        reports.LinkClicks(1, LINKS[1], unique=2, total=2),
    ]
    assert report.unsubscribes == 2  # d[3] through SendGrid, d[2] on our page; not d[1]
    assert report.actions == 2
    assert report.money_raised_cents is None
    assert report.rate(report.opens_unique_human) == 3 / 5


def test_the_first_48_hours_by_hour(app) -> None:  # type: ignore[no-untyped-def]
    mailing, _ = build_mailing()
    report = reports.mailing_report(db.session, mailing.id)
    assert report is not None
    assert len(report.hourly) == 48
    by_hour = {b.hour: b for b in report.hourly if b.human_opens or b.machine_opens or b.clicks}
    assert by_hour == {
        0: reports.HourBucket(0, human_opens=1, machine_opens=2, clicks=3),
        3: reports.HourBucket(3, human_opens=1, machine_opens=0, clicks=0),
        5: reports.HourBucket(5, human_opens=1, machine_opens=0, clicks=0),
    }


def test_an_empty_or_missing_mailing(app) -> None:  # type: ignore[no-untyped-def]
    assert reports.mailing_report(db.session, 12345) is None
    mailing = Mailing(subject="Draft")
    db.session.add(mailing)
    db.session.commit()
    report = reports.mailing_report(db.session, mailing.id)
    assert report is not None
    assert (report.recipients, report.sent, report.opens_unique, report.links) == (0, 0, 0, [])
    assert report.started_at is None
    assert [b.human_opens for b in report.hourly] == [0] * 48
    assert report.rate(0) == 0.0


def test_staff_see_the_report_with_its_chart(app, client) -> None:  # type: ignore[no-untyped-def]
    mailing, _ = build_mailing()
    path = f"/staff/mailings/{mailing.id}/report"
    assert client.get(path).status_code == 302  # sign in first
    staff = StaffFactory(role=Role.VIEWER.value)
    token = csrf_token(client, "/staff/login")
    data = {"email": staff.email, "password": STAFF_PASSWORD, "csrf_token": token}
    assert client.post("/staff/login", data=data).status_code == 302
    html = client.get(path).get_data(as_text=True)
    assert "Report: Save the river" in html
    assert "<svg" in html and "hour 0: 1 opens" in html and "hour 0: 3 clicks" in html
    assert LINKS[1] in html
    assert client.get("/staff/mailings/98765/report").status_code == 404
