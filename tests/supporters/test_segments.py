"""Segments: each condition kind against real rows, exclusions, edges, and bad definitions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.actions.models import Action
from app.mailings.models import Delivery, Mailing, MailingStatus, TrackingEvent
from app.staff.models import AuditEntry, Role
from app.supporters import segments
from app.supporters.models import Supporter, Tag, supporter_tags
from app.supporters.segments import SegmentError, SegmentNotAllowed
from tests.factories import ActionPageFactory, StaffFactory, SupporterFactory

NOW = datetime(2025, 6, 15, 12, 0, 0)


def who(db_session, definition: dict[str, Any], now: datetime = NOW) -> set[str]:  # type: ignore[no-untyped-def]
    """The first names of everyone the definition matches, via the WHERE clause itself."""
    where = segments.condition(definition, now)
    return set(db_session.scalars(select(Supporter.first_name).where(where)))


def include(*conds: dict[str, Any], match: str = "all", exclude: list[Any] | None = None):  # type: ignore[no-untyped-def]
    return {"match": match, "include": list(conds), "exclude": exclude or []}


def person(name: str, **fields: Any) -> Supporter:
    return SupporterFactory(first_name=name, **fields)


def tag(db_session, name: str, *people: Supporter) -> int:  # type: ignore[no-untyped-def]
    t = Tag(name=name)
    db_session.add(t)
    db_session.flush()
    for p in people:
        db_session.execute(supporter_tags.insert().values(supporter_id=p.id, tag_id=t.id))
    db_session.commit()
    return t.id


def mailing(db_session) -> Mailing:  # type: ignore[no-untyped-def]
    m = Mailing(subject="Hello", body_md="Hi", status=MailingStatus.SENT)
    db_session.add(m)
    db_session.commit()
    return m


def deliver(db_session, m: Mailing, p: Supporter, status: str = "sent") -> Delivery:  # type: ignore[no-untyped-def]
    d = Delivery(mailing_id=m.id, supporter_id=p.id, status=status)
    db_session.add(d)
    db_session.commit()
    return d


def track(db_session, d: Delivery, kind: str, at: datetime = NOW, machine: bool = False) -> None:  # type: ignore[no-untyped-def]
    db_session.add(TrackingEvent(delivery_id=d.id, kind=kind, created_at=at, machine=machine))
    db_session.commit()


def test_empty_definition_is_everyone(db_session) -> None:  # type: ignore[no-untyped-def]
    person("Ann")
    person("Bo", status="unsubscribed")
    assert who(db_session, {}) == {"Ann", "Bo"}
    assert segments.count(db_session, {}, NOW) == segments.SegmentCount(matching=2, mailable=1)


def test_tags_any_all_none(db_session) -> None:  # type: ignore[no-untyped-def]
    ann, bo, cy = person("Ann"), person("Bo"), person("Cy")
    person("Di")
    red = tag(db_session, "red", ann, bo)
    blue = tag(db_session, "blue", bo, cy)
    both = [red, blue]
    assert who(db_session, include({"type": "tags", "mode": "any", "tag_ids": both})) == {
        "Ann",
        "Bo",
        "Cy",
    }
    assert who(db_session, include({"type": "tags", "mode": "all", "tag_ids": both})) == {"Bo"}
    assert who(db_session, include({"type": "tags", "mode": "none", "tag_ids": both})) == {"Di"}
    assert who(db_session, include({"type": "tags", "mode": "none", "tag_ids": [red]})) == {
        "Cy",
        "Di",
    }


def test_took_and_did_not_take_action(db_session) -> None:  # type: ignore[no-untyped-def]
    ann, bo = person("Ann"), person("Bo")
    person("Cy")
    p1, p2, p3 = ActionPageFactory(), ActionPageFactory(), ActionPageFactory()
    db_session.add_all(
        [Action(page_id=p1.id, supporter_id=ann.id), Action(page_id=p2.id, supporter_id=bo.id)]
    )
    db_session.commit()
    took = {"type": "action", "took": True, "page_ids": [p1.id, p3.id]}
    assert who(db_session, include(took)) == {"Ann"}
    assert who(db_session, include({**took, "took": False})) == {"Bo", "Cy"}
    assert who(db_session, include({**took, "page_ids": [p3.id]})) == set()


def test_exclusions_win_over_inclusions(db_session) -> None:  # type: ignore[no-untyped-def]
    ann, bo = person("Ann", country="GB"), person("Bo", country="GB")
    person("Cy", country="US")
    vip = tag(db_session, "vip", bo)
    gb = {"type": "location", "country": "GB", "postal_prefix": ""}
    no_vip = [{"type": "tags", "mode": "any", "tag_ids": [vip]}]
    assert who(db_session, include(gb, exclude=no_vip)) == {"Ann"}
    # Excludes alone: everyone but them. Any exclude matching is enough to leave out.
    us = {"type": "location", "country": "US", "postal_prefix": ""}
    assert who(db_session, include(exclude=[*no_vip, us])) == {"Ann"}
    assert ann.id  # used


def test_match_any_and_all(db_session) -> None:  # type: ignore[no-untyped-def]
    person("Ann", country="GB", postal_code="SW1A 1AA")
    person("Bo", country="GB", postal_code="M1 1AE")
    person("Cy", country="US", postal_code="SW1")
    gb = {"type": "location", "country": "GB", "postal_prefix": ""}
    sw1 = {"type": "location", "country": "", "postal_prefix": "SW1"}
    assert who(db_session, include(gb, sw1, match="all")) == {"Ann"}
    assert who(db_session, include(gb, sw1, match="any")) == {"Ann", "Bo", "Cy"}


def test_location_prefix_is_case_insensitive_and_literal(db_session) -> None:  # type: ignore[no-untyped-def]
    person("Ann", country="gb", postal_code="sw1a 1aa")
    person("Bo", country="GB", postal_code="SW19 2AA")
    person("Cy", country="GB", postal_code="SWXA")
    person("Di", country="GB", postal_code="S_1")
    cond = {"type": "location", "country": "gb", "postal_prefix": "Sw1a"}
    assert who(db_session, include(cond)) == {"Ann"}
    # "_" and "%" are letters here, not LIKE wildcards.
    assert who(db_session, include({**cond, "postal_prefix": "S_"})) == {"Di"}
    assert who(db_session, include({**cond, "postal_prefix": "%"})) == set()


def test_joined_dates_are_inclusive(db_session) -> None:  # type: ignore[no-untyped-def]
    person("Before", created_at=datetime(2025, 2, 28, 23, 59, 59))
    person("First", created_at=datetime(2025, 3, 1, 0, 0, 0))
    person("Last", created_at=datetime(2025, 3, 31, 23, 59, 59))
    person("After", created_at=datetime(2025, 4, 1, 0, 0, 0))
    march = {"type": "joined", "from": "2025-03-01", "to": "2025-03-31"}
    assert who(db_session, include(march)) == {"First", "Last"}
    assert who(db_session, include({**march, "from": None})) == {"Before", "First", "Last"}
    assert who(db_session, include({**march, "to": None})) == {"First", "Last", "After"}
    one_day = {"type": "joined", "from": "2025-03-31", "to": "2025-03-31"}
    assert who(db_session, include(one_day)) == {"Last"}


def test_mailing_received_opened_clicked(db_session) -> None:  # type: ignore[no-untyped-def]
    ann, bo, cy, di = person("Ann"), person("Bo"), person("Cy"), person("Di")
    m, other = mailing(db_session), mailing(db_session)
    d_ann = deliver(db_session, m, ann)
    d_bo = deliver(db_session, m, bo)
    deliver(db_session, m, cy, status="queued")  # not sent yet: not received
    d_di = deliver(db_session, other, di)
    track(db_session, d_ann, "open", machine=True)  # machine opens count as opened
    track(db_session, d_bo, "open")
    track(db_session, d_bo, "click")
    track(db_session, d_di, "click")  # a different mailing
    cond = {"type": "mailing", "event": "received", "mailing_id": m.id}
    assert who(db_session, include(cond)) == {"Ann", "Bo"}
    assert who(db_session, include({**cond, "event": "opened"})) == {"Ann", "Bo"}
    assert who(db_session, include({**cond, "event": "clicked"})) == {"Bo"}


def test_engaged_within_days(db_session) -> None:  # type: ignore[no-untyped-def]
    actor, old_actor, opener, machine, nobody = (
        person("Actor"),
        person("OldActor"),
        person("Opener"),
        person("Machine"),
        person("Nobody"),
    )
    page = ActionPageFactory()
    db_session.add_all(
        [
            Action(page_id=page.id, supporter_id=actor.id, created_at=NOW - timedelta(days=29)),
            Action(page_id=page.id, supporter_id=old_actor.id, created_at=NOW - timedelta(days=31)),
        ]
    )
    db_session.commit()
    m = mailing(db_session)
    track(db_session, deliver(db_session, m, opener), "open", at=NOW - timedelta(days=2))
    track(db_session, deliver(db_session, m, machine), "open", at=NOW, machine=True)
    deliver(db_session, m, nobody)
    cond = {"type": "engaged", "days": 30}
    assert who(db_session, include(cond)) == {"Actor", "Opener"}
    assert who(db_session, include({**cond, "days": 60})) == {"Actor", "OldActor", "Opener"}
    assert who(db_session, include({**cond, "days": 1})) == set()


def test_custom_fields(db_session) -> None:  # type: ignore[no-untyped-def]
    person("Ann", custom_fields={"volunteer": "Yes", "ward": "5"})
    person("Bo", custom_fields={"volunteer": "no"})
    person("Cy", custom_fields={"volunteer": ""})
    person("Di", custom_fields={})
    eq = {"type": "custom_field", "field": "volunteer", "op": "equals", "value": "yes"}
    assert who(db_session, include(eq)) == {"Ann"}
    assert who(db_session, include({**eq, "op": "is_set", "value": ""})) == {"Ann", "Bo"}
    assert who(db_session, include({**eq, "field": "ward", "value": "5"})) == {"Ann"}
    # Leaving out the volunteers keeps everyone else, including those without the field.
    assert who(db_session, include(exclude=[eq])) == {"Bo", "Cy", "Di"}
    assert who(db_session, include(exclude=[{**eq, "op": "is_set", "value": ""}])) == {"Cy", "Di"}


def test_mailable_leaves_out_snoozed_unsubscribed_bounced(db_session) -> None:  # type: ignore[no-untyped-def]
    person("Ok")
    person("SnoozeOver", snoozed_until=NOW - timedelta(seconds=1))
    person("SnoozeEndsNow", snoozed_until=NOW)
    person("Snoozed", snoozed_until=NOW + timedelta(days=3))
    for status in ("unsubscribed", "bounced", "complained", "erased", "not_subscribed"):
        person(status, status=status)
    result = segments.count(db_session, {}, NOW)
    assert result.matching == 9
    assert result.mailable == 3


def test_count_and_condition_agree(db_session) -> None:  # type: ignore[no-untyped-def]
    for i in range(6):
        person(
            f"P{i}", country="GB" if i % 2 else "US", status="subscribed" if i < 4 else "bounced"
        )
    definition = include({"type": "location", "country": "GB", "postal_prefix": ""})
    assert segments.count(db_session, definition, NOW).matching == len(who(db_session, definition))
    assert segments.count(db_session, definition, NOW).mailable == 2


@pytest.mark.parametrize(
    ("definition", "where", "words"),
    [
        ("everyone", "", "must be an object"),
        ({"match": "most"}, "match", "Match must be one of: all, any"),
        ({"include": {"type": "tags"}}, "include", "must be a list"),
        ({"exlude": []}, "", "Unknown setting: exlude"),
        ({"include": [{"type": "zodiac"}]}, "include.0.type", "Unknown condition type 'zodiac'"),
        (
            {"include": [{"type": "donated"}]},
            "include.0.type",
            "Donation conditions arrive with donations",
        ),
        (
            {"include": [{"type": "tags", "mode": "any"}]},
            "include.0.tag_ids",
            "Choose at least one tag",
        ),
        (
            {"include": [{"type": "tags", "mode": "any", "tag_ids": []}]},
            "include.0.tag_ids",
            "at least one tag",
        ),
        (
            {"include": [{"type": "tags", "mode": "any", "tag_ids": ["1"]}]},
            "include.0.tag_ids",
            "positive whole number",
        ),
        (
            {"include": [{"type": "tags", "mode": "some", "tag_ids": [1]}]},
            "include.0.mode",
            "any, all, none",
        ),
        (
            {"exclude": [{"type": "action", "took": "yes", "page_ids": [1]}]},
            "exclude.0.took",
            "true or false",
        ),
        (
            {"include": [{"type": "action", "took": True}]},
            "include.0.page_ids",
            "at least one action page",
        ),
        (
            {"include": [{"type": "joined", "from": "2025-02-30", "to": None}]},
            "include.0.from",
            "a date like",
        ),
        ({"include": [{"type": "joined", "from": "31/03/2025"}]}, "include.0.from", "a date like"),
        (
            {"include": [{"type": "joined", "from": None, "to": None}]},
            "include.0.from",
            "first day, a last day",
        ),
        (
            {"include": [{"type": "joined", "from": "2025-04-01", "to": "2025-03-01"}]},
            "include.0.to",
            "on or after",
        ),
        (
            {"include": [{"type": "location", "country": "", "postal_prefix": ""}]},
            "include.0.country",
            "Give a country",
        ),
        (
            {"include": [{"type": "location", "country": "G1", "postal_prefix": ""}]},
            "include.0.country",
            "two-letter",
        ),
        (
            {"include": [{"type": "mailing", "event": "read", "mailing_id": 1}]},
            "include.0.event",
            "received, opened, clicked",
        ),
        (
            {"include": [{"type": "mailing", "event": "opened"}]},
            "include.0.mailing_id",
            "Choose a mailing",
        ),
        ({"include": [{"type": "engaged", "days": -1}]}, "include.0.days", "whole number from 1"),
        ({"include": [{"type": "engaged", "days": "30"}]}, "include.0.days", "whole number"),
        ({"include": [{"type": "engaged"}]}, "include.0.days", "whole number"),
        (
            {"include": [{"type": "custom_field", "field": "$.x", "op": "is_set"}]},
            "include.0.field",
            "letters, digits",
        ),
        (
            {"include": [{"type": "custom_field", "field": "ward", "op": "equals", "value": ""}]},
            "include.0.value",
            "value to compare",
        ),
        (
            {"include": [{"type": "custom_field", "field": "ward", "op": "like", "value": "x"}]},
            "include.0.op",
            "equals, is_set",
        ),
    ],
)
def test_bad_definitions_say_what_and_where(definition: Any, where: str, words: str) -> None:
    with pytest.raises(SegmentError) as caught:
        segments.validate(definition)
    assert where in caught.value.errors, caught.value.errors
    assert words in caught.value.errors[where]
    assert words in str(caught.value)
    # condition() refuses the same definitions rather than building a wrong query.
    if isinstance(definition, dict):
        with pytest.raises(SegmentError):
            segments.condition(definition, NOW)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SegmentError) as caught:
        segments.validate(
            {
                "include": [{"type": "engaged", "days": 0}],
                "exclude": [{"type": "tags", "mode": "any", "tag_ids": []}],
            }
        )
    assert set(caught.value.errors) == {"include.0.days", "exclude.0.tag_ids"}


def test_validate_normalises(db_session) -> None:  # type: ignore[no-untyped-def]
    normal = segments.validate(
        {
            "include": [
                {"type": "tags", "mode": "all", "tag_ids": [3, 1, 3]},
                {"type": "location", "country": " gb ", "postal_prefix": " sw1 "},
                {"type": "joined", "from": "2025-03-01", "to": ""},
            ]
        }
    )
    assert normal == {
        "match": "all",
        "include": [
            {"type": "tags", "mode": "all", "tag_ids": [1, 3]},
            {"type": "location", "country": "GB", "postal_prefix": "sw1"},
            {"type": "joined", "from": "2025-03-01", "to": None},
        ],
        "exclude": [],
    }


def test_unknown_ids_are_refused_with_a_session(db_session) -> None:  # type: ignore[no-untyped-def]
    red = tag(db_session, "red")
    page = ActionPageFactory()
    definition = include(
        {"type": "tags", "mode": "any", "tag_ids": [red, red + 100]},
        {"type": "action", "took": True, "page_ids": [page.id]},
        exclude=[{"type": "mailing", "event": "opened", "mailing_id": 999}],
    )
    segments.validate(definition)  # the shape is fine
    with pytest.raises(SegmentError) as caught:
        segments.count(db_session, definition, NOW)
    assert caught.value.errors == {
        "include.0.tag_ids": f"No tag with id {red + 100}.",
        "exclude.0.mailing_id": "No mailing with id 999.",
    }


# --- saved segments ----------------------------------------------------------------------


def test_create_update_delete_with_audit_of_field_names(db_session) -> None:  # type: ignore[no-untyped-def]
    organizer = StaffFactory(role=Role.ORGANIZER.value)
    seg = segments.create_segment(
        db_session, name="  UK  ", description="", definition={}, actor=organizer, now=NOW
    )
    assert seg.name == "UK"
    assert segments.segment_by_name(db_session, "UK ") is seg
    assert segments.segment_by_name(db_session, "uk-nope") is None
    gb = include({"type": "location", "country": "GB", "postal_prefix": ""})
    changed = segments.update_segment(
        db_session, seg, name="UK", description="Britain", definition=gb, actor=organizer, now=NOW
    )
    assert changed == ["description", "definition"]
    assert seg.definition["include"][0]["country"] == "GB"
    assert (
        segments.update_segment(
            db_session,
            seg,
            name="UK",
            description="Britain",
            definition=gb,
            actor=organizer,
            now=NOW,
        )
        == []
    )
    segments.delete_segment(db_session, seg, actor=organizer, now=NOW)
    db_session.commit()
    entries = db_session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.action, e.detail) for e in entries if e.action.startswith("segment.")] == [
        ("segment.create", {}),
        ("segment.update", {"fields": ["description", "definition"]}),
        ("segment.delete", {}),
    ]
    assert segments.list_segments(db_session) == []


def test_names_are_unique_and_required(db_session) -> None:  # type: ignore[no-untyped-def]
    admin = StaffFactory(role=Role.ADMIN.value)
    first = segments.create_segment(
        db_session, name="Donors", description="", definition={}, actor=admin, now=NOW
    )
    with pytest.raises(SegmentError) as caught:
        segments.create_segment(
            db_session, name="Donors ", description="", definition={}, actor=admin, now=NOW
        )
    assert caught.value.errors == {"name": "There is already a segment called “Donors”."}
    other = segments.create_segment(
        db_session, name="Others", description="", definition={}, actor=admin, now=NOW
    )
    with pytest.raises(SegmentError):
        segments.update_segment(
            db_session, other, name="Donors", description="", definition={}, actor=admin, now=NOW
        )
    with pytest.raises(SegmentError) as caught:
        segments.create_segment(
            db_session,
            name="",
            description="",
            definition={"include": [{"type": "engaged", "days": -3}]},
            actor=admin,
            now=NOW,
        )
    assert set(caught.value.errors) == {"name", "include.0.days"}
    assert first.id


def test_only_organizers_and_admins_change_segments(db_session) -> None:  # type: ignore[no-untyped-def]
    for role in (Role.VIEWER, Role.FUNDRAISER):
        with pytest.raises(SegmentNotAllowed):
            segments.create_segment(
                db_session,
                name="x",
                description="",
                definition={},
                actor=StaffFactory(role=role.value),
                now=NOW,
            )


def test_a_segment_an_unsent_mailing_uses_cannot_be_deleted(db_session) -> None:  # type: ignore[no-untyped-def]
    admin = StaffFactory(role=Role.ADMIN.value)
    seg = segments.create_segment(
        db_session, name="Used", description="", definition={}, actor=admin, now=NOW
    )
    m = Mailing(subject="s", body_md="b", status=MailingStatus.DRAFT, segment_id=seg.id)
    db_session.add(m)
    db_session.flush()
    with pytest.raises(SegmentError, match="not yet sent use this segment"):
        segments.delete_segment(db_session, seg, actor=admin, now=NOW)
    m.status = MailingStatus.SENT
    segments.delete_segment(db_session, seg, actor=admin, now=NOW)
    assert segments.get_segment(db_session, seg.id) is None
