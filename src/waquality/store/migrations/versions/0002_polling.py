"""polling: watched WABAs, re-read requests, Graph API calls, confirmation times

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "graph_calls",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("waba_id", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("path", sa.String(length=256), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_graph_calls")),
    )
    with op.batch_alter_table("graph_calls", schema=None) as batch_op:
        batch_op.create_index("ix_graph_calls_at", ["at"], unique=False)
        batch_op.create_index("ix_graph_calls_waba_id_at", ["waba_id", "at"], unique=False)

    op.create_table(
        "poll_requests",
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("waba_id", sa.String(length=64), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_kind", "subject_id", name=op.f("pk_poll_requests")),
    )
    op.create_table(
        "watched_wabas",
        sa.Column("waba_id", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("business_id", sa.String(length=64), nullable=True),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("poll_state", sa.String(length=16), server_default="new", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("usage_percent", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("waba_id", name=op.f("pk_watched_wabas")),
    )
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("health_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("wabas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subscribed", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wabas", schema=None) as batch_op:
        batch_op.drop_column("confirmed_at")
        batch_op.drop_column("subscribed")

    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_column("confirmed_at")

    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.drop_column("confirmed_at")
        batch_op.drop_column("health_status")

    op.drop_table("watched_wabas")
    op.drop_table("poll_requests")
    with op.batch_alter_table("graph_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_graph_calls_waba_id_at")
        batch_op.drop_index("ix_graph_calls_at")

    op.drop_table("graph_calls")
