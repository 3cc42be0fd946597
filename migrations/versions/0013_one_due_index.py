"""one due index (issue 11): the planned rows' (state, priority, due_at) index goes

Every query that reads planned rows by state and due time reads (state, due_at), which 0004
added; none reads this one, the first schema's. Each planned row went into it all the same:
one B-tree in six that every booking, import and replan wrote to.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_planned_message_due", table_name="planned_message")


def downgrade() -> None:
    op.create_index(
        "ix_planned_message_due", "planned_message", ["state", "priority", "due_at"], unique=False
    )
