"""One migration history for both databases, matching the tables the code uses."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from waquality.store import migrate
from waquality.store.database import Database
from waquality.store.schema import metadata


def test_migrations_match_the_schema(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_upgrade_is_idempotent_and_at_head(db: Database) -> None:
    migrate.upgrade(db)
    migrate.upgrade(db)
    assert migrate.is_current(db)
    assert migrate.current_revision(db) == migrate.head_revision()


def test_a_fresh_sqlite_file_is_created_and_migrated(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        migrate.upgrade(database)
        assert migrate.is_current(database)
    finally:
        database.dispose()
