"""rooms and bookings"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    """Create rooms and bookings; a room is booked at most once a night."""
    op.create_table(
        "rooms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(40), nullable=False, unique=True),
    )
    op.create_table(
        "bookings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("guest", sa.String(80), nullable=False),
        sa.Column("night", sa.Date, nullable=False),
        sa.UniqueConstraint("room_id", "night"),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("bookings")
    op.drop_table("rooms")
