"""The Alembic migrations build exactly the schema the models describe, and run both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade

from app.extensions import celery_init_app, db


def _differences(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "compare_server_default": True, "render_as_batch": True},
    )
    return list(compare_metadata(context, db.metadata))


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_models_and_migrations_agree(app):
    """Autogenerate, run against the migrated test database, finds nothing to change."""
    with db.engine.connect() as connection:
        differences = _differences(connection)
    assert differences == [], "the models and migrations/ disagree; add a migration"


def test_migrations_have_a_single_head(app):
    config = app.extensions["migrate"].migrate.get_config()
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"several migration heads, merge them: {heads}"


@pytest.fixture
def fresh_sqlite_app(app, make_app, tmp_path: Path) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    """An app on its own new SQLite file; the test app is put back afterwards."""
    fresh = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    try:
        yield fresh
    finally:
        with fresh.app_context():
            db.engine.dispose()
        celery_init_app(app)


def test_downgrade_to_base_and_upgrade_to_head(fresh_sqlite_app):
    model_tables = set(db.metadata.tables)
    with fresh_sqlite_app.app_context():
        engine = db.engine
        assert _tables(engine) == set()

        upgrade()
        assert _tables(engine) == model_tables | {"alembic_version"}
        with engine.connect() as connection:
            assert _differences(connection) == []

        downgrade(revision="base")
        assert _tables(engine) == {"alembic_version"}
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 0

        upgrade()
        assert _tables(engine) == model_tables | {"alembic_version"}
        with engine.connect() as connection:
            assert _differences(connection) == []
            heads = ScriptDirectory.from_config(
                fresh_sqlite_app.extensions["migrate"].migrate.get_config()
            ).get_heads()
            assert MigrationContext.configure(connection).get_current_heads() == tuple(heads)
