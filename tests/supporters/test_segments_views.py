"""The segment builder pages: roles, CSRF, kept input on errors, the JSON count."""

from __future__ import annotations

import re
from html import unescape

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app.staff.models import AuditEntry, Role, StaffUser
from app.supporters import segments
from app.supporters.models import Segment, Tag
from app.timeutil import utcnow
from tests.conftest import csrf_token
from tests.factories import STAFF_PASSWORD, StaffFactory, SupporterFactory
from tests.supporters.conftest import forget_request_globals, input_value, page_text


def sign_in(client: FlaskClient, role: Role) -> StaffUser:
    user = StaffFactory(role=role.value)
    response = client.post(
        "/staff/login",
        data={
            "email": user.email,
            "password": STAFF_PASSWORD,
            "csrf_token": csrf_token(client, "/staff/login"),
        },
    )
    assert response.status_code == 302
    forget_request_globals()
    return user


def token(client: FlaskClient) -> str:
    return csrf_token(client, "/staff/segments/new")


def gb_form(client: FlaskClient, **changes: str) -> dict[str, object]:
    """A builder post: GB supporters, leaving out anyone tagged as given."""
    data: dict[str, object] = {
        "csrf_token": token(client),
        "name": "UK supporters",
        "description": "Everyone in Britain",
        "match": "all",
        "include_rows": "2",
        "exclude_rows": "1",
        "include-0-type": "location",
        "include-0-country": "gb",
        "include-0-postal_prefix": "",
        "include-1-type": "",
        "exclude-0-type": "",
        "do": "save",
    }
    data.update(changes)
    return data


def people() -> None:
    SupporterFactory(country="GB")
    SupporterFactory(country="GB", status="unsubscribed")
    SupporterFactory(country="US")


def test_signed_out_staff_are_sent_to_sign_in(client: FlaskClient) -> None:
    for path in ("/staff/segments/", "/staff/segments/new"):
        response = client.get(path)
        assert response.status_code == 302
        assert "/staff/login" in response.headers["Location"]


def test_list_shows_saved_segments_with_counts(client, db_session) -> None:  # type: ignore[no-untyped-def]
    people()
    sign_in(client, Role.VIEWER)
    segments.create_segment(
        db_session,
        name="Britain",
        description="GB only",
        definition={"include": [{"type": "location", "country": "GB", "postal_prefix": ""}]},
        actor=StaffFactory(role=Role.ADMIN.value),
        now=utcnow(),
    )
    db_session.commit()
    response = client.get("/staff/segments/")
    assert response.status_code == 200
    row = re.search(
        r"<tr>\s*<td><a[^>]*>Britain</a>.*?</tr>", response.get_data(as_text=True), re.S
    )
    assert row, page_text(response)
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
    assert cells == ["1", "2"]  # mailable, matching
    assert "New segment" in page_text(response)


def test_organizer_saves_a_segment_and_it_is_audited(client, db_session) -> None:  # type: ignore[no-untyped-def]
    organizer = sign_in(client, Role.ORGANIZER)
    response = client.post("/staff/segments/new", data=gb_form(client))
    assert response.status_code == 303
    segment = db_session.scalar(select(Segment))
    assert segment.name == "UK supporters"
    assert segment.definition == {
        "match": "all",
        "include": [{"type": "location", "country": "GB", "postal_prefix": ""}],
        "exclude": [],
    }
    entry = db_session.scalar(select(AuditEntry).where(AuditEntry.action == "segment.create"))
    assert entry.staff_user_id == organizer.id
    # Edit: the builder shows it back, and a change is saved with field names audited.
    page = client.get(f"/staff/segments/{segment.id}/edit")
    assert input_value(page, "include-0-country") == "GB"
    forget_request_globals()
    response = client.post(
        f"/staff/segments/{segment.id}/edit",
        data=gb_form(client, **{"include-0-postal_prefix": "SW1", "include_rows": "2"}),
    )
    assert response.status_code == 303
    db_session.expire_all()
    assert segment.definition["include"][0]["postal_prefix"] == "SW1"
    update = db_session.scalar(select(AuditEntry).where(AuditEntry.action == "segment.update"))
    assert update.detail == {"fields": ["definition"]}


@pytest.mark.parametrize("role", [Role.VIEWER, Role.FUNDRAISER])
def test_viewers_and_fundraisers_can_count_but_not_save_or_delete(client, db_session, role) -> None:  # type: ignore[no-untyped-def]
    people()
    sign_in(client, role)
    page = client.get("/staff/segments/new")
    assert page.status_code == 200
    assert "Save segment" not in page_text(page)
    counted = client.post("/staff/segments/new", data=gb_form(client, do="count"))
    assert counted.status_code == 200
    assert "1 can be mailed" in page_text(counted)
    assert client.post("/staff/segments/new", data=gb_form(client)).status_code == 403
    assert db_session.scalar(select(Segment)) is None
    segment = segments.create_segment(
        db_session,
        name="Kept",
        description="",
        definition={},
        actor=StaffFactory(role=Role.ADMIN.value),
        now=utcnow(),
    )
    db_session.commit()
    response = client.post(
        f"/staff/segments/{segment.id}/delete", data={"csrf_token": token(client)}
    )
    assert response.status_code == 403
    assert segments.get_segment(db_session, segment.id) is not None


