"""scale (issue 11): indexes for the staff views, the audience counts and the delivery export

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_patient_clinic_id_id", "patient", ["clinic_id", "id"]),
    (
        "ix_patient_clinic_reachable",
        "patient",
        ["clinic_id", "blocked_at", "paused_at", "consent_at"],
    ),
    (
        "ix_treatment_session_patient_state_start",
        "treatment_session",
        ["patient_id", "state", "start_at", "id"],
    ),
    (
        "ix_treatment_session_clinic_state_start",
        "treatment_session",
        ["clinic_id", "state", "start_at"],
    ),
    ("ix_course_session_course_id", "course_session", ["course_id"]),
    ("ix_checkin_answered_at_id", "checkin", ["answered_at", "id"]),
    ("ix_inbox_message_reply_to", "inbox_message", ["reply_to"]),
    ("ix_inbox_message_clinic_open", "inbox_message", ["clinic_id", "kind", "handled_at"]),
    ("ix_planned_message_due_at_id", "planned_message", ["due_at", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
