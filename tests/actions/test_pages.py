"""The staff page builder: create and edit with validation, images, roles, audit, preview, close."""

from __future__ import annotations

import io
import re
import struct
import zlib
from datetime import timedelta
from html import unescape
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from app.actions import pages
from app.actions.models import Action, ActionPage, PageStatus, PageTarget
from app.actions.service import uploads_dir
from app.staff.models import AuditEntry, Role, StaffUser
from app.timeutil import utcnow
from tests.conftest import csrf_token
from tests.factories import (
    STAFF_PASSWORD,
    ActionPageFactory,
    StaffFactory,
    SupporterFactory,
    TargetFactory,
)

ADULT_YEAR = str(utcnow().year - 40)


def tiny_png() -> bytes:
    """A real 1 by 1 pixel PNG, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x8a\x1c\x1c")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def html_of(response) -> str:  # type: ignore[no-untyped-def]
    """The response body as text, entities decoded (Jinja writes ' as &#39;)."""
    return unescape(response.get_data(as_text=True))


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
    assert response.status_code == 302, html_of(response)
    return user


def token(client: FlaskClient) -> str:
    """A CSRF token for this client's session (any form page hands one out)."""
    return csrf_token(client, "/signup")


def fields(**overrides: object) -> dict[str, object]:
    """A complete, valid petition as the builder form posts it."""
    data: dict[str, object] = {
        "kind": "petition",
        "title": "Protect civilians now",
        "slug": "protect-civilians",
        "body_md": "Officials must **act** before it is too late.",
        "share_image_alt": "",
        "goal": "5000",
        "status": "draft",
        "close_at": "",
        "thank_you_md": "Thank you for signing.",
        "next_page_id": "",
        "share_text": "I signed. Will you?",
        "hashtag": "NeverAgain",
        "opt_in_text": "Email me about this campaign. I can unsubscribe at any time.",
        "letter_editable": "body",
        "letter_delivery": "each",
        "target_mode": "fixed",
        "timezone": "UTC",
    }
    data.update(overrides)
    return data


def post_page(client: FlaskClient, path: str = "/staff/pages/new", **overrides: object):  # type: ignore[no-untyped-def]
    data = {"csrf_token": token(client), **fields(**overrides)}
    return client.post(path, data=data, content_type="multipart/form-data")


def audit_entries(db_session, action: str) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    return list(
        db_session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
    )


def page_by_slug(db_session, slug: str) -> ActionPage | None:  # type: ignore[no-untyped-def]
    db_session.expire_all()
    return db_session.scalar(select(ActionPage).where(ActionPage.slug == slug))


# --- creating and editing -----------------------------------------------------------------


def test_organizer_creates_a_draft_petition_and_it_is_audited_by_field_name(client, db_session):
    organizer = sign_in(client, Role.ORGANIZER)
    response = post_page(client)
    assert response.status_code == 303, html_of(response)

    page = page_by_slug(db_session, "protect-civilians")
    assert page is not None
    assert (page.kind, page.title, page.goal, page.status) == (
        "petition",
        "Protect civilians now",
        5000,
        "draft",
    )
    assert page.hashtag == "NeverAgain" and page.published_at is None
    assert response.headers["Location"] == f"/staff/pages/{page.id}"

    [entry] = audit_entries(db_session, "page.create")
    assert entry.staff_user_id == organizer.id
    assert entry.object_id == str(page.id)
    assert "title" in entry.detail["fields"] and "body_md" in entry.detail["fields"]
    # Names of what changed, never the words themselves.
    assert "Officials must" not in str(entry.detail)

    listing = html_of(client.get("/staff/pages"))
    assert "Protect civilians now" in listing and "/a/protect-civilians" in listing


def test_validation_errors_are_clear_and_keep_what_was_typed(client, db_session):
    sign_in(client, Role.ADMIN)
    response = post_page(
        client,
        title="",
        slug="Not A Slug!",
        goal="lots",
        share_text="x" * 281,
        opt_in_text="",
        body_md="My carefully written body text",
        close_at="not a date",
    )
    html = html_of(response)
    assert response.status_code == 422
    assert "Please give the page a title." in html
    assert "lowercase letters, digits and single hyphens" in html
    assert "Please enter a whole number, such as 500." in html
    assert "Field cannot be longer than 280 characters." in html
    assert "Please write the email opt-in text people will see." in html
    assert "Please enter a date and a time." in html
    # What they typed is still there.
    assert "My carefully written body text" in html
    assert 'value="Not A Slug!"' in html
    assert 'value="lots"' in html
    assert db_session.scalar(select(func.count()).select_from(ActionPage)) == 0


def test_slug_clash_gets_a_clear_message(client, db_session):
    ActionPageFactory(slug="protect-civilians", title="The first one")
    sign_in(client, Role.ORGANIZER)
    response = post_page(client)
    html = html_of(response)
    assert response.status_code == 422
    assert "Another page already uses /a/protect-civilians. Please choose another." in html
    assert db_session.scalar(select(func.count()).select_from(ActionPage)) == 1


def test_editing_shows_current_values_and_audits_only_what_changed(client, db_session):
    sign_in(client, Role.ORGANIZER)
    post_page(client)
    page = page_by_slug(db_session, "protect-civilians")
    edit_path = f"/staff/pages/{page.id}"

    form_html = html_of(client.get(edit_path))
    assert 'value="Protect civilians now"' in form_html
    assert "Officials must **act** before it is too late." in form_html

    response = post_page(client, edit_path, title="Protect civilians today", goal="")
    assert response.status_code == 303, html_of(response)
    page = page_by_slug(db_session, "protect-civilians")
    assert page.title == "Protect civilians today" and page.goal is None
    [entry] = audit_entries(db_session, "page.update")
    assert sorted(entry.detail["fields"]) == ["goal", "title"]

    # Saving the same thing again changes nothing and logs nothing.
    post_page(client, edit_path, title="Protect civilians today", goal="")
    assert len(audit_entries(db_session, "page.update")) == 1


def test_a_page_that_has_been_live_keeps_its_address(client, db_session):
    page = ActionPageFactory(slug="went-live", published_at=utcnow())
    sign_in(client, Role.ADMIN)
    response = post_page(client, f"/staff/pages/{page.id}", slug="new-address", status="live")
    assert response.status_code == 422
    assert "its address can no longer change" in html_of(response)


def test_bad_choices_never_cause_a_server_error(client, db_session):
    sign_in(client, Role.ADMIN)
    response = post_page(
        client, kind="poem", status="famous", next_page_id="99999", target_ids="abc"
    )
    assert response.status_code == 422
    html = html_of(response)
    assert "Not a valid choice." in html
    assert "That page no longer exists" in html


# --- kind-specific settings ---------------------------------------------------------------


def test_letter_settings_and_fixed_targets_are_stored(client, db_session):
    first, second = TargetFactory(), TargetFactory()
    sign_in(client, Role.ORGANIZER)
    response = client.post(
        "/staff/pages/new",
        data={
            "csrf_token": token(client),
            **fields(
                kind="letter",
                slug="write-now",
                status="live",
                letter_subject="Please act",
                letter_body="Dear official,\n\nPlease act.",
                letter_editable="all",
                letter_max_length="2000",
                letter_delivery="digest",
                target_mode="fixed",
            ),
            "target_ids": [str(first.id), str(second.id)],
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 303, html_of(response)
    page = page_by_slug(db_session, "write-now")
    assert page.settings == {
        "letter_subject": "Please act",
        "letter_body": "Dear official,\n\nPlease act.",
        "letter_editable": "all",
        "letter_max_length": 2000,
        "letter_delivery": "digest",
        "target_mode": "fixed",
    }
    assert {t.id for t in page.targets} == {first.id, second.id}
    assert page.status == "live" and page.published_at is not None
    [published] = audit_entries(db_session, "page.publish")
    assert published.object_id == str(page.id)

    # Switching to matching by postal code drops the fixed targets.
    response = post_page(
        client,
        f"/staff/pages/{page.id}",
        kind="letter",
        slug="write-now",
        status="live",
        letter_subject="Please act",
        letter_body="Dear official,\n\nPlease act.",
        letter_editable="all",
        letter_max_length="2000",
        letter_delivery="digest",
        target_mode="match",
    )
    assert response.status_code == 303, html_of(response)
    assert db_session.scalar(select(func.count()).select_from(PageTarget)) == 0
    [entry] = audit_entries(db_session, "page.update")
    assert sorted(entry.detail["fields"]) == ["settings.target_mode", "targets"]


def test_letter_and_call_rules(client, db_session):
    sign_in(client, Role.ORGANIZER)
    html = html_of(
        post_page(
            client,
            kind="letter",
            status="live",
            letter_subject="",
            letter_body="x" * 120,
            letter_max_length="100",
        )
    )
    assert "Please write the letter's subject" in html
    assert "longer than the maximum length of 100" in html
    assert "A live letter page with fixed targets needs at least one target." in html

    html = html_of(post_page(client, kind="call", status="live", call_script=""))
    assert "Please write a short script for callers." in html
    assert "A live call page needs at least one office to call." in html


def test_event_settings_are_validated_and_stored_as_the_event_pages_read_them(client, db_session):
    sign_in(client, Role.ORGANIZER)
    response = post_page(
        client,
        kind="event",
        starts_at="2030-05-01T18:30",
        ends_at="2030-05-01T17:00",
        timezone="Mars/Olympus_Mons",
        online_url="http://insecure.example/room",
        capacity="0",
    )
    html = html_of(response)
    assert response.status_code == 422
    assert "The event must end after it starts." in html
    assert "IANA name" in html
    assert "The online link must be a full https:// address." in html
    assert "Please enter a whole number of 1 or more." in html
    assert 'value="Mars/Olympus_Mons"' in html

    response = post_page(
        client,
        kind="event",
        slug="symposium",
        starts_at="2030-05-01T18:30",
        ends_at="2030-05-01T20:00",
        timezone="Europe/Berlin",
        venue="Town hall",
        online_url="https://meet.example/room",
        capacity="50",
    )
    assert response.status_code == 303, html_of(response)
    page = page_by_slug(db_session, "symposium")
    assert page.settings == {
        "starts_at": "2030-05-01T18:30",
        "ends_at": "2030-05-01T20:00",
        "timezone": "Europe/Berlin",
        "venue": "Town hall",
        "online_url": "https://meet.example/room",
        "capacity": 50,
    }
    from app.actions import events

    parsed = events.details(page)
    assert parsed.capacity == 50
    assert parsed.starts is not None and parsed.starts.utcoffset() == timedelta(hours=2)


# --- share images -------------------------------------------------------------------------


def test_a_real_png_is_stored_under_a_random_name_and_served(client, db_session, app):
    sign_in(client, Role.ORGANIZER)
    data = {
        "csrf_token": token(client),
        **fields(share_image_alt="People holding candles"),
        "share_image": (io.BytesIO(tiny_png()), "my photo.png"),
    }
    response = client.post("/staff/pages/new", data=data, content_type="multipart/form-data")
    assert response.status_code == 303, html_of(response)
    page = page_by_slug(db_session, "protect-civilians")
    assert re.fullmatch(r"[0-9a-f]{32}\.png", page.share_image)
    stored = Path(uploads_dir(app.instance_path)) / page.share_image
    assert stored.read_bytes() == tiny_png()
    with client.get(f"/media/{page.share_image}") as served:
        assert served.status_code == 200 and served.mimetype == "image/png"
        assert served.data == tiny_png()


def test_a_text_file_named_png_is_refused_and_nothing_is_stored(client, db_session, app):
    sign_in(client, Role.ORGANIZER)
    folder = Path(uploads_dir(app.instance_path))
    before = set(folder.iterdir()) if folder.exists() else set()
    data = {
        "csrf_token": token(client),
        **fields(share_image_alt="A picture"),
        "share_image": (io.BytesIO(b"<?php echo 'not an image'; ?>"), "photo.png"),
    }
    response = client.post("/staff/pages/new", data=data, content_type="multipart/form-data")
    assert response.status_code == 422
    assert "not a PNG, JPEG, WebP or GIF image" in html_of(response)
    assert (set(folder.iterdir()) if folder.exists() else set()) == before
    assert db_session.scalar(select(func.count()).select_from(ActionPage)) == 0


def test_an_image_over_2_mb_is_refused_with_a_message(client, db_session):
    sign_in(client, Role.ORGANIZER)
    big = tiny_png() + b"\x00" * (pages.MAX_IMAGE_BYTES + 10)
    data = {
        "csrf_token": token(client),
        **fields(share_image_alt="Too big"),
        "share_image": FileStorage(io.BytesIO(big), filename="big.png", content_type="image/png"),
    }
    # Encoded in memory: the test client would spool a body this large to a temporary
    # file that it never closes.
    boundary, body = encode_multipart(data)
    response = client.post(
        "/staff/pages/new", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 422
    assert "larger than 2 MB" in html_of(response)


def test_an_image_needs_alt_text_and_is_kept_while_the_form_is_fixed(client, db_session, app):
    sign_in(client, Role.ORGANIZER)
    data = {
        "csrf_token": token(client),
        **fields(share_image_alt=""),
        "share_image": (io.BytesIO(tiny_png()), "photo.png"),
    }
    response = client.post("/staff/pages/new", data=data, content_type="multipart/form-data")
    html = html_of(response)
    assert response.status_code == 422
    assert "Please describe the image" in html
    kept = re.search(r'name="uploaded_image" type="hidden" value="([0-9a-f]{32}\.png)"', html)
    assert kept, "the valid upload is carried over"

    # Resubmitting with alt text and no new file uses the kept image.
    response = post_page(client, uploaded_image=kept.group(1), share_image_alt="Candles")
    assert response.status_code == 303, html_of(response)
    assert page_by_slug(db_session, "protect-civilians").share_image == kept.group(1)


def test_image_checks_by_magic_bytes():
    assert pages.image_extension(tiny_png()) == "png"
    assert pages.image_extension(b"\xff\xd8\xff\xe0rest") == "jpg"
    assert pages.image_extension(b"GIF89a....") == "gif"
    assert pages.image_extension(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert pages.image_extension(b"<svg onload=alert(1)>") is None
    assert pages.image_extension(b"") is None
    assert not pages.is_stored_image("/tmp", "../../etc/passwd")


# --- sanitising -----------------------------------------------------------------------------


def test_scripts_and_event_handlers_in_the_body_are_removed(client, db_session):
    sign_in(client, Role.ORGANIZER)
    body = (
        "Hello <script>alert('body')</script>\n\n"
        '<img src="x.png" onerror="alert(1)" alt="pic">\n\n'
        '<a href="javascript:alert(2)">click</a>'
    )
    assert post_page(client, body_md=body, status="live").status_code == 303
    html = html_of(client.get("/a/protect-civilians"))
    assert "Hello" in html
    assert "alert('body')" not in html
    assert "onerror" not in html
    assert "javascript:" not in html
    assert '<img src="x.png" alt="pic">' in html


# --- roles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.FUNDRAISER])
def test_viewers_and_fundraisers_may_look_but_not_create_edit_or_publish(client, db_session, role):
    page = ActionPageFactory(status="draft")
    sign_in(client, role)
    assert client.get("/staff/pages").status_code == 200
    assert client.get(f"/staff/pages/{page.id}/report").status_code == 200
    assert client.get(f"/staff/pages/{page.id}/preview").status_code == 200
    assert client.get("/staff/pages/new").status_code == 403
    assert post_page(client).status_code == 403
    assert client.get(f"/staff/pages/{page.id}").status_code == 403
    assert post_page(client, f"/staff/pages/{page.id}", status="live").status_code == 403
    publish = client.post(f"/staff/pages/{page.id}/publish", data={"csrf_token": token(client)})
    assert publish.status_code == 403
    close = client.post(f"/staff/pages/{page.id}/close", data={"csrf_token": token(client)})
    assert close.status_code == 403
    db_session.expire_all()
    assert db_session.get(ActionPage, page.id).status == "draft"
    assert db_session.scalar(select(func.count()).select_from(ActionPage)) == 1
    assert not audit_entries(db_session, "page.publish")
    # The list offers them no way to create.
    assert "New page" not in html_of(client.get("/staff/pages"))


def test_signed_out_visitors_are_sent_to_sign_in(client):
    page = ActionPageFactory()
    for path in ("/staff/pages", "/staff/pages/new", f"/staff/pages/{page.id}/report"):
        response = client.get(path)
        assert response.status_code == 302 and "/staff/login" in response.headers["Location"]


def test_organizer_publishes_a_draft_and_it_is_audited(client, db_session):
    page = ActionPageFactory(status="draft", slug="ready")
    organizer = sign_in(client, Role.ORGANIZER)
    assert client.get("/a/ready").status_code == 404
    response = client.post(f"/staff/pages/{page.id}/publish", data={"csrf_token": token(client)})
    assert response.status_code == 303
    db_session.expire_all()
    page = db_session.get(ActionPage, page.id)
    assert page.status == "live" and page.published_at is not None
    [entry] = audit_entries(db_session, "page.publish")
    assert entry.staff_user_id == organizer.id and entry.detail == {"previous": "draft"}
    assert client.get("/a/ready").status_code == 200


def test_publishing_an_incomplete_page_says_why(client, db_session):
    page = ActionPageFactory(status="draft", kind="call", settings={"call_script": "Say hi"})
    sign_in(client, Role.ADMIN)
    response = client.post(
        f"/staff/pages/{page.id}/publish",
        data={"csrf_token": token(client)},
        follow_redirects=True,
    )
    assert "A live call page needs at least one office to call." in html_of(response)
    db_session.expire_all()
    assert db_session.get(ActionPage, page.id).status == "draft"


@pytest.mark.parametrize("role", [Role.FUNDRAISER, Role.VIEWER])
def test_the_service_itself_refuses_other_roles(app, db_session, role):
    actor = StaffFactory(role=role.value)
    page = ActionPageFactory(status="draft")
    data = pages.PageData(
        kind="petition", title="T", slug="t", status="live", opt_in_text="Email me."
    )
    with pytest.raises(pages.NotAllowed):
        pages.create_page(db_session, data, actor, utcnow())
    with pytest.raises(pages.NotAllowed):
        pages.publish(db_session, page, actor, utcnow())
    with pytest.raises(pages.NotAllowed):
        pages.update_page(db_session, page, pages.data_of(page), actor, utcnow())


# --- preview --------------------------------------------------------------------------------


def test_staff_preview_a_draft_that_the_public_cannot_see(client, db_session):
    page = ActionPageFactory(status="draft", slug="secret-draft", title="Coming soon")
    assert client.get("/a/secret-draft").status_code == 404
    assert client.get(f"/staff/pages/{page.id}/preview").status_code == 302  # sign in first

    sign_in(client, Role.VIEWER)
    response = client.get(f"/staff/pages/{page.id}/preview")
    html = html_of(response)
    assert response.status_code == 200
    assert "Preview — not public" in html
    assert "Coming soon" in html and "Officials must act <strong>now</strong>." in html
    assert '<fieldset class="preview-frame" disabled>' in html
    assert "Sign the petition" in html
    assert client.get("/a/secret-draft").status_code == 404


@pytest.mark.parametrize("kind", ["petition", "letter", "call", "event", "signup"])
def test_every_kind_of_draft_previews_even_with_settings_still_empty(client, db_session, kind):
    target = TargetFactory(name="Senator Preview", phone="+1 202 555 0111")
    page = ActionPageFactory(status="draft", kind=kind, title=f"A {kind} page", settings={})
    page.targets = [target] if kind in ("letter", "call") else []
    db_session.commit()
    sign_in(client, Role.FUNDRAISER)
    response = client.get(f"/staff/pages/{page.id}/preview")
    html = html_of(response)
    assert response.status_code == 200
    assert "Preview — not public" in html and f"A {kind} page" in html
    if kind == "call":
        assert 'href="tel:+12025550111"' in html


# --- closing --------------------------------------------------------------------------------


def test_closing_a_page_offers_the_next_action_instead_of_the_form(client, db_session):
    following = ActionPageFactory(slug="next-one", title="Write to your senator")
    page = ActionPageFactory(slug="closing", next_page_id=following.id)
    organizer = sign_in(client, Role.ORGANIZER)
    response = client.post(f"/staff/pages/{page.id}/close", data={"csrf_token": token(client)})
    assert response.status_code == 303
    [entry] = audit_entries(db_session, "page.close")
    assert entry.staff_user_id == organizer.id and entry.detail == {"previous": "live"}

    public = client.get("/a/closing")
    html = html_of(public)
    assert public.status_code == 200
    assert "This action has closed" in html
    assert 'href="/a/next-one"' in html and "Write to your senator" in html
    assert "<form" not in html.split("<main", 1)[1]

    # A form posted to it anyway is turned away without an error, and nothing is stored.
    posted = client.post(
        "/a/closing",
        data={
            "csrf_token": token(client),
            "email": "late@example.org",
            "first_name": "Late",
            "birth_year": ADULT_YEAR,
        },
    )
    assert posted.status_code == 200 and "This action has closed" in html_of(posted)
    assert db_session.scalar(select(func.count()).select_from(Action)) == 0


def test_a_live_page_past_its_close_date_shows_the_next_action(client, db_session):
    following = ActionPageFactory(slug="still-open", title="Join the network")
    ActionPageFactory(
        slug="past-date", next_page_id=following.id, close_at=utcnow() - timedelta(minutes=1)
    )
    html = html_of(client.get("/a/past-date"))
    assert "This action has closed" in html and 'href="/a/still-open"' in html
    # The home page no longer lists it.
    home = html_of(client.get("/"))
    assert "/a/past-date" not in home and "/a/still-open" in home


def test_close_date_set_in_the_builder_closes_the_page_when_it_passes(client, db_session, app):
    sign_in(client, Role.ORGANIZER)
    soon = (utcnow() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    assert post_page(client, status="live", close_at=soon).status_code == 303
    page = page_by_slug(db_session, "protect-civilians")
    assert page.close_at is not None and page.close_at.strftime("%Y-%m-%dT%H:%M") == soon
    assert "Sign the petition" in html_of(client.get("/a/protect-civilians"))

    # A close date already past cannot be set on a live page...
    past = (utcnow() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    response = post_page(client, f"/staff/pages/{page.id}", status="live", close_at=past)
    assert response.status_code == 422
    assert "That close date has passed" in html_of(response)
    # ...and once the date passes the public page closes by itself.
    page.close_at = utcnow() - timedelta(seconds=1)
    db_session.commit()
    assert "This action has closed" in html_of(client.get("/a/protect-civilians"))


# --- demo seed ------------------------------------------------------------------------------


def test_demo_seed_creates_one_live_page_of_each_kind_once(runner, client, db_session):
    SupporterFactory()  # an unrelated supporter is untouched
    first = runner.invoke(args=["demo", "seed", "--supporters", "0"])
    second = runner.invoke(args=["demo", "seed", "--supporters", "0"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "Demo action pages: 5 added" in first.output
    assert "Demo action pages: 0 added" in second.output

    db_session.expire_all()
    seeded = db_session.scalars(select(ActionPage).order_by(ActionPage.id)).all()
    assert sorted(p.kind for p in seeded) == ["call", "event", "letter", "petition", "signup"]
    assert all(p.status == PageStatus.LIVE for p in seeded)
    by_kind = {p.kind: p for p in seeded}
    assert len(by_kind["letter"].targets) == 2
    assert len(by_kind["call"].targets) == 1 and by_kind["call"].settings["call_script"]
    assert by_kind["event"].settings["capacity"] == 50
    assert all(p.next_page_id for p in seeded)

    home = html_of(client.get("/"))
    for page in seeded:
        assert f'href="/a/{page.slug}"' in home
        assert client.get(f"/a/{page.slug}").status_code == 200, page.slug


def test_raising_an_events_capacity_moves_the_waitlist_up_and_emails_them(
    client, db_session, outbox
):
    from app.actions.models import EventRsvp
    from tests.factories import ActionPageFactory, SupporterFactory

    event = {
        "starts_at": "2031-05-01T18:30",
        "ends_at": "2031-05-01T20:00",
        "timezone": "Europe/Berlin",
        "venue": "Town hall",
        "capacity": 1,
    }
    page = ActionPageFactory(kind="event", slug="symposium", settings=event)
    going, waiting = (
        SupporterFactory(email="going@example.org"),
        SupporterFactory(email="waiting@example.org"),
    )
    for person, status in ((going, "going"), (waiting, "waitlisted")):
        db_session.add(EventRsvp(page_id=page.id, supporter_id=person.id, status=status))
    db_session.commit()

    sign_in(client, Role.ORGANIZER)
    response = post_page(
        client,
        f"/staff/pages/{page.id}",
        kind="event",
        slug="symposium",
        status="live",
        starts_at=event["starts_at"],
        ends_at=event["ends_at"],
        timezone=event["timezone"],
        venue=event["venue"],
        capacity="2",
    )
    assert response.status_code == 303, html_of(response)
    db_session.expire_all()
    statuses = {
        r.supporter_id: r.status
        for r in db_session.scalars(select(EventRsvp).where(EventRsvp.page_id == page.id))
    }
    assert statuses == {going.id: "going", waiting.id: "going"}
    assert [e.to for e in outbox.entries()] == ["waiting@example.org"]
