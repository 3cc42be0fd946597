"""delivery (issue 4)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The due end of the pending rows, for the claim, the expiry sweep and the next wake-up.
    op.create_index("ix_planned_message_state_due_at", "planned_message", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_planned_message_state_due_at", table_name="planned_message")
