"""conversation and inbox (issue 8): patient messages and staff replies, staff-bound delivery
rows, lasting screening answers, the clinic's emergency number

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _dt(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("clinic") as batch_op:
        batch_op.add_column(
            sa.Column(
                "emergency_phone", sa.String(length=32), nullable=False, server_default="112"
            )
        )
    with op.batch_alter_table("patient") as batch_op:
        batch_op.add_column(
            sa.Column("conditions", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(_dt("conditions_at"))
    with op.batch_alter_table("planned_message") as batch_op:
        batch_op.add_column(sa.Column("chat_id", sa.BigInteger(), nullable=True))

    op.create_table(
        "inbox_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.String(length=4000), nullable=False),
        sa.Column("signs", sa.JSON(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("checkin_id", sa.Integer(), nullable=True),
        sa.Column("reply_to", sa.Integer(), nullable=True),
        sa.Column("author_id", sa.BigInteger(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        _dt("created_at", nullable=False),
        _dt("handled_at"),
        sa.Column("handled_by", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinic.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["treatment_session.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["checkin_id"], ["checkin.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reply_to"], ["inbox_message.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["delivery_id"], ["planned_message.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_inbox_message_patient_id", "inbox_message", ["patient_id"])
    op.create_index(
        "ix_inbox_message_clinic_created", "inbox_message", ["clinic_id", "created_at"]
    )

    op.create_table(
        "staff_draft",
        sa.Column("tg_user_id", sa.BigInteger(), nullable=False),
        sa.Column("reply_to", sa.Integer(), nullable=False),
        _dt("created_at", nullable=False),
        sa.ForeignKeyConstraint(["reply_to"], ["inbox_message.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tg_user_id"),
    )


def downgrade() -> None:
    op.drop_table("staff_draft")
    op.drop_index("ix_inbox_message_clinic_created", table_name="inbox_message")
    op.drop_index("ix_inbox_message_patient_id", table_name="inbox_message")
    op.drop_table("inbox_message")
    with op.batch_alter_table("planned_message") as batch_op:
        batch_op.drop_column("chat_id")
    with op.batch_alter_table("patient") as batch_op:
        batch_op.drop_column("conditions_at")
        batch_op.drop_column("conditions")
    with op.batch_alter_table("clinic") as batch_op:
        batch_op.drop_column("emergency_phone")
