"""Storage: one schema and one migration history for SQLite and PostgreSQL."""
