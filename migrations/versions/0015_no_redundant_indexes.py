"""scale (issue 11): no index that another index of the same table begins with

`patient.clinic_id`, `treatment_session.patient_id` and `.clinic_id`, and
`appointment.clinic_id` each had an index of their own, and an index that begins with them
besides (the staff views' and the natural key's), which serves every lookup by them,
foreign-key checks included. Each of the four cost every insert, and every update of a row
that is not HOT (a patient's `maintenance_from` and `last_session_start`, at each booking),
one more index entry for nothing.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, column): each covered by an index that begins with its column.
REDUNDANT = (
    ("ix_patient_clinic_id", "patient", "clinic_id"),
    ("ix_treatment_session_patient_id", "treatment_session", "patient_id"),
    ("ix_treatment_session_clinic_id", "treatment_session", "clinic_id"),
    ("ix_appointment_clinic_id", "appointment", "clinic_id"),
)


def upgrade() -> None:
    for index, table, _ in REDUNDANT:
        op.drop_index(index, table_name=table)


def downgrade() -> None:
    for index, table, column in REDUNDANT:
        op.create_index(index, table, [column])
