"""seed rooms"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """The hotel's rooms: seed data every environment needs."""
    op.execute("INSERT INTO rooms (name) VALUES ('Blue'), ('Green'), ('Red')")


def downgrade() -> None:
    """Remove the seeded rooms."""
    op.execute("DELETE FROM rooms WHERE name IN ('Blue', 'Green', 'Red')")
