"""Apply the migration history (one history for SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from waquality.store.database import Database, unavailable_on_error

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 74_108_115  # advisory lock id: one migrator at a time on PostgreSQL


def alembic_config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call from several processes at once."""
    with unavailable_on_error(), db.engine.connect() as conn:
        conn = conn.execution_options(write=True)
        if not db.is_sqlite:
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK})
            conn.commit()
        try:
            with conn.begin():
                command.upgrade(alembic_config(conn), revision)
        finally:
            if not db.is_sqlite:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK})
                conn.commit()


def is_current(db: Database) -> bool:
    return current_revision(db) == head_revision()
