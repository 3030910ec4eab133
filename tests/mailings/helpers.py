"""Reading back what a send did: its deliveries, and the messages the outbox holds."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from flask import Flask
from sqlalchemy import select

from app.extensions import db
from app.mailings.models import Delivery


def deliveries(mailing_id: int) -> list[Delivery]:
    """The mailing's deliveries as the database has them now, in id order."""
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(Delivery).where(Delivery.mailing_id == mailing_id).order_by(Delivery.id)
        )
    )


def outbox_messages(app: Flask) -> list[EmailMessage]:
    """Every message in the outbox folder, parsed, in file-name order."""
    folder = Path(app.config["OUTBOX_DIR"])
    if not folder.is_dir():
        return []
    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]  # type: ignore[misc]
