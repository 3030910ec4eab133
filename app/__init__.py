"""Groundswell: create_app() wires configuration, extensions and blueprints together."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import load_config
from app.extensions import celery_init_app, csrf, db, limiter, login_manager, migrate

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app. No migrations and no network calls happen here."""
    instance_path = Path(os.environ.get("GROUNDSWELL_INSTANCE", ROOT / "instance"))
    app = Flask(
        __name__,
        instance_path=str(instance_path.resolve()),
        template_folder=str(ROOT / "templates"),
        static_folder="static",
    )
    app.config.from_mapping(load_config(instance_path))
    if test_config:
        app.config.from_mapping(test_config)

    if hops := app.config["TRUSTED_PROXY_COUNT"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    # No eager `current_user` in every template: see app/staff/auth.register_auth.
    login_manager.init_app(app, add_context_processor=False)
    csrf.init_app(app)
    limiter.init_app(app)
    celery_init_app(app)

    from app import models  # noqa: F401  (every table known to SQLAlchemy and Alembic)
    from app.actions.event_views import bp as events_bp
    from app.actions.letter_views import bp as target_links_bp
    from app.actions.letter_views import staff_bp as targets_bp
    from app.actions.staff_views import bp as staff_pages_bp
    from app.actions.views import bp as actions_bp
    from app.mailings.report_views import bp as mailing_reports_bp
    from app.mailings.staff_views import bp as mailings_bp
    from app.mailings.tracking_views import bp as tracking_bp
    from app.site import register_site
    from app.staff.auth import register_auth
    from app.staff.views import bp as staff_bp
    from app.supporters.segment_views import bp as segments_bp
    from app.supporters.views import bp as supporters_bp
    from app.webhooks.sendgrid import bp as sendgrid_webhook_bp

    register_site(app)
    register_auth(app)
    app.register_blueprint(supporters_bp)
    app.register_blueprint(actions_bp)
    app.register_blueprint(target_links_bp)
    app.register_blueprint(targets_bp)
    app.register_blueprint(events_bp)
    app.register_blueprint(staff_bp)
    app.register_blueprint(staff_pages_bp)
    app.register_blueprint(tracking_bp)
    app.register_blueprint(mailing_reports_bp)
    app.register_blueprint(mailings_bp)
    app.register_blueprint(segments_bp)
    app.register_blueprint(sendgrid_webhook_bp)

    from app.cli import register_cli

    register_cli(app)
    # At DEBUG this client logs request headers (the API key) and payloads (addresses).
    logging.getLogger("python_http_client").setLevel(logging.WARNING)
    return app


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """WAL and a busy timeout let the web server and the worker share one SQLite file."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
