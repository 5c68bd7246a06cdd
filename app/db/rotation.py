"""Key rotation at rest: re-encrypt every stored secret under the primary ``SECRET_KEY``
(``opencoach rotate-secret``; see :class:`app.core.security.SecretBox`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import Column, MetaData, Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.security import SecretBox
from app.db.engine import make_sessionmaker, tenant_session

ENCRYPTED_SUFFIX = "_encrypted"
"""Every column holding a Fernet token is named ``<what>_encrypted`` (e.g. ``llm_api_key_encrypted``)."""


@dataclass
class RotationReport:
    """What :func:`rotate_secrets` did: ``rotated[coach_id]`` = secrets re-encrypted for that coach (every
    coach appears, 0 included); ``undecryptable`` = ``"table.column row-id"`` of each secret that no
    configured key opens (left unchanged)."""

    rotated: dict[uuid.UUID, int] = field(default_factory=dict)
    undecryptable: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Secrets re-encrypted in all."""
        return sum(self.rotated.values())


def encrypted_columns(metadata: MetaData) -> dict[Table, list[Column[bytes]]]:
    """The ``*_encrypted`` columns of every table in ``metadata``, by table (tables without one left out).
    Every model module must be imported first (importing :mod:`app.container` does that)."""
    found: dict[Table, list[Column[bytes]]] = {}
    for table in metadata.sorted_tables:
        columns = [c for c in table.columns if c.name.endswith(ENCRYPTED_SUFFIX)]
        if columns:
            found[table] = columns
    return found


def _tenant_column(table: Table) -> Column[uuid.UUID]:
    """The column naming a row's coach: ``coach_id``, or ``id`` of ``coaches`` itself. Raises ``ValueError``
    for a table with secrets that belongs to no coach (none exists: every secret is a tenant's)."""
    if "coach_id" in table.c:
        return table.c.coach_id
    if table.name == "coaches":
        return table.c.id
    raise ValueError(f"table {table.name} stores encrypted secrets but has no coach_id")


async def _rotate_tenant(
    session: AsyncSession,
    coach_id: uuid.UUID,
    box: SecretBox,
    tables: dict[Table, list[Column[bytes]]],
    report: RotationReport,
) -> int:
    """Re-encrypt ``coach_id``'s secrets in ``tables`` in the session's transaction; returns how many."""
    count = 0
    for table, columns in tables.items():
        rows = await session.execute(select(table.c.id, *columns).where(_tenant_column(table) == coach_id))
        for row in rows:
            changes: dict[str, bytes] = {}
            for column in columns:
                token = row._mapping[column]
                if token is None:
                    continue
                try:
                    changes[column.name] = box.rotate(token)
                except ValueError:
                    report.undecryptable.append(f"{table.name}.{column.name} {row.id}")
            if changes:
                await session.execute(update(table).where(table.c.id == row.id).values(**changes))
                count += len(changes)
    return count


async def rotate_secrets(engine: AsyncEngine, box: SecretBox, metadata: MetaData) -> RotationReport:
    """Re-encrypt every ``*_encrypted`` value under ``box``'s primary key (``MultiFernet.rotate``), one
    transaction per coach scoped to that tenant (:func:`~app.db.engine.tenant_session`, rows also filtered by
    coach).

    ``engine`` connects as the schema owner (``MIGRATION_DATABASE_URL``): only it may list every coach.
    Idempotent (a value already under the primary key is simply re-encrypted again). A value no configured
    key opens is reported in ``undecryptable`` and left as it is; the other values are still rotated.
    """
    tables = encrypted_columns(metadata)
    coaches = metadata.tables["coaches"]
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        coach_ids = list((await session.scalars(select(coaches.c.id).order_by(coaches.c.created_at))).all())
    report = RotationReport()
    for coach_id in coach_ids:
        async with tenant_session(sessionmaker, coach_id) as session:
            report.rotated[coach_id] = await _rotate_tenant(session, coach_id, box, tables, report)
    return report
