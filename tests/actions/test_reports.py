"""Staff page reports: figures that match the actions behind them, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import unescape

import pytest
from flask.testing import FlaskClient

from app.actions import reports
from app.actions.models import Action, ActionPage, CallReport, LetterDelivery
from app.extensions import db
from app.staff.models import Role
from app.supporters.models import ConsentEvent, Supporter
from app.timeutil import utcnow
from tests.actions.test_pages import sign_in
from tests.factories import ActionPageFactory, SupporterFactory, TargetFactory


def add_action(
    page: ActionPage,
    when: datetime,
    *,
    joined: datetime | None = None,
    source: str = "direct",
    utm: dict[str, str] | None = None,
    referrer_host: str = "",
    referrer: Supporter | None = None,
) -> Action:
    """One action by a new supporter whose record was made at `joined` (default: long before)."""
    person = SupporterFactory(created_at=joined or when - timedelta(days=90))
    action = Action(
        page_id=page.id,
        supporter_id=person.id,
        created_at=when,
        updated_at=when,
        source=source,
        utm=utm or {},
        referrer_host=referrer_host,
        referrer_id=referrer.id if referrer else None,
    )
    db.session.add(action)
    db.session.commit()
    return action


@pytest.fixture
def now() -> datetime:
    # Midday, so that "a few hours ago" stays on the same UTC day.
    return utcnow().replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def seeded(app, now):  # type: ignore[no-untyped-def]
    """A petition with a known mix of actions, and a second page whose actions must not count."""
    page = ActionPageFactory(slug="report-me", goal=100)
    other = ActionPageFactory(slug="not-this-one")
    ana = SupporterFactory(first_name="Ana", last_name="Costa", email="ana@example.org")
    ben = SupporterFactory(first_name="Ben", last_name="Ito", email="ben@example.org")

    today, yesterday = now, now - timedelta(days=1)
    # New supporters: their record was made with the action (within a minute).
    add_action(page, today, joined=today, source="mailing")
    add_action(page, today, joined=today - timedelta(seconds=30), source="referral", referrer=ana)
    add_action(page, yesterday, source="referral", referrer=ana)
    add_action(page, yesterday, source="referral", referrer=ben)
    add_action(
        page,
        yesterday,
        source="campaign link",
        utm={"utm_source": "newsletter", "utm_campaign": "spring"},
    )
    add_action(
        page,
        now - timedelta(days=3),
        source="campaign link",
        utm={"utm_source": "newsletter", "utm_campaign": "summer"},
    )
    add_action(page, now - timedelta(days=3), source="campaign link", utm={"utm_source": "fb"})
    add_action(page, now - timedelta(days=3), source="other site", referrer_host="news.example")
    add_action(page, now - timedelta(days=29), source="other site", referrer_host="news.example")
    add_action(page, now - timedelta(days=29), source="other site", referrer_host="blog.example")
    # Outside the 30-day chart, still in the total.
    add_action(page, now - timedelta(days=40), source="direct")
    # Another page's actions never leak in.
    add_action(other, today, joined=today, source="referral", referrer=ben)
    add_action(other, today, source="mailing", utm={"utm_source": "newsletter"})
    return page


def test_actions_per_day_cover_30_days_zero_filled(seeded, now):
    daily = reports.actions_per_day(db.session, seeded.id, now)
    assert len(daily) == 30
    assert daily[-1] == (now.strftime("%Y-%m-%d"), 2)
    assert daily[-2] == ((now - timedelta(days=1)).strftime("%Y-%m-%d"), 3)
    assert daily[-4] == ((now - timedelta(days=3)).strftime("%Y-%m-%d"), 3)
    assert daily[0] == ((now - timedelta(days=29)).strftime("%Y-%m-%d"), 2)
    assert sum(n for _, n in daily) == 10  # the 40-day-old action is outside the chart


def test_totals_sources_and_top_values(seeded, now):
    report = reports.page_report(db.session, seeded, now)
    assert report.total == 11
    assert report.new_supporters == 2
    assert report.sources == [
        ("mailing", 1),
        ("referral", 3),
        ("campaign link", 3),
        ("other site", 3),
        ("direct", 1),
    ]
    assert report.utm_sources == [("newsletter", 2), ("fb", 1)]
    assert report.utm_campaigns == [("spring", 1), ("summer", 1)]
    assert report.referrer_hosts == [("news.example", 2), ("blog.example", 1)]
    assert [(r.name, r.email, r.actions) for r in report.recruiters] == [
        ("Ana Costa", "ana@example.org", 2),
        ("Ben Ito", "ben@example.org", 1),
    ]
    assert report.letters == [] and report.calls == []


def test_opt_ins_count_people_who_joined_the_list_on_this_page(seeded, now):
    actions = db.session.query(Action).filter(Action.page_id == seeded.id).limit(3).all()
    for action, kind in zip(actions, ("subscribe", "resubscribe", "unsubscribe"), strict=True):
        db.session.add(
            ConsentEvent(
                supporter_id=action.supporter_id,
                kind=kind,
                source="action page /a/report-me",
                policy_version="test",
                created_at=now,
            )
        )
    # Joined elsewhere: not this page's opt-in.
    db.session.add(
        ConsentEvent(
            supporter_id=actions[0].supporter_id,
            kind="subscribe",
            source="signup form",
            policy_version="test",
            created_at=now,
        )
    )
    db.session.commit()
    assert reports.opt_ins(db.session, seeded) == 2


def test_letter_deliveries_and_call_outcomes_per_target(app, now):
    letter = ActionPageFactory(kind="letter", slug="letters")
    call = ActionPageFactory(kind="call", slug="calls")
    senator, governor = TargetFactory(name="Senator A"), TargetFactory(name="Governor B")
    statuses = {senator: ["sent", "sent", "queued"], governor: ["skipped", "sent"]}
    for target, states in statuses.items():
        for state in states:
            action = add_action(letter, now)
            db.session.add(LetterDelivery(action_id=action.id, target_id=target.id, status=state))
    outcomes = [(senator, "reached"), (senator, "voicemail"), (senator, "reached")]
    outcomes += [(governor, "busy"), (None, "reached")]
    for target, outcome in outcomes:
        action = add_action(call, now)
        db.session.add(
            CallReport(
                action_id=action.id, target_id=target.id if target else None, outcome=outcome
            )
        )
    db.session.commit()

    letters = reports.letter_deliveries(db.session, letter.id)
    assert [(t.name, t.counts, t.total) for t in letters] == [
        ("Senator A", {"queued": 1, "sent": 2, "skipped": 0}, 3),
        ("Governor B", {"queued": 0, "sent": 1, "skipped": 1}, 2),
    ]
    calls = reports.call_outcomes(db.session, call.id)
    assert [(t.name, t.counts) for t in calls] == [
        ("Senator A", {"reached": 2, "voicemail": 1, "busy": 0}),
        ("Governor B", {"reached": 0, "voicemail": 0, "busy": 1}),
        ("No office chosen", {"reached": 1, "voicemail": 0, "busy": 0}),
    ]
    assert reports.page_report(db.session, letter, now).letters == letters
    assert reports.page_report(db.session, call, now).calls == calls


def report_html(client: FlaskClient, page: ActionPage) -> str:
    response = client.get(f"/staff/pages/{page.id}/report")
    assert response.status_code == 200
    return unescape(response.get_data(as_text=True))


@pytest.mark.parametrize("role", list(Role))
def test_every_staff_role_reads_the_report_page(client, seeded, role):
    sign_in(client, role)
    html = report_html(client, seeded)
    assert "Report: " in html
    assert "<desc" in html and "Total 10 over 30 days; busiest day 3." in html
    assert "Show the numbers" in html
    assert "<td>mailing</td><td>1</td>" in html
    assert "<td>newsletter</td><td>2</td>" in html
    assert "<td>news.example</td><td>2</td>" in html
    assert "ana@example.org" in html and "<td>2</td>" in html
    assert '<span class="n">11</span> actions of a goal of 100' in html
    assert '<span class="n">2</span> new supporters' in html


def test_report_page_shows_per_target_tables(client, app, now):
    call = ActionPageFactory(kind="call", slug="calls")
    target = TargetFactory(name="Senator A")
    action = add_action(call, now)
    db.session.add(CallReport(action_id=action.id, target_id=target.id, outcome="voicemail"))
    db.session.commit()
    sign_in(client, Role.VIEWER)
    html = report_html(client, call)
    assert "Calls per target" in html
    assert '<th scope="row">Senator A</th><td>0</td><td>1</td><td>0</td><td>1</td>' in html


def test_report_of_a_missing_page_is_404(client, app):
    sign_in(client, Role.ADMIN)
    assert client.get("/staff/pages/999/report").status_code == 404
