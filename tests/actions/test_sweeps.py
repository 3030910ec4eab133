"""Beat sweeps for RSVP emails and letter copies whose task never reached the broker.

Each test takes actions the way the web request does but never queues the email
(as when the broker is down), then runs the beat job, which in tests is eager:
the email is sent right there.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from app.actions import events, letter_tasks, letters
from app.actions import service as actions
from app.actions import tasks as action_tasks
from app.actions.models import ActionPage, EventRsvp, PageTarget, Target
from app.extensions import db
from app.mailings.models import EmailLog
from app.supporters import service as supporters
from app.supporters.models import Supporter
from app.timeutil import utcnow
from tests.factories import ActionPageFactory, SupporterFactory, TargetFactory

NEXT_YEAR = utcnow().year + 1
EVENT = {
    "starts_at": f"{NEXT_YEAR}-12-10T18:30",
    "ends_at": f"{NEXT_YEAR}-12-10T20:00",
    "timezone": "America/New_York",
    "venue": "Community Hall, 12 Main Street",
}


def minutes_ago(minutes: float) -> datetime:
    return utcnow() - timedelta(minutes=minutes)


def event_page(**settings: object) -> ActionPage:
    return ActionPageFactory(
        kind="event", title="Candlelight vigil", settings={**EVENT, **settings}
    )


def letter_page(*offices: Target) -> ActionPage:
    page = ActionPageFactory(
        kind="letter", settings={"letter_subject": "Protect civilians", "letter_body": "Dear..."}
    )
    for office in offices:
        db.session.add(PageTarget(page_id=page.id, target_id=office.id))
    db.session.commit()
    db.session.expire_all()
    return page


def act(page: ActionPage, address: str, when: datetime) -> actions.ActionResult:
    """Take the action and commit, without queueing any email (the broker was down)."""
    result = actions.take_action(
        db.session,
        page,
        supporters.SignupData(address, "Nadia", "Okafor", "10001", "US"),
        False,
        actions.ActionDetails(letter_body="Please act."),
        actions.Attribution(),
        when,
    )
    db.session.commit()
    return result


def rsvp_of(address: str) -> EventRsvp:
    db.session.expire_all()
    rsvp = db.session.scalar(
        select(EventRsvp).join(Supporter).where(Supporter.email == address.lower())
    )
    assert rsvp is not None
    return rsvp


def cancel(page: ActionPage, address: str, when: datetime) -> EventRsvp | None:
    supporter = db.session.scalar(select(Supporter).where(Supporter.email == address.lower()))
    promoted = events.cancel_rsvp(db.session, supporter, page, when)
    db.session.commit()
    return promoted


def address() -> str:
    return f"p-{uuid.uuid4().hex[:8]}@example.org"


def mail_to(outbox, to: str) -> list:  # type: ignore[no-untyped-def]
    return [m for m in (outbox.read(e.name) for e in outbox.entries()) if m["To"] == to]


def logs() -> dict[str, tuple[str, str]]:
    """Every email log row: dedupe key -> (template, status)."""
    db.session.expire_all()
    return {r.dedupe_key: (r.template, r.status) for r in db.session.scalars(select(EmailLog))}


def failed_log(key: str, template: str) -> None:
    db.session.add(EmailLog(dedupe_key=key, template=template, status="failed", error="429"))
    db.session.commit()


# RSVPs


def test_rsvp_emails_never_queued_are_swept_up_and_sent_once(app, outbox):
    page = event_page(capacity=1)
    going, waiting = address(), address()
    act(page, going, minutes_ago(10))
    act(page, waiting, minutes_ago(9))
    a, b = rsvp_of(going), rsvp_of(waiting)
    assert (a.status, b.status) == ("going", "waitlisted")

    assert events.pending_rsvp_emails(db.session, utcnow()) == [
        (a.id, "going"),
        (b.id, "waitlisted"),
    ]
    assert action_tasks.send_pending_rsvp_emails() == 2

    assert len(mail_to(outbox, going)) == 1 and len(mail_to(outbox, waiting)) == 1
    assert logs() == {
        events.rsvp_email_key(a.id, "going", a.updated_at): ("event-confirmation", "sent"),
        events.rsvp_email_key(b.id, "waitlisted", b.updated_at): ("event-waitlisted", "sent"),
    }
    # The next sweep finds nothing left to do.
    assert action_tasks.send_pending_rsvp_emails() == 0
    assert len(outbox.entries()) == 2


def test_rsvp_emails_sent_or_failed_are_not_swept(app, outbox):
    page = event_page()
    sent, failed, owed = address(), address(), address()
    act(page, sent, minutes_ago(10))
    act(page, failed, minutes_ago(10))
    act(page, owed, minutes_ago(10))
    assert action_tasks.send_rsvp_email(rsvp_of(sent).id, "going") == "sent"
    b = rsvp_of(failed)
    # A failed send belongs to its own task's retries, not to the sweep.
    failed_log(events.rsvp_email_key(b.id, "going", b.updated_at), "event-confirmation")

    assert events.pending_rsvp_emails(db.session, utcnow()) == [(rsvp_of(owed).id, "going")]
    assert action_tasks.send_pending_rsvp_emails() == 1
    assert len(mail_to(outbox, sent)) == 1 and len(mail_to(outbox, owed)) == 1
    assert mail_to(outbox, failed) == [] and len(outbox.entries()) == 2
    assert logs()[events.rsvp_email_key(b.id, "going", b.updated_at)][1] == "failed"


def test_a_promoted_rsvp_is_swept_for_its_promotion_only(app, outbox):
    page = event_page(capacity=1)
    leaving, waiting = address(), address()
    act(page, leaving, minutes_ago(30))
    act(page, waiting, minutes_ago(29))
    # Neither the waitlist email nor, after the cancellation, the promotion was queued.
    promoted = cancel(page, leaving, minutes_ago(10))
    assert promoted is not None and promoted.id == rsvp_of(waiting).id
    b = rsvp_of(waiting)
    assert b.status == "going"

    assert events.pending_rsvp_emails(db.session, utcnow()) == [(b.id, "promoted")]
    assert action_tasks.send_pending_rsvp_emails() == 1

    assert logs() == {
        events.rsvp_email_key(b.id, "promoted", b.updated_at): ("event-promoted", "sent"),
    }
    assert mail_to(outbox, leaving) == [] and len(mail_to(outbox, waiting)) == 1
    # The promotion task, arriving late after all, sends nothing more.
    assert action_tasks.send_rsvp_email(b.id, "promoted") == "already-sent"
    assert action_tasks.send_pending_rsvp_emails() == 0


def test_a_late_task_for_the_same_change_never_sends_a_second_email(app, outbox):
    """Came back, then sent the form again: the sweep cannot tell this from a promotion.

    It sends "promoted"; the "going" task, arriving after all, sees that email and stops.
    """
    page = event_page()
    back = address()
    act(page, back, minutes_ago(30))
    cancel(page, back, minutes_ago(20))
    act(page, back, minutes_ago(10))  # came back: going again
    act(page, back, minutes_ago(5))  # the form again: the RSVP is unchanged
    again = rsvp_of(back)

    assert events.pending_rsvp_emails(db.session, utcnow()) == [(again.id, "promoted")]
    assert action_tasks.send_pending_rsvp_emails() == 1
    assert action_tasks.send_rsvp_email(again.id, "going") == "already-sent"
    assert len(mail_to(outbox, back)) == 1
    assert action_tasks.send_pending_rsvp_emails() == 0


def test_an_email_for_an_earlier_status_does_not_cover_the_current_one(app, outbox):
    page = event_page()
    back = address()
    act(page, back, minutes_ago(30))
    first = rsvp_of(back)
    assert action_tasks.send_rsvp_email(first.id, "going") == "sent"
    cancel(page, back, minutes_ago(20))
    act(page, back, minutes_ago(10))  # came back: a new confirmation is owed, never queued
    again = rsvp_of(back)
    assert again.status == "going" and again.updated_at != first.created_at

    assert events.pending_rsvp_emails(db.session, utcnow()) == [(again.id, "going")]
    assert action_tasks.send_pending_rsvp_emails() == 1
    key = events.rsvp_email_key(again.id, "going", again.updated_at)
    assert logs()[key] == ("event-confirmation", "sent")
    assert len(mail_to(outbox, back)) == 2


def test_cancelled_rsvps_are_not_swept(app, outbox):
    page = event_page()
    gone, owed = address(), address()
    act(page, gone, minutes_ago(30))
    act(page, owed, minutes_ago(30))
    cancel(page, gone, minutes_ago(10))

    assert events.pending_rsvp_emails(db.session, utcnow()) == [(rsvp_of(owed).id, "going")]
    assert action_tasks.send_pending_rsvp_emails() == 1
    assert mail_to(outbox, gone) == [] and len(outbox.entries()) == 1


def test_rsvps_too_recent_or_too_old_are_not_swept(app, outbox):
    page = event_page()
    recent = address()
    act(page, recent, minutes_ago(1))  # its own task may still be on the way
    act(page, address(), minutes_ago(60 * 24 * 4))  # too late to confirm now
    past = event_page(starts_at="2020-01-01T18:00", ends_at="2020-01-01T20:00")
    db.session.add(
        EventRsvp(
            page_id=past.id,
            supporter_id=SupporterFactory().id,
            status="going",
            created_at=minutes_ago(10),
            updated_at=minutes_ago(10),
        )
    )
    db.session.commit()  # an RSVP to an event that is over: nothing to confirm
    owed = address()
    act(page, owed, minutes_ago(10))

    assert events.pending_rsvp_emails(db.session, utcnow()) == [(rsvp_of(owed).id, "going")]
    assert action_tasks.send_pending_rsvp_emails() == 1
    assert len(mail_to(outbox, owed)) == 1 and len(outbox.entries()) == 1
    # Two minutes on, the recent one is owed.
    later = utcnow() + timedelta(minutes=2)
    assert events.pending_rsvp_emails(db.session, later) == [(rsvp_of(recent).id, "going")]


# Letter copies


def copy_key(result: actions.ActionResult) -> str:
    return f"letter-copy:{result.action.id}"


def test_a_letter_copy_never_queued_is_swept_up_and_sent_once(app, outbox):
    office = TargetFactory()
    page = letter_page(office)
    signer = address()
    result = act(page, signer, minutes_ago(10))

    assert letters.pending_copy_ids(db.session, utcnow()) == [result.action.id]
    assert letter_tasks.send_pending_copies() == 1

    [copy] = mail_to(outbox, signer)
    assert "Please act." in copy.get_body(preferencelist=("plain",)).get_content()
    assert logs()[copy_key(result)] == ("letter-copy", "sent")
    assert mail_to(outbox, office.office_email) == []  # the sweep sends copies, not letters
    assert letter_tasks.send_pending_copies() == 0
    assert len(mail_to(outbox, signer)) == 1


def test_letter_copies_sent_or_failed_are_not_swept(app, outbox):
    page = letter_page(TargetFactory())
    sent, failed, owed = address(), address(), address()
    sent_result = act(page, sent, minutes_ago(10))
    failed_result = act(page, failed, minutes_ago(10))
    owed_result = act(page, owed, minutes_ago(10))
    assert letter_tasks.send_copy(sent_result.action.id) == "sent"
    failed_log(copy_key(failed_result), "letter-copy")

    assert letters.pending_copy_ids(db.session, utcnow()) == [owed_result.action.id]
    assert letter_tasks.send_pending_copies() == 1
    assert len(mail_to(outbox, sent)) == 1 and len(mail_to(outbox, owed)) == 1
    assert mail_to(outbox, failed) == [] and len(outbox.entries()) == 2
    assert logs()[copy_key(failed_result)] == ("letter-copy", "failed")


def test_a_letter_that_reached_no_office_is_owed_no_copy(app, outbox):
    page = letter_page()  # no offices to write to
    result = act(page, address(), minutes_ago(10))
    assert result.extra["letter_copy"] is False
    owed = address()
    owed_result = act(letter_page(TargetFactory()), owed, minutes_ago(10))

    assert letters.pending_copy_ids(db.session, utcnow()) == [owed_result.action.id]
    assert letter_tasks.send_pending_copies() == 1
    assert len(mail_to(outbox, owed)) == 1 and len(outbox.entries()) == 1


def test_a_copy_is_owed_from_when_the_letter_first_reached_an_office(app, outbox):
    page = letter_page()
    signer = address()
    act(page, signer, minutes_ago(60 * 24 * 5))  # days ago, to nobody
    office = TargetFactory()
    db.session.add(PageTarget(page_id=page.id, target_id=office.id))
    db.session.commit()
    result = act(page, signer, minutes_ago(10))  # now it reaches an office
    assert result.extra["letter_copy"] is True

    assert letters.pending_copy_ids(db.session, utcnow()) == [result.action.id]
    assert letter_tasks.send_pending_copies() == 1
    assert len(mail_to(outbox, signer)) == 1

    # A further office later is not a reason for a second copy.
    db.session.add(PageTarget(page_id=page.id, target_id=TargetFactory().id))
    db.session.commit()
    assert act(page, signer, minutes_ago(5)).extra["letter_copy"] is False
    assert letter_tasks.send_pending_copies() == 0
    assert len(mail_to(outbox, signer)) == 1


def test_letter_copies_too_recent_or_too_old_are_not_swept(app, outbox):
    page = letter_page(TargetFactory())
    recent = act(page, address(), minutes_ago(1))
    act(page, address(), minutes_ago(60 * 24 * 4))
    owed = address()
    owed_result = act(page, owed, minutes_ago(10))

    assert letters.pending_copy_ids(db.session, utcnow()) == [owed_result.action.id]
    assert letter_tasks.send_pending_copies() == 1
    assert len(mail_to(outbox, owed)) == 1 and len(outbox.entries()) == 1
    later = utcnow() + timedelta(minutes=2)
    assert letters.pending_copy_ids(db.session, later) == [recent.action.id]


def test_the_sweeps_run_on_the_beat(app):
    schedule = app.config["CELERY"]["beat_schedule"]
    tasks = {entry["task"]: entry["schedule"] for entry in schedule.values()}
    assert tasks["actions.send_pending_rsvp_emails"] == 300.0
    assert tasks["letters.send_pending_copies"] == 300.0