def test_admin_deletes_a_segment(client, db_session) -> None:  # type: ignore[no-untyped-def]
    admin = sign_in(client, Role.ADMIN)
    segment = segments.create_segment(
        db_session, name="Gone", description="", definition={}, actor=admin, now=utcnow()
    )
    db_session.commit()
    response = client.post(
        f"/staff/segments/{segment.id}/delete", data={"csrf_token": token(client)}
    )
    assert response.status_code == 303
    db_session.expire_all()
    assert db_session.scalar(select(Segment)) is None
    assert db_session.scalar(select(AuditEntry).where(AuditEntry.action == "segment.delete"))


def test_posts_without_a_csrf_token_are_refused(client, db_session) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, Role.ADMIN)
    data = gb_form(client)
    data.pop("csrf_token")
    assert client.post("/staff/segments/new", data=data).status_code == 400
    assert db_session.scalar(select(Segment)) is None
    refused = client.post("/staff/segments/count", data={**data, "csrf_token": "forged"})
    assert refused.status_code == 400
    assert "expired" in refused.get_json()["error"]


def test_errors_show_beside_the_field_and_keep_everything_typed(client, db_session) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, Role.ADMIN)
    data = gb_form(
        client,
        **{
            "name": "",
            "description": "Keep this text",
            "include-1-type": "engaged",
            "include-1-days": "-5",
            "exclude-0-type": "joined",
            "exclude-0-from": "2025-04-01",
            "exclude-0-to": "2025-03-01",
        },
    )
    response = client.post("/staff/segments/new", data=data)
    assert response.status_code == 422
    html = unescape(response.get_data(as_text=True))
    assert re.search(r'id="name-error">.*Give the segment a name', html)
    assert re.search(r'id="include-1-days-error">.*whole number from 1', html)
    assert re.search(r'id="exclude-0-to-error">.*on or after the first day', html)
    assert 'aria-invalid="true"' in html
    assert input_value(response, "include-0-country") == "gb"
    assert input_value(response, "include-1-days") == "-5"
    assert input_value(response, "exclude-0-from") == "2025-04-01"
    assert "Keep this text" in html
    assert db_session.scalar(select(Segment)) is None


def test_errors_land_on_the_row_they_came_from_after_blank_rows(client) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, Role.ADMIN)
    data = gb_form(
        client,
        **{
            "include_rows": "3",
            "include-0-type": "",
            "include-1-type": "",
            "include-2-type": "tags",
            "do": "count",
        },
    )
    html = unescape(client.post("/staff/segments/new", data=data).get_data(as_text=True))
    assert re.search(r'id="include-2-tag_ids-error">.*Choose at least one tag', html)


def test_duplicate_names_are_refused_beside_the_name(client, db_session) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, Role.ADMIN)
    assert client.post("/staff/segments/new", data=gb_form(client)).status_code == 303
    again = client.post("/staff/segments/new", data=gb_form(client))
    assert again.status_code == 422
    assert "There is already a segment called “UK supporters”" in page_text(again)


def test_add_a_condition_adds_a_row_and_keeps_input(client, db_session) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, Role.ORGANIZER)
    data = gb_form(client, add="exclude")
    data.pop("do")
    response = client.post("/staff/segments/new", data=data)
    assert response.status_code == 200
    assert input_value(response, "exclude_rows") == "2"
    assert 'name="exclude-1-type"' in response.get_data(as_text=True)
    assert input_value(response, "include-0-country") == "gb"
    assert input_value(response, "name") == "UK supporters"
    assert db_session.scalar(select(Segment)) is None


def test_json_count(client, db_session) -> None:  # type: ignore[no-untyped-def]
    people()
    db_session.add(Tag(name="red"))
    db_session.commit()
    sign_in(client, Role.VIEWER)
    response = client.post("/staff/segments/count", data=gb_form(client))
    assert response.status_code == 200
    assert response.get_json() == {"matching": 2, "mailable": 1}
    bad = client.post(
        "/staff/segments/count",
        data=gb_form(client, **{"include-1-type": "tags", "include-1-tag_ids": "999"}),
    )
    assert bad.status_code == 400
    body = bad.get_json()
    assert body["error"] == "No tag with id 999."
    assert body["fields"] == {"include-1-tag_ids": "No tag with id 999."}
    donated = client.post(
        "/staff/segments/count", data=gb_form(client, **{"include-1-type": "donated"})
    )
    assert donated.status_code == 400
    assert donated.get_json()["error"] == "Donation conditions arrive with donations."


def test_unknown_segment_is_404(client) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, Role.ADMIN)
    assert client.get("/staff/segments/999/edit").status_code == 404
    assert (
        client.post("/staff/segments/999/delete", data={"csrf_token": token(client)}).status_code
        == 404
    )
