"""factory_boy factories on the app's session."""

from __future__ import annotations

import factory
from factory.alchemy import SQLAlchemyModelFactory

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
