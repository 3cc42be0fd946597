"""clinic side (issue 5): staff, invites, courses, broadcasts, imported appointments

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _dt(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "staff_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("tg_user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        _dt("created_at", nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinic.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("clinic_id", "tg_user_id"),
    )
    op.create_index("ix_staff_member_clinic_id", "staff_member", ["clinic_id"])
    op.create_index("ix_staff_member_tg_user_id", "staff_member", ["tg_user_id"])

    op.create_table(
        "invite",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        _dt("start_at"),
        _dt("expires_at"),
        _dt("used_at"),
        sa.Column("used_by", sa.BigInteger(), nullable=True),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        _dt("created_at", nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinic.id"]),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_invite_code", "invite", ["code"], unique=True)
    op.create_index("ix_invite_clinic_id", "invite", ["clinic_id"])

    op.create_table(
        "course",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("plan", sa.String(length=16), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        _dt("maintenance_stopped_at"),
        _dt("created_at", nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_course_patient_id", "course", ["patient_id"])

    op.create_table(
        "course_session",
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["treatment_session.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["course_id"], ["course.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id"),
    )

    op.create_table(
        "broadcast",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.String(length=4000), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("progress_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("progress_message_id", sa.Integer(), nullable=True),
        _dt("progress_at"),
        _dt("created_at", nullable=False),
        _dt("started_at"),
        _dt("finished_at"),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinic.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_broadcast_clinic_id", "broadcast", ["clinic_id"])

    op.create_table(
        "broadcast_recipient",
        sa.Column("broadcast_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcast.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["planned_message.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("broadcast_id", "patient_id"),
    )
    op.create_index("ix_broadcast_recipient_message_id", "broadcast_recipient", ["message_id"])

    op.create_table(
        "appointment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("patient_key", sa.String(length=100), nullable=False),
        _dt("start_at", nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("invite_code", sa.String(length=40), nullable=True),
        _dt("created_at", nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinic.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["treatment_session.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("clinic_id", "patient_key", "start_at"),
    )
    op.create_index("ix_appointment_clinic_id", "appointment", ["clinic_id"])


def downgrade() -> None:
    for table in (
        "appointment",
        "broadcast_recipient",
        "broadcast",
        "course_session",
        "course",
        "invite",
        "staff_member",
    ):
        op.drop_table(table)
