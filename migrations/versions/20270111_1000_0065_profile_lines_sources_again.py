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

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

revision: str = "0065"
down_revision: str | None = "0064"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0063() -> ModuleType:
    """Revision 0063's module (its file, beside this one), whose ``upgrade`` this revision runs again."""
    path = next(Path(__file__).parent.glob("*_0063_profile_lines_sources.py"))
    spec = importlib.util.spec_from_file_location("revision_0063", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    _revision_0063().upgrade()


def downgrade() -> None:
    """Nothing to undo: the sources added stay (they are sources), as 0063's downgrade leaves them."""
