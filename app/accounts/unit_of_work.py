"""The tenant unit of work: one transaction of one coach, the coach row loaded once, after-commit hooks.

Every service method that reads or writes tenant data takes a :class:`UnitOfWork` as its first argument
(``method(self, uow, ...)``) instead of a ``coach_id`` and a transaction of its own, so one request (or one
job) is one transaction: all its changes commit together or none does, and the jobs it queued in the outbox
(:mod:`app.db.jobs`) and its after-commit hooks run only after that commit.

Who opens one:

- an HTTP request: the ``uow`` Litestar dependency (:func:`app.deps.provide_unit_of_work`), committed when the
  handler returns, rolled back when it raises;
- a background job, a cron or a CLI command: :func:`unit_of_work` per job (per tenant for a sweep);
- the chat turn and the other places that call a slow external service (a model, a fine-tune provider, a
  webhook) open several short units of work with :func:`unit_of_work`, so no transaction (and pool
  connection) is held while they wait; each such place says so in its docstring.

The transaction primitive (``app.coach_id`` for row-level security, commit, outbox relay, hooks)
is :func:`app.db.engine.tenant_session`; this module lives in ``accounts`` because it adds the tenant's
:class:`~app.accounts.models.Coach`, whose model ``app.db`` must not import.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction, async_sessionmaker

from app.accounts.models import Coach
from app.core.errors import NotFound
from app.db.engine import AfterCommit, after_commit, tenant_session


class UnitOfWork:
    """One tenant transaction: ``session`` (an :class:`AsyncSession` inside a transaction scoped by row-level
    security to ``coach_id``), the tenant's ``Coach`` (:meth:`coach`) and :meth:`after_commit` hooks.

    The coach is loaded lazily, on the first ``await uow.coach()``, then kept for the rest of the unit of
    work: most requests (lists, edits of one row) never read the coach's settings and pay no query for it,
    while a service that calls several others (each asking for the coach) loads it once.
    Build one with :func:`unit_of_work` or the ``uow`` request dependency, not directly.
    """

    __slots__ = ("_coach", "coach_id", "session")

    def __init__(self, session: AsyncSession, coach_id: uuid.UUID) -> None:
        self.session = session
        self.coach_id = coach_id
        self._coach: Coach | None = None

    async def coach(self) -> Coach:
        """The tenant's row, loaded on first use and then returned as is (changes made to it are flushed with
        the transaction). Raises ``NotFound`` when the coach does not exist (deleted meanwhile)."""
        if self._coach is None:
            coach = await self.session.get(Coach, self.coach_id)
            if coach is None:
                raise NotFound("coach not found")
            self._coach = coach
        return self._coach

    def after_commit(self, hook: AfterCommit) -> None:
        """Run ``hook`` (an async callable without arguments) once this unit of work has committed, never on
        rollback; see :func:`app.db.engine.after_commit` (hooks are best-effort; a failing one is logged)."""
        after_commit(self.session, hook)

    def savepoint(self) -> AsyncSessionTransaction:
        """A ``SAVEPOINT`` (``async with uow.savepoint():``): a change that fails inside it is rolled back
        alone and the unit of work goes on, for a form that shows the error and must not store half a change."""
        return self.session.begin_nested()


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession], coach_id: uuid.UUID, *, autocommit: bool = False
) -> AsyncIterator[UnitOfWork]:
    """Open a :class:`UnitOfWork` for ``coach_id``: commit when the block ends (then relay its outbox jobs and
    run its hooks), roll back (no job, no hook) when it raises. For jobs, crons, the CLI and the steps of the
    chat turn; request handlers get theirs from the ``uow`` dependency. ``autocommit=True``: a unit that only
    reads, each statement a transaction of its own (:func:`~app.db.engine.tenant_session`)."""
    async with tenant_session(sessionmaker, coach_id, autocommit=autocommit) as session:
        yield UnitOfWork(session, coach_id)
