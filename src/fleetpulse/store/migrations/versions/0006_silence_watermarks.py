"""Trustworthy answers (issue 11): silence judged against what ingest has seen.

- ``ingest_watermarks``: one row per ingest worker, the receive time before which it has
  committed every heartbeat the broker held (``seen_through``), and when it said so
  (``reported_at``). The silence detector judges at the least fresh watermark, so an ingest
  or database outage does not mark the fleet offline.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE ingest_watermarks ("
        " worker text PRIMARY KEY,"
        " seen_through timestamptz NOT NULL,"
        " reported_at timestamptz NOT NULL)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ingest_watermarks")
