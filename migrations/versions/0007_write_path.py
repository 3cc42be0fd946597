"""scale (issue 11): clinic-wide replan runs that resume, and paid broadcasts per clinic

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clinic") as batch_op:
        batch_op.add_column(
            sa.Column(
                "allow_paid_broadcast", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    op.create_table(
        "replan_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinic.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_replan_run_clinic_id", "replan_run", ["clinic_id"])


def downgrade() -> None:
    op.drop_index("ix_replan_run_clinic_id", table_name="replan_run")
    op.drop_table("replan_run")
    with op.batch_alter_table("clinic") as batch_op:
        batch_op.drop_column("allow_paid_broadcast")
