"""Targets: CSV import (service, CLI, staff page) and matching a signer to their officials."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from app.actions import targets as service
from app.actions.models import PageTarget, Target
from app.staff.models import AuditEntry, Role
from app.timeutil import utcnow
from tests.conftest import csrf_token
from tests.factories import ActionPageFactory, TargetFactory
from tests.staff.test_staff import any_csrf, signed_in

GOOD_CSV = """name,title,office_email,phone,region,postal_codes
Senator Ada Byron,Senator,Office@Byron.Example,+1 202 555 0101,NY,10001 10002 112*
Rep. Grace Hopper,Representative,hopper@house.example,,NY,100*
MP Mary Seacole,MP,seacole@parliament.example,,London,N1 9GU; n1 7*
Councillor Ida Wells,Councillor,,+1 312 555 0199,IL,
"""


def by_name(db_session) -> dict[str, Target]:  # type: ignore[no-untyped-def]
    db_session.expire_all()
    return {t.name: t for t in db_session.scalars(select(Target))}


def test_import_creates_targets_with_normalised_emails_and_postal_codes(db_session):
    report = service.import_targets_csv(db_session, GOOD_CSV, utcnow())
    db_session.commit()

    assert (report.created, report.updated, report.errors) == (4, 0, [])
    found = by_name(db_session)
    byron = found["Senator Ada Byron"]
    assert byron.office_email == "office@byron.example"
    assert byron.title == "Senator" and byron.region == "NY" and byron.phone == "+1 202 555 0101"
    assert byron.postal_codes == "10001 10002 112*"
    # Semicolons separate codes that hold spaces; codes are upper-cased without spaces.
    assert found["MP Mary Seacole"].postal_codes == "N19GU N17*"
    assert found["Councillor Ida Wells"].office_email == ""


def test_import_again_updates_by_email_or_name_and_keeps_an_office_opt_out(db_session):
    service.import_targets_csv(db_session, GOOD_CSV, utcnow())
    db_session.commit()
    byron = by_name(db_session)["Senator Ada Byron"]
    opted_out_at = utcnow()
    byron.opted_out_at = opted_out_at
    db_session.commit()

    again = (
        "office_email,name,postal_codes,title\n"
        "OFFICE@byron.example,Senator Ada Byron-King,10003,Senior Senator\n"
        "ignored@example.org,Brand New Official,,\n"
        ",Councillor Ida Wells,60601,Alderman\n"
    )
    report = service.import_targets_csv(db_session, again, utcnow())
    db_session.commit()

    assert (report.created, report.updated) == (1, 2), report.errors
    found = by_name(db_session)
    assert len(found) == 5
    renamed = found["Senator Ada Byron-King"]
    assert renamed.id == byron.id and renamed.postal_codes == "10003"
    assert renamed.title == "Senior Senator"
    assert renamed.opted_out_at == opted_out_at  # the office's choice is not undone by staff
    assert found["Councillor Ida Wells"].title == "Alderman"
    assert found["Councillor Ida Wells"].postal_codes == "60601"


def test_bad_rows_are_reported_with_line_numbers_and_good_rows_still_import(db_session):
    text = (
        "name,office_email,phone,postal_codes\n"
        "Good Official,good@example.gov,,10001\n"  # line 2
        ",nameless@example.gov,,\n"  # line 3
        "Bad Email,not-an-address,,\n"  # line 4
        "Unreachable,,,10001\n"  # line 5
        "Bad Code,bad@example.gov,,1*0\n"  # line 6
        "Too Many,cells@example.gov,,,extra\n"  # line 7
        "\n"  # line 8: blank lines are skipped
        "Good Again,GOOD@example.gov,,\n"  # line 9: the same office as line 2
        "Bad Phone,,call me maybe,\n"  # line 10
        "Second Good,second@example.gov,,SW1A 1AA;SW1A 2*\n"  # line 11
    )
    report = service.import_targets_csv(db_session, text, utcnow())
    db_session.commit()

    assert report.created == 2 and report.updated == 0
    errors = {e.line: e.message for e in report.errors}
    assert sorted(errors) == [3, 4, 5, 6, 7, 9, 10]
    assert "name is empty" in errors[3]
    assert "not an email address" in errors[4]
    assert "office_email" in errors[5] and "phone" in errors[5]
    assert "1*0" in errors[6]
    assert "5 cells for 4 columns" in errors[7]
    assert "line 2" in errors[9]
    assert "phone" in errors[10]
    assert set(by_name(db_session)) == {"Good Official", "Second Good"}
    assert by_name(db_session)["Second Good"].postal_codes == "SW1A1AA SW1A2*"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("name,email\nA,a@example.gov\n", "Unknown column email"),
        ("title,office_email\nSenator,a@example.gov\n", "needs a name column"),
        ("name,name\nA,B\n", "twice"),
    ],
)
def test_a_bad_header_imports_nothing(db_session, text, message):
    report = service.import_targets_csv(db_session, text, utcnow())
    assert report.created == 0 and not report.ok
    [error] = report.errors
    assert error.line == 1 and message in error.message
    assert by_name(db_session) == {}


def test_a_header_from_excel_with_a_byte_order_mark_and_capitals_is_understood(db_session):
    report = service.import_targets_csv(
        db_session, "\ufeffName,Office_Email\nA Person,a@example.gov\n", utcnow()
    )
    assert (report.created, report.errors) == (1, [])


def test_fixed_pages_go_to_the_chosen_targets_except_offices_that_opted_out(db_session):
    chosen, also, opted_out, _not_on_the_page = TargetFactory.create_batch(4)
    opted_out.opted_out_at = utcnow()
    page = ActionPageFactory(kind="letter")
    for target in (chosen, also, opted_out):
        db_session.add(PageTarget(page_id=page.id, target_id=target.id))
    db_session.commit()
    db_session.expire_all()

    matched = service.match_targets(db_session, page, "99999", "US")
    assert {t.id for t in matched} == {chosen.id, also.id}


@pytest.mark.parametrize(
    ("postal_code", "country", "expected"),
    [
        ("10001", "US", {"exact", "prefix-100", "prefix-1"}),
        ("10001-1234", "US", {"exact", "prefix-100", "prefix-1"}),  # ZIP+4
        ("10002", "US", {"prefix-100", "prefix-1"}),
        ("11201", "US", {"prefix-1"}),
        ("20001", "US", set()),
        ("n1 9gu", "GB", {"london-exact", "london-n1"}),
        ("N1 7AA", "GB", {"london-n1"}),
        ("", "US", set()),
        ("%", "US", set()),
    ],
)
def test_match_mode_finds_targets_by_exact_code_or_prefix(
    db_session, postal_code, country, expected
):
    TargetFactory(name="exact", postal_codes="10001 10003")
    TargetFactory(name="prefix-100", postal_codes="100*")
    TargetFactory(name="prefix-1", postal_codes="99999 1*")
    TargetFactory(name="no-codes", postal_codes="")
    TargetFactory(name="longer-code-only", postal_codes="100011")
    TargetFactory(name="london-exact", postal_codes="N19GU")
    TargetFactory(name="london-n1", postal_codes="N1*")
    TargetFactory(name="opted-out", postal_codes="10001 N1*", opted_out_at=utcnow())
    page = ActionPageFactory(kind="letter", settings={"target_mode": "match"})

    matched = service.match_targets(db_session, page, postal_code, country)
    assert {t.name for t in matched} == expected


def test_office_tokens_are_signed_and_name_only_their_target(app, db_session):
    target = TargetFactory()
    key = app.config["SECRET_KEY"]
    token = service.make_target_token(key, target.public_id)
    assert service.target_for_token(db_session, key, token).id == target.id
    assert service.target_for_token(db_session, key, token[:-2] + "xx") is None
    assert service.target_for_token(db_session, "another key", token) is None
    # A supporter's link is signed with another salt and opens nothing here.
    from app.supporters.tokens import make_token

    assert service.target_for_token(db_session, key, make_token(key, target.public_id)) is None


def test_cli_imports_a_file_and_prints_what_it_did(runner, tmp_path, db_session):
    path = tmp_path / "targets.csv"
    path.write_text(GOOD_CSV, encoding="utf-8")
    result = runner.invoke(args=["targets", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "4 created, 0 updated" in result.output
    assert len(by_name(db_session)) == 4

    path.write_text("name,office_email\nSenator Ada Byron,office@byron.example\nBad,x\n")
    result = runner.invoke(args=["targets", "import", str(path)])
    assert result.exit_code == 1
    assert "0 created, 1 updated" in result.output
    assert "line 3: office_email “x” is not an email address" in result.output
    entries = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "targets.import"))
    assert [e.detail["created"] for e in entries] == [4, 0]


def upload(client, text: str | bytes, token: str):  # type: ignore[no-untyped-def]
    data = text.encode() if isinstance(text, str) else text
    return client.post(
        "/staff/targets",
        data={"csrf_token": token, "file": (io.BytesIO(data), "targets.csv")},
        content_type="multipart/form-data",
    )


def test_staff_page_lists_targets_and_organizers_import_with_an_audit_entry(client, db_session):
    assert client.get("/staff/targets").status_code == 302  # to the sign-in page
    user = signed_in(client, Role.ORGANIZER)
    token = csrf_token(client, "/staff/targets")

    response = upload(client, GOOD_CSV + "Broken,,nope,,,\n", token)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "4 created, 0 updated, 1 row not imported" in html
    assert "Line 6: office_email “nope” is not an email address" in html
    assert "Senator Ada Byron" in html and "N19GU N17*" in html
    [entry] = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "targets.import"))
    assert entry.staff_user_id == user.id
    assert entry.detail == {"created": 4, "updated": 0, "errors": 1}

    response = upload(client, "name\nLatin-1 caf\xe9\n".encode("latin-1"), token)
    assert response.status_code == 422 and "not UTF-8" in response.get_data(as_text=True)


def test_viewers_see_targets_but_cannot_import(client, db_session):
    TargetFactory(name="Visible Official")
    signed_in(client, Role.VIEWER)
    page = client.get("/staff/targets")
    assert page.status_code == 200 and "Visible Official" in page.get_data(as_text=True)
    assert 'type="file"' not in page.get_data(as_text=True)
    token = any_csrf(client, "/staff/targets")  # a real token: the role check refuses it
    assert upload(client, GOOD_CSV, token).status_code == 403
    assert set(by_name(db_session)) == {"Visible Official"}


def test_a_post_without_a_csrf_token_imports_nothing(client, db_session):
    signed_in(client, Role.ADMIN)
    assert upload(client, GOOD_CSV, "forged").status_code == 400  # CSRFProtect refuses it
    assert by_name(db_session) == {}
