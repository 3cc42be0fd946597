"""scale (issue 11): when each patient's maintenance counts from, kept by the write path

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from scheduler.courses import EVERY_MAINTENANCE_FROM

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patient") as batch_op:
        batch_op.add_column(
            sa.Column("maintenance_from", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_index(
        "ix_patient_clinic_maintenance_from",
        "patient",
        [
            "clinic_id",
            "maintenance_from",
            "id",
            "timezone",
            "blocked_at",
            "paused_at",
            "consent_at",
        ],
    )
    # The existing patients' values, in one statement, by the rule the write path applies
    # from now on (scheduler/courses.py). It reads columns that exist at this revision; a
    # rule that someday reads a later one needs today's statement copied here.
    op.execute(EVERY_MAINTENANCE_FROM)


def downgrade() -> None:
    op.drop_index("ix_patient_clinic_maintenance_from", table_name="patient")
    # In place, SQLite too (3.35 and later): batch mode would copy the table and drop the old
    # one, which the foreign keys of every table about patients refuse once there are rows.
    op.drop_column("patient", "maintenance_from")
