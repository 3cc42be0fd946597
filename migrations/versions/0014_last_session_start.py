"""scale (issue 11): the start of each patient's latest booked session, kept by the write
path; an index of the clinic's patients by zone

A broadcast's course audience (the patients with a session still to come) searched every
reachable patient's sessions: 84-135 ms at 100,000 patients. With the column it is one index
range of the clinic's patients whose latest booked session starts after now. The due list
found the zones of its patients by reading every due patient's (20-58 ms); with the index,
one seek per zone.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from scheduler.courses import EVERY_LAST_SESSION_START

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patient") as batch_op:
        batch_op.add_column(
            sa.Column("last_session_start", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_index("ix_patient_clinic_timezone", "patient", ["clinic_id", "timezone"])
    op.create_index(
        "ix_patient_clinic_last_session_start",
        "patient",
        ["clinic_id", "last_session_start", "blocked_at", "paused_at", "consent_at"],
    )
    # The existing patients' values, in one statement, by the rule the write path applies
    # from now on (scheduler/courses.py). It reads columns that exist at this revision; a
    # rule that someday reads a later one needs today's statement copied here.
    op.execute(EVERY_LAST_SESSION_START)


def downgrade() -> None:
    op.drop_index("ix_patient_clinic_last_session_start", table_name="patient")
    op.drop_index("ix_patient_clinic_timezone", table_name="patient")
    # In place, SQLite too (3.35 and later), as 0009's downgrade.
    op.drop_column("patient", "last_session_start")
