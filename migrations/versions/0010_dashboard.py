"""dashboard (issue 12): login links, sessions, and patients found by name

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dashboard_login",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("tg_user_id", sa.BigInteger(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "dashboard_session",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("tg_user_id", sa.BigInteger(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index(
        "ix_dashboard_session_tg_user_id", "dashboard_session", ["tg_user_id"], unique=False
    )
    op.create_index(
        "ix_dashboard_session_expires_at", "dashboard_session", ["expires_at"], unique=False
    )
    op.create_index(
        "ix_patient_clinic_name",
        "patient",
        ["clinic_id", sa.text("lower(first_name)"), "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_patient_clinic_name", table_name="patient")
    op.drop_index("ix_dashboard_session_expires_at", table_name="dashboard_session")
    op.drop_index("ix_dashboard_session_tg_user_id", table_name="dashboard_session")
    op.drop_table("dashboard_session")
    op.drop_table("dashboard_login")
