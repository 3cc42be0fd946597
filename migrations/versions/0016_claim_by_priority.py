"""scale (issue 11): the claim reads each priority's due rows in claim order

The one due-time index, (state, due_at), ordered the due rows by time across priorities, so
the claim (priority, due time, seq, id) read and sorted every due row for each batch of 100,
and the expiry sweep read them all too: with a broadcast to 100,000 waiting, 76 ms and 27 ms
a batch on SQLite, a paid broadcast held to half its 1,000 a second. It is replaced by two
partial indexes: the pending rows by (priority, due_at, seq, id), where the claim reads the
first rows of each priority's due range; and the rows being sent by `lease_until`, for the
abandoned ones. A sent, expired or cancelled row is in neither, so neither grows with the
history.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("state = 'pending'")
SENDING = sa.text("state = 'sending'")


def upgrade() -> None:
    op.create_index(
        "ix_planned_message_pending",
        "planned_message",
        ["priority", "due_at", "seq", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_planned_message_sending",
        "planned_message",
        ["lease_until"],
        sqlite_where=SENDING,
        postgresql_where=SENDING,
    )
    op.drop_index("ix_planned_message_state_due_at", table_name="planned_message")


def downgrade() -> None:
    op.create_index("ix_planned_message_state_due_at", "planned_message", ["state", "due_at"])
    op.drop_index("ix_planned_message_sending", table_name="planned_message")
    op.drop_index("ix_planned_message_pending", table_name="planned_message")
