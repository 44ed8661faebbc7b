"""tracker: message tags and bodies, conversations, responses, per-hour aggregates

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_stats",
        sa.Column("phone_number_id", sa.String(length=64), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("conversations", sa.BigInteger(), nullable=False),
        sa.Column("by_customer", sa.BigInteger(), nullable=False),
        sa.Column("answered", sa.BigInteger(), nullable=False),
        sa.Column("unanswered", sa.BigInteger(), nullable=False),
        sa.Column("unanswered_runs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "phone_number_id", "bucket_start", name=op.f("pk_conversation_stats")
        ),
    )
    op.create_table(
        "conversations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("phone_number_id", sa.String(length=64), nullable=False),
        sa.Column("customer", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("by_customer", sa.Boolean(), nullable=False),
        sa.Column("customer_wrote", sa.Boolean(), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("first_response_seconds", sa.Float(), nullable=True),
        sa.Column("unanswered_runs", sa.Integer(), nullable=False),
        sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversations_open",
            ["last_at"],
            unique=False,
            sqlite_where=sa.text("ended = 0"),
            postgresql_where=sa.text("NOT ended"),
        )
        batch_op.create_index(
            "ix_conversations_pair", ["phone_number_id", "customer", "started_at"], unique=False
        )
        batch_op.create_index("ix_conversations_started_at", ["started_at"], unique=False)

    op.create_table(
        "delivery_errors",
        sa.Column("phone_number_id", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=512), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("code", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "phone_number_id", "template", "bucket_start", "code", name=op.f("pk_delivery_errors")
        ),
    )
    op.create_table(
        "delivery_stats",
        sa.Column("phone_number_id", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=512), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outbound", sa.BigInteger(), nullable=False),
        sa.Column("sent", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("read", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
        sa.Column("inbound", sa.BigInteger(), nullable=False),
        sa.Column("opt_outs", sa.BigInteger(), nullable=False),
        sa.Column("resumes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "phone_number_id", "template", "bucket_start", name=op.f("pk_delivery_stats")
        ),
    )
    op.create_table(
        "response_stats",
        sa.Column("phone_number_id", sa.String(length=64), nullable=False),
        sa.Column("sender_kind", sa.String(length=16), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total_seconds", sa.Float(), nullable=False),
        sa.Column("max_seconds", sa.Float(), nullable=False),
        sa.Column("bins", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "phone_number_id", "sender_kind", "bucket_start", "kind", name=op.f("pk_response_stats")
        ),
    )
    op.create_table(
        "responses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("phone_number_id", sa.String(length=64), nullable=False),
        sa.Column("customer", sa.String(length=128), nullable=False),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("sender_kind", sa.String(length=16), nullable=False),
        sa.Column("first", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
    )
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index("ix_responses_asked_at", ["asked_at"], unique=False)
        batch_op.create_index(
            "ix_responses_pair", ["phone_number_id", "customer", "asked_at"], unique=False
        )

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("logged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("template", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("journey", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("step", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("experiments", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("origin", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("reply_id", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("body", sa.Text(), nullable=True))
        batch_op.create_index("ix_messages_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_at")
        batch_op.drop_column("body")
        batch_op.drop_column("reply_id")
        batch_op.drop_column("origin")
        batch_op.drop_column("experiments")
        batch_op.drop_column("step")
        batch_op.drop_column("journey")
        batch_op.drop_column("template")
        batch_op.drop_column("logged_at")

    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_index("ix_responses_pair")
        batch_op.drop_index("ix_responses_asked_at")

    op.drop_table("responses")
    op.drop_table("response_stats")
    op.drop_table("delivery_stats")
    op.drop_table("delivery_errors")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_started_at")
        batch_op.drop_index("ix_conversations_pair")
        batch_op.drop_index(
            "ix_conversations_open",
            sqlite_where=sa.text("ended = 0"),
            postgresql_where=sa.text("NOT ended"),
        )

    op.drop_table("conversations")
    op.drop_table("conversation_stats")
