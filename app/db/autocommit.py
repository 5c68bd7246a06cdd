"""PostgreSQL's autocommit mode, for work that is one statement or only reads.

In a transaction, a unit of work pays two round trips besides its statements: ``BEGIN`` and ``COMMIT`` (or
``ROLLBACK``). In autocommit mode each statement is a transaction of its own and neither is sent: for one
statement (a credential look-up, the outbox relay's ``DELETE``) that is the same guarantee for less, and for a
unit that only reads rows that need no common snapshot (the chat turn's passages, memory recall and learning
reads) the same answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}
"""Execution options that put a connection in autocommit mode (SQLAlchemy's ``AUTOCOMMIT`` isolation level).
The pool restores the default isolation level when the connection comes back (no round trip with asyncpg, whose
transactions the driver begins itself)."""


@asynccontextmanager
async def autocommit_session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose connection (checked out now, no tenant in scope) is in autocommit mode: each statement
    commits on its own. For one statement, or reads; never for writes that must commit together."""
    async with sessionmaker() as session:
        await session.connection(execution_options=AUTOCOMMIT)
        yield session
