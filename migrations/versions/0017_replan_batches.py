"""scale (issue 11): a replan reads each batch of a clinic's sessions as one index range

A replan goes through a clinic's booked sessions in id order, a batch at a time (the first
thousand after the run's cursor). No index had (clinic, state, id), so the database either
read the table in id order and kept the clinic's booked sessions (its plan with statistics;
on a database of many clinics it reads theirs too), or read every remaining booked session
of the clinic through (clinic, state, start) and sorted them, for each batch (its plan
without statistics, as just after an import: 50 ms a batch of 1,000 among 10,000 on
PostgreSQL, against 8 ms with this index). With (clinic_id, state, id), each batch is the
next range of the index, whatever the statistics and the number of clinics.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_treatment_session_clinic_state_id",
        "treatment_session",
        ["clinic_id", "state", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_treatment_session_clinic_state_id", table_name="treatment_session")
