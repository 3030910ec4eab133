"""Settings read from the environment, with embedded defaults for a laptop."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from celery.schedules import crontab

DEMO_ORG_NAME = "Groundswell Demo Campaign"
DEMO_POSTAL_ADDRESS = "100 Example Street, Suite 1, Springfield, ST 00000, USA"
DEMO_MAIL_FROM = "Groundswell Demo <alerts@groundswell.example>"


class ConfigError(RuntimeError):
    """A required setting is missing in production."""


def _secret_key(instance_path: Path) -> str:
    """SECRET_KEY from the environment, else one generated once into instance/secret_key."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = instance_path / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL so that two processes starting together agree on one key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def load_config(instance_path: Path) -> dict[str, Any]:
    """Build the Flask config mapping from the environment (see CONTRACT.md)."""
    env = os.environ.get("GROUNDSWELL_ENV", "development")
    production = env == "production"
    instance = instance_path.resolve()

    org_name = os.environ.get("ORG_NAME")
    postal = os.environ.get("ORG_POSTAL_ADDRESS")
    mail_from = os.environ.get("MAIL_FROM")
    if production:
        missing = [
            n
            for n, v in (
                ("ORG_NAME", org_name),
                ("ORG_POSTAL_ADDRESS", postal),
                ("MAIL_FROM", mail_from),
                ("SECRET_KEY", os.environ.get("SECRET_KEY")),
            )
            if not v
        ]
        if missing:
            raise ConfigError(f"GROUNDSWELL_ENV=production needs {', '.join(missing)}")

    base_url = os.environ.get("BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    broker = os.environ.get("CELERY_BROKER_URL", f"sqla+sqlite:///{instance / 'broker.sqlite'}")

    return {
        "ENV_NAME": env,
        "SECRET_KEY": _secret_key(instance),
        "SQLALCHEMY_DATABASE_URI": os.environ.get(
            "DATABASE_URL", f"sqlite:///{instance / 'groundswell.sqlite'}"
        ),
        # A database that does not answer must not hold a request (a tracking pixel, a
        # click) for long: give up connecting after 3 s (the event is spooled instead).
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(
            os.environ.get("DATABASE_URL", ""), int(os.environ.get("DB_CONNECT_TIMEOUT", "3"))
        ),
        "BASE_URL": base_url,
        "ORG_NAME": org_name or DEMO_ORG_NAME,
        "ORG_POSTAL_ADDRESS": postal or DEMO_POSTAL_ADDRESS,
        "MAIL_FROM": mail_from or DEMO_MAIL_FROM,
        "UNSUBSCRIBE_MAILTO": os.environ.get("UNSUBSCRIBE_MAILTO", ""),
        "EMAIL_PROVIDER": os.environ.get("EMAIL_PROVIDER", "outbox"),
        "OUTBOX_DIR": os.environ.get("OUTBOX_DIR", str(instance / "outbox")),
        "SENDGRID_API_KEY": os.environ.get("SENDGRID_API_KEY", ""),
        "SENDGRID_API_HOST": os.environ.get("SENDGRID_API_HOST", "https://api.sendgrid.com"),
        "SENDGRID_WEBHOOK_PUBLIC_KEY": os.environ.get("SENDGRID_WEBHOOK_PUBLIC_KEY", ""),
        "SMTP_HOST": os.environ.get("SMTP_HOST", "127.0.0.1"),
        "SMTP_PORT": int(os.environ.get("SMTP_PORT", "25")),
        "SMTP_USERNAME": os.environ.get("SMTP_USERNAME", ""),
        "SMTP_PASSWORD": os.environ.get("SMTP_PASSWORD", ""),
        "SMTP_STARTTLS": _bool("SMTP_STARTTLS", False),
        "STRIPE_SECRET_KEY": os.environ.get("STRIPE_SECRET_KEY", ""),
        "STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", ""),
        "STRIPE_API_BASE": os.environ.get("STRIPE_API_BASE", ""),
        # How many reverse proxies set X-Forwarded-For in front of the app (rate limits key on it).
        "TRUSTED_PROXY_COUNT": int(os.environ.get("TRUSTED_PROXY_COUNT", "0")),
        # Origins that may frame /a/<slug>/embed (space-separated), or "*" for any site.
        "EMBED_FRAME_ANCESTORS": os.environ.get("EMBED_FRAME_ANCESTORS", "*"),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": base_url.startswith("https://"),
        "REMEMBER_COOKIE_SECURE": base_url.startswith("https://"),
        "PERMANENT_SESSION_LIFETIME": 8 * 3600,
        "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
        "WTF_CSRF_TIME_LIMIT": None,  # a form left open over lunch still submits
        "RATELIMIT_STORAGE_URI": os.environ.get("RATELIMIT_STORAGE_URI", "memory://"),
        "RATELIMIT_ENABLED": _bool("RATELIMIT_ENABLED", True),
        "RATELIMIT_HEADERS_ENABLED": True,
        "SIGNUP_RATE_LIMIT": os.environ.get("SIGNUP_RATE_LIMIT", "10 per minute;60 per hour"),
        "LOGIN_RATE_LIMIT": os.environ.get("LOGIN_RATE_LIMIT", "10 per minute"),
        # batched: opens and clicks go to a per-process spool file, stored in batches every
        # second (fsync'd every 200 ms); direct: each is stored before the answer.
        "TRACKING_WRITE_MODE": os.environ.get("TRACKING_WRITE_MODE", "batched"),
        # Staff's pre-send check requests each outside link in a mailing (HEAD, 5 s).
        "MAILING_CHECK_EXTERNAL_LINKS": _bool("MAILING_CHECK_EXTERNAL_LINKS", True),
        # No more than this many mailings per person per 24 hours (0 = no cap).
        "MAILING_DAILY_CAP": int(os.environ.get("MAILING_DAILY_CAP", "1")),
        # Deliveries claimed longer ago than this are re-queued by `mailings.reconcile`.
        "MAILING_CLAIM_LEASE_SECONDS": float(os.environ.get("MAILING_CLAIM_LEASE_SECONDS", "300")),
        "CELERY": {
            "broker_url": broker,
            "task_ignore_result": True,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "broker_connection_retry_on_startup": True,
            "task_always_eager": _bool("CELERY_TASK_ALWAYS_EAGER", False),
            "task_eager_propagates": True,
            "beat_schedule": {
                "start-scheduled-mailings": {
                    "task": "mailings.start_scheduled",
                    "schedule": 30.0,
                },
                "decide-ab-tests": {
                    "task": "mailings.decide_ab_tests",
                    "schedule": 60.0,
                },
                "reconcile-mailings": {
                    "task": "mailings.reconcile",
                    "schedule": 60.0,
                },
                "send-pending-welcomes": {
                    "task": "supporters.send_pending_welcomes",
                    "schedule": 60.0,
                },
                # Offices that take a daily digest get it at 17:00 UTC.
                "send-letter-digests": {
                    "task": "letters.send_daily_digests",
                    "schedule": crontab(minute=0, hour=17),
                },
                "send-stale-letters": {
                    "task": "letters.send_stale_letters",
                    "schedule": 900.0,
                },
                "send-pending-rsvp-emails": {
                    "task": "actions.send_pending_rsvp_emails",
                    "schedule": 300.0,
                },
                "send-pending-letter-copies": {
                    "task": "letters.send_pending_copies",
                    "schedule": 300.0,
                },
                # Opens and clicks spooled while the database was unavailable.
                "drain-tracking-spool": {
                    "task": "tracking.drain_spool",
                    "schedule": 30.0,
                },
                # Provider events whose processing task was never queued or failed.
                "process-provider-events": {
                    "task": "webhooks.process_provider_events",
                    "schedule": 60.0,
                },
            },
        },
    }


def _engine_options(database_url: str, connect_timeout: int) -> dict[str, Any]:
    if database_url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": connect_timeout}, "pool_pre_ping": True}
    return {}
