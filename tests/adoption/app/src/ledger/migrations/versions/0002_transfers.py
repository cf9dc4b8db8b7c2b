"""transfers, and the currencies the ledger knows (seed data)"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "transfers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("target_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
    )
    op.create_table("currencies", sa.Column("code", sa.String(3), primary_key=True))
    op.execute("INSERT INTO currencies VALUES ('EUR'), ('USD')")
