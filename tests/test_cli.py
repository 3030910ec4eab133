"""The `flask` commands staff use: accounts and demo data."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app.cli import DEMO_STAFF_EMAIL
from app.extensions import db
from app.staff import service as staff_service
from app.staff.models import AuditEntry, StaffUser
from app.supporters.models import ConsentEvent, Supporter
from app.timeutil import utcnow

PASSWORD = "a sufficiently long pass"


def _staff() -> list[StaffUser]:
    db.session.expire_all()
    return list(db.session.scalars(select(StaffUser).order_by(StaffUser.id)))


def _assert_clean_failure(result, message: str) -> None:  # type: ignore[no-untyped-def]
    """Exit code non-zero, a readable message, and no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert message in result.output
    assert "Traceback" not in result.output


def test_staff_create_with_password(runner):
    result = runner.invoke(
        args=["staff", "create", "Admin@Example.org", "--role", "admin", "--password", PASSWORD]
    )

    assert result.exit_code == 0, result.output
    assert "Created admin admin@example.org" in result.output
    [user] = _staff()
    assert (user.email, user.role, user.active) == ("admin@example.org", "admin", True)
    assert PASSWORD not in user.password_hash and user.password_hash.startswith("$argon2")
    assert staff_service.authenticate(db.session, "admin@example.org", PASSWORD, utcnow())
    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "staff.create"))
    assert entry.object_id == str(user.id) and entry.detail == {"role": "admin"}
    assert PASSWORD not in str(entry.detail)


