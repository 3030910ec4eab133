"""Fixtures as Flask users expect them: `app`, `client`, `runner`, plus a database per run.

The schema is built only by the Alembic migrations, on SQLite by default or on
the PostgreSQL database named by TEST_DATABASE_URL. Each test starts with empty
tables and an empty outbox.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.globals import _cv_app
from flask.testing import FlaskClient, FlaskCliRunner
from werkzeug.serving import BaseWSGIServer, make_server

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES", "") not in ("", "0")
ROOT = Path(__file__).resolve().parent.parent


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("instance")
    os.environ["GROUNDSWELL_INSTANCE"] = str(path)
    return path


@pytest.fixture(scope="session")
def database_url(instance_dir: Path) -> str:
    if not TEST_DATABASE_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not")
        return f"sqlite:///{instance_dir / 'test.sqlite'}"
    try:
        _reset_postgres(TEST_DATABASE_URL)
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at TEST_DATABASE_URL is not reachable: {exc}")
    return TEST_DATABASE_URL


def test_config(database_url: str, instance_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The configuration every test app shares; tests override single keys."""
    from app.config import load_config

    base = load_config(instance_dir)
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "BASE_URL": "http://localhost",
        "OUTBOX_DIR": str(instance_dir / "outbox"),
        "RATELIMIT_ENABLED": False,
        "CELERY": {**base["CELERY"], "task_always_eager": True, "broker_url": "memory://"},
    }
    config.update(overrides)
    return config


class FreshGlobalsClient(FlaskClient):
    """Each request starts with an empty `g`, as in production.

    The `app` fixture holds an app context open for the test body, and Flask
    reuses it for test-client requests, so without this `g` (Flask-WTF's CSRF
    token, Flask-Login's user) would leak from one request into the next.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        ctx = _cv_app.get(None)
        saved = None
        if ctx is not None and ctx.app is self.application:
            saved = dict(ctx.g.__dict__)
            ctx.g.__dict__.clear()
        try:
            return super().open(*args, **kwargs)
        finally:
            if saved is not None:
                ctx.g.__dict__.clear()
                ctx.g.__dict__.update(saved)


@pytest.fixture(scope="session")
def make_app(database_url: str, instance_dir: Path):  # type: ignore[no-untyped-def]
    """Build another app on the test database, with config overrides."""
    from app import create_app
    from app.extensions import db

    built: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app(test_config(database_url, instance_dir, **overrides))
        app.test_client_class = FreshGlobalsClient
        built.append(app)
        return app

    yield build
    for app in built:  # close pooled connections before the database goes away
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="session")
def _migrated_app(make_app) -> Flask:  # type: ignore[no-untyped-def]
    from flask_migrate import upgrade

    app = make_app()
    with app.app_context():
        upgrade()
    return app


def _empty_tables(app: Flask) -> None:
    from app.extensions import db

    db.session.remove()
    tables = list(reversed(db.metadata.sorted_tables))
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


def _empty_outbox(app: Flask) -> None:
    outbox = Path(app.config["OUTBOX_DIR"])
    if outbox.is_dir():
        for path in outbox.iterdir():
            path.unlink()


@pytest.fixture
def app(_migrated_app: Flask) -> Iterator[Flask]:
    # Re-bind Celery to this app: a test may have built another one.
    from app.extensions import celery_init_app
    from app.mailings.tracking import clear_link_cache

    celery_init_app(_migrated_app)
    # Ids start again after the tables are emptied: a link cached for "mailing 1" by an
    # earlier test must not answer for this test's mailing 1.
    clear_link_cache()
    with _migrated_app.app_context():
        _empty_tables(_migrated_app)
        _empty_outbox(_migrated_app)
        yield _migrated_app
        _empty_tables(_migrated_app)
    clear_link_cache()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def db_session(app: Flask):  # type: ignore[no-untyped-def]
    from app.extensions import db

    return db.session


@pytest.fixture
def outbox(app: Flask):  # type: ignore[no-untyped-def]
    from app.integrations.email.outbox import OutboxProvider

    return OutboxProvider(app.config["OUTBOX_DIR"])


def csrf_token(client: FlaskClient, path: str = "/signup") -> str:
    """The CSRF token from a form page, as a browser would get it."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, f"no csrf_token on {path}"
    return match.group(1)


class LiveServer:
    def __init__(self, app: Flask) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    """The app on a real HTTP port, for browsers and real HTTP clients."""
    app.config["BASE_URL"] = "http://127.0.0.1:0"
    with LiveServer(app) as server:
        app.config["BASE_URL"] = server.url
        yield server
    app.config["BASE_URL"] = "http://localhost"
