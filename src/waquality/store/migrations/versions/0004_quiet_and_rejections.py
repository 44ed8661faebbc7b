"""quiet (replayed) webhook bodies, refused webhook counts, when an alert was last told

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("raw_webhooks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("quiet", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE alerts SET notified_at = updated_at")
    op.create_table(
        "webhook_rejections",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "reason", name=op.f("pk_webhook_rejections")),
    )


def downgrade() -> None:
    op.drop_table("webhook_rejections")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("notified_at")
    with op.batch_alter_table("raw_webhooks", schema=None) as batch_op:
        batch_op.drop_column("quiet")
