"""erased count and menu button (issue 12): how many of a clinic's patients erased themselves,
a plain number; the Mini App a staff member's chat has as its menu button

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Additive, with a default: a version without it runs on as before (docs/delivery.md,
    # rolling upgrades); it only does not count the erasures it makes. In place (SQLite too):
    # batch mode would copy the table, which the foreign keys to clinics refuse.
    op.add_column(
        "clinic",
        sa.Column("erased_patients", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "staff_member", sa.Column("menu_button_url", sa.String(length=500), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("staff_member", "menu_button_url")
    op.drop_column("clinic", "erased_patients")