def test_staff_create_prompts_for_a_hidden_password(runner):
    result = runner.invoke(
        args=["staff", "create", "organizer@example.org", "--role", "organizer"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )

    assert result.exit_code == 0, result.output
    assert "Password" in result.output and "Repeat for confirmation" in result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    [user] = _staff()
    assert user.role == "organizer"
    assert staff_service.authenticate(db.session, user.email, PASSWORD, utcnow())


def test_staff_create_defaults_to_viewer(runner):
    result = runner.invoke(args=["staff", "create", "v@example.org", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    assert [u.role for u in _staff()] == ["viewer"]


def test_staff_create_refuses_a_short_password(runner):
    result = runner.invoke(
        args=["staff", "create", "a@example.org", "--role", "admin", "--password", "short"]
    )
    _assert_clean_failure(result, "at least 12 characters")
    assert _staff() == []


def test_staff_create_refuses_a_short_prompted_password(runner):
    result = runner.invoke(args=["staff", "create", "a@example.org"], input="short\nshort\n")
    _assert_clean_failure(result, "at least 12 characters")
    assert _staff() == []


def test_staff_create_refuses_a_duplicate(runner):
    args = ["staff", "create", "a@example.org", "--role", "admin", "--password", PASSWORD]
    assert runner.invoke(args=args).exit_code == 0

    again = runner.invoke(args=["staff", "create", "A@EXAMPLE.ORG", "--password", PASSWORD])

    _assert_clean_failure(again, "already a staff account")
    assert len(_staff()) == 1


def test_staff_create_refuses_an_unknown_role(runner):
    result = runner.invoke(
        args=["staff", "create", "a@example.org", "--role", "superuser", "--password", PASSWORD]
    )
    _assert_clean_failure(result, "Invalid value for '--role'")
    assert "admin" in result.output  # it says which roles exist
    assert _staff() == []


def test_staff_create_refuses_a_bad_address(runner):
    result = runner.invoke(args=["staff", "create", "not-an-address", "--password", PASSWORD])
    _assert_clean_failure(result, "email address")
    assert _staff() == []


def test_ensure_demo_prints_a_login_only_once(runner):
    first = runner.invoke(args=["staff", "ensure-demo"])

    assert first.exit_code == 0, first.output
    assert DEMO_STAFF_EMAIL in first.output
    match = re.search(r"password:\s+(\S+)", first.output)
    assert match, first.output
    user = staff_service.authenticate(db.session, DEMO_STAFF_EMAIL, match.group(1), utcnow())
    assert user is not None and user.role == "admin"

    second = runner.invoke(args=["staff", "ensure-demo"])

    assert second.exit_code == 0, second.output
    assert "password" not in second.output.lower() and match.group(1) not in second.output
    assert len(_staff()) == 1


def test_ensure_demo_does_nothing_when_staff_exist(runner):
    runner.invoke(args=["staff", "create", "a@example.org", "--password", PASSWORD])
    result = runner.invoke(args=["staff", "ensure-demo"])
    assert result.exit_code == 0 and result.output == ""
    assert [u.email for u in _staff()] == ["a@example.org"]


def _demo_supporters() -> int:
    db.session.expire_all()
    return (
        db.session.scalar(select(func.count()).where(Supporter.email.like("demo-%@example.org")))
        or 0
    )


def test_demo_seed_is_idempotent(runner):
    outputs = [runner.invoke(args=["demo", "seed", "--supporters", "300"]) for _ in range(2)]

    assert [r.exit_code for r in outputs] == [0, 0], [r.output for r in outputs]
    assert "300 created" in outputs[0].output
    assert "0 created" in outputs[1].output
    assert _demo_supporters() == 300
    assert db.session.scalar(select(func.count()).select_from(Supporter)) == 300
    # Every demo supporter has its consent on the ledger, and none is owed a welcome.
    assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 300
    assert db.session.scalar(select(func.count()).where(Supporter.welcomed_at.is_(None))) == 0
    emails = db.session.scalars(select(Supporter.email)).all()
    assert len(set(emails)) == 300 and all(e.endswith("@example.org") for e in emails)
    # One draft mailing, whose links point at live demo pages.
    from app.mailings.models import Mailing

    assert "1 draft added" in outputs[0].output and "0 draft added" in outputs[1].output
    [mailing] = db.session.scalars(select(Mailing)).all()
    assert mailing.status == "draft"
    assert "/a/make-prevention-a-priority" in mailing.body_md


def test_demo_seed_tops_up(runner):
    assert runner.invoke(args=["demo", "seed", "--supporters", "120"]).exit_code == 0
    result = runner.invoke(args=["demo", "seed", "--supporters", "300"])
    assert result.exit_code == 0, result.output
    assert "180 created" in result.output
    assert _demo_supporters() == 300


def test_demo_seed_refuses_a_negative_count(runner):
    result = runner.invoke(args=["demo", "seed", "--supporters", "-5"])
    _assert_clean_failure(result, "Invalid value for '--supporters'")
    assert _demo_supporters() == 0


# --- mailings ---------------------------------------------------------------------------


def test_mailings_create_resolves_a_saved_segment_by_name(runner, tmp_path):
    from app.mailings.models import Mailing
    from app.supporters.models import Segment

    segment = Segment(name="Riverside", definition={})
    db.session.add(segment)
    db.session.commit()
    body = tmp_path / "body.md"
    body.write_text("Hello {{ first_name }}")

    made = runner.invoke(
        args=[
            "mailings",
            "create",
            "--subject",
            "Hi",
            "--body",
            str(body),
            "--segment",
            "Riverside",
        ]
    )
    assert made.exit_code == 0, made.output
    mailing = db.session.get(Mailing, int(made.output.strip()))
    assert mailing.segment_id == segment.id and mailing.status == "draft"
    [entry] = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "mailing.create"))
    assert entry.object_id == str(mailing.id)

    unknown = runner.invoke(
        args=["mailings", "create", "--subject", "Hi", "--body", str(body), "--segment", "Nope"]
    )
    _assert_clean_failure(unknown, "no saved segment is called 'Nope'")
    assert db.session.scalar(select(func.count()).select_from(Mailing)) == 1


def test_mailings_create_refuses_an_empty_subject_and_send_an_unknown_id(runner, tmp_path):
    body = tmp_path / "body.md"
    body.write_text("Hello")
    empty = runner.invoke(args=["mailings", "create", "--subject", " ", "--body", str(body)])
    _assert_clean_failure(empty, "Please write a subject line.")
    _assert_clean_failure(runner.invoke(args=["mailings", "send", "42"]), "no mailing 42")
    _assert_clean_failure(
        runner.invoke(args=["mailings", "control", "pause", "42"]), "no mailing 42"
    )
