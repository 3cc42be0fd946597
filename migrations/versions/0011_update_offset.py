"""update offset (issue 13): where the polling leader resumes after a take-over

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Additive: a version without it runs on as before (docs/delivery.md, rolling upgrades).
    op.create_table(
        "update_offset",
        sa.Column("bot_id", sa.BigInteger(), nullable=False),
        sa.Column("next_update_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bot_id"),
    )


def downgrade() -> None:
    op.drop_table("update_offset")
