"""Demo supporters for trying the app by hand: example.org addresses only."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from app.supporters.models import ConsentEvent, ConsentKind, Supporter, SupporterStatus
from privacy import POLICY_VERSION

FIRST = [
    "Amina",
    "Ben",
    "Chloé",
    "Dev",
    "Elif",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Luis",
    "Mei",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
]
LAST = [
    "Abebe",
    "Brown",
    "Costa",
    "Dubois",
    "Eze",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Mensah",
    "Nguyen",
    "Okafor",
    "Patel",
]
COUNTRIES = ["US", "US", "US", "GB", "CA", "DE", "FR", "KE", "NG", "AU"]
BATCH = 10_000


def seed_supporters(session: Session, wanted: int, now: datetime) -> int:
    """Top up demo supporters to `wanted` with set-based inserts; returns how many were made."""
    have = (
        session.scalar(select(func.count()).where(Supporter.email.like("demo-%@example.org"))) or 0
    )
    rng = random.Random(have)
    made = 0
    for start in range(have, wanted, BATCH):
        rows = []
        for i in range(start, min(wanted, start + BATCH)):
            rows.append(
                {
                    "public_id": uuid.uuid4().hex,
                    "email": f"demo-{i}@example.org",
                    "first_name": rng.choice(FIRST),
                    "last_name": rng.choice(LAST),
                    "postal_code": f"{rng.randint(10000, 99999)}",
                    "country": rng.choice(COUNTRIES),
                    "status": SupporterStatus.SUBSCRIBED.value,
                    "source": "demo seed",
                    "custom_fields": {},
                    "snoozed_until": None,
                    "created_at": now - timedelta(minutes=rng.randint(0, 60 * 24 * 60)),
                    "updated_at": now,
                    "welcomed_at": now,
                }
            )
        ids = session.scalars(insert(Supporter).returning(Supporter.id), rows).all()
        session.execute(
            insert(ConsentEvent),
            [
                {
                    "supporter_id": sid,
                    "kind": ConsentKind.SUBSCRIBE.value,
                    "source": "demo seed",
                    "policy_version": POLICY_VERSION,
                    "detail": "demo data",
                    "created_at": now,
                }
                for sid in ids
            ],
        )
        made += len(rows)
    return made
