"""factory_boy factories on the app's session."""

from __future__ import annotations

import factory
from factory.alchemy import SQLAlchemyModelFactory

from app.actions.models import ActionPage, PageKind, PageStatus, Target
from app.extensions import db
from app.staff.models import Role, StaffUser
from app.staff.service import _hasher
from app.supporters.models import Supporter, SupporterStatus

STAFF_PASSWORD = "correct horse battery staple"


class SupporterFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Supporter
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "commit"

    email = factory.Sequence(lambda n: f"supporter{n}@example.org")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    postal_code = "10001"
    country = "US"
    status = SupporterStatus.SUBSCRIBED.value


class StaffFactory(SQLAlchemyModelFactory):
    class Meta:
        model = StaffUser
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "commit"

    email = factory.Sequence(lambda n: f"staff{n}@example.org")
    password_hash = factory.LazyFunction(lambda: _hasher.hash(STAFF_PASSWORD))
    role = Role.ADMIN.value


class ActionPageFactory(SQLAlchemyModelFactory):
    class Meta:
        model = ActionPage
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "commit"

    kind = PageKind.PETITION.value
    slug = factory.Sequence(lambda n: f"page-{n}")
    title = factory.Sequence(lambda n: f"Stop the atrocities, number {n}")
    body_md = "Officials must act **now**."
    status = PageStatus.LIVE.value
    opt_in_text = "Email me about this campaign. I can unsubscribe at any time."
    settings = factory.LazyFunction(dict)


class TargetFactory(SQLAlchemyModelFactory):
    class Meta:
        model = Target
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "commit"

    name = factory.Sequence(lambda n: f"Senator Number {n}")
    title = "Senator"
    office_email = factory.Sequence(lambda n: f"office{n}@senate.example")
    phone = "+1 202 555 0100"
    region = "NY"
