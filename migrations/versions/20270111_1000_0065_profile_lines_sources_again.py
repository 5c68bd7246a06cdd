"""0063's attribution of unsourced profile lines again, across tenants

0063 ran its ``UPDATE client_profiles`` under the row-level security the tenant tables force on their owner: run by
the deployment's schema owner (neither superuser nor BYPASSRLS: ``deploy/postgres-init.sh``) it matched no row,
silently, so a client's forget or the coach's deletion of every summary still left those lines in the profile, the
prompts and the handoff briefs. 0063 now lifts the security for its change (``across_tenants``); this revision runs
0063's change again for a database that ran 0063 before that fix. It is idempotent: a line with sources keeps them,
so where 0063 did its work this changes nothing.

Revision ID: 0065
Revises: 0064
Create Date: 2027-01-11 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from app.db.migrate import revision_module

revision: str = "0065"
down_revision: str | None = "0064"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    revision_module("0063").upgrade()


def downgrade() -> None:
    """Nothing to undo: the sources added stay (they are sources), as 0063's downgrade leaves them."""
