"""What the benchmarks share: their own PostgreSQL databases (made empty before a run,
dropped after) and stopping the processes they start."""

from __future__ import annotations

import os
import signal
import subprocess

import sqlalchemy as sa


def _admin(url: str) -> tuple[sa.Engine, str]:
    server_url = sa.engine.make_url(url)
    admin = sa.create_engine(server_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    return admin, str(server_url.database)


def reset_database(url: str) -> None:
    """Create the database if needed and empty its public schema (the migrations refill it)."""
    admin, name = _admin(url)
    with admin.connect() as conn:
        exists = sa.text("SELECT 1 FROM pg_database WHERE datname = :name")
        found = conn.scalar(exists, {"name": name})
        if not found:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def drop_database(url: str) -> None:
    admin, name = _admin(url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, and its children: TERM, then KILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
