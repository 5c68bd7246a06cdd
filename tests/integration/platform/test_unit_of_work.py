"""The tenant unit of work on real PostgreSQL and Redis: the ``uow`` request dependency commits what a handler
wrote when it returns (then relays its outbox jobs and runs its after-commit hooks) and, when the handler
raises, keeps nothing (no row, no job, no hook); the coach is loaded once per unit of work."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from app import worker
from app.accounts.models import Client, Coach
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.asgi import domain_error_handler
from app.container import Container
from app.core.errors import DomainError, InvalidInput
from app.core.runtime import Services, serve_in_background
from app.db import engine as engine_module
from app.db.autocommit import autocommit_session
from app.db.engine import make_engine, make_sessionmaker
from app.db.outbox import OutboxJob, add_job
from app.deps import Uow, provide_unit_of_work

JOB = "uow_test_job"
"""A job name no worker knows: only queued, never run."""
HOOKS: list[str] = []


@post("/write/{name:str}")
async def write(name: FromPath[str], fail: FromQuery[bool], uow: Uow) -> dict[str, str]:
    """Create a client, queue a job and an after-commit hook; then raise when ``fail``."""
    client = Client(
        coach_id=uow.coach_id, name=name, widget_token_hash=uuid.uuid4().hex * 2, widget_token_encrypted=b"x"
    )
    uow.session.add(client)
    await uow.session.flush()
    job = add_job(uow.session, uow.coach_id, JOB, name, job_id=f"{JOB}:{name}")

    async def hook() -> None:
        HOOKS.append(name)

    uow.after_commit(hook)
    if fail:
        raise InvalidInput("refused after writing")
    return {"client_id": str(client.id), "job_id": job.job_id}


@pytest.fixture
async def coach_id(container: Container) -> uuid.UUID:
    result = await container.accounts.signup("UoW Coach", f"{uuid.uuid4().hex[:12]}@example.com", "long enough pw")
    return result.coach_id


@pytest.fixture
async def other_coach_id(container: Container) -> uuid.UUID:
    result = await container.accounts.signup("Other Coach", f"{uuid.uuid4().hex[:12]}@example.com", "long enough pw")
    return result.coach_id


@pytest.fixture
async def client(container: Container, coach_id: uuid.UUID) -> AsyncIterator[httpx.AsyncClient]:
    """A small app with one handler on the real ``uow`` dependency (``coach_id`` comes from a test layer),
    served by uvicorn in the test's event loop (the container's connection pool belongs to it)."""
    app = Litestar(
        [write],
        dependencies={
            "container": Provide(lambda: container, sync_to_thread=False),
            "coach_id": Provide(lambda: coach_id, sync_to_thread=False),
            "uow": Provide(provide_unit_of_work),
        },
        exception_handlers={DomainError: domain_error_handler},
    )
    async with serve_in_background(app) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


async def clients_named(container: Container, coach_id: uuid.UUID, name: str) -> list[Client]:
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        return list((await uow.session.scalars(select(Client).where(Client.name == name))).all())


async def outbox_rows(container: Container, name: str) -> list[OutboxJob]:
    async with container.sessionmaker() as session:
        return list((await session.scalars(select(OutboxJob).where(OutboxJob.job_id == f"{JOB}:{name}"))).all())


async def test_the_request_unit_of_work_commits_when_the_handler_returns(
    client: httpx.AsyncClient, container: Container, coach_id: uuid.UUID
) -> None:
    name = f"kept-{uuid.uuid4().hex[:8]}"
    response = await client.post(f"/write/{name}", params={"fail": "false"})
    assert response.status_code == 201, response.text
    assert [str(c.id) for c in await clients_named(container, coach_id, name)] == [response.json()["client_id"]]
    assert HOOKS[-1] == name
    # the job was relayed to arq after the commit: arq knows the job, and its row goes once sent
    assert await container.redis.exists(f"arq:job:{JOB}:{name}") == 1
    await container.outbox.drain()
    assert await outbox_rows(container, name) == []


async def test_a_handler_that_raises_keeps_nothing(
    client: httpx.AsyncClient, container: Container, coach_id: uuid.UUID
) -> None:
    name = f"dropped-{uuid.uuid4().hex[:8]}"
    hooks_before = list(HOOKS)
    response = await client.post(f"/write/{name}", params={"fail": "true"})
    assert response.status_code == 400
    assert response.json()["detail"] == "refused after writing"
    assert await clients_named(container, coach_id, name) == []
    assert hooks_before == HOOKS  # the after-commit hook never ran
    assert await outbox_rows(container, name) == []
    assert await container.redis.exists(f"arq:job:{JOB}:{name}") == 0


@pytest.fixture
def coach_queries(container: Container) -> Iterator[list[str]]:
    """The SQL statements that read the ``coaches`` table, as the engine sends them."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM coaches" in statement:
            seen.append(statement)

    event.listen(container.engine.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(container.engine.sync_engine, "before_cursor_execute", record)


async def test_the_coach_is_loaded_once_per_unit_of_work(
    container: Container, coach_id: uuid.UUID, coach_queries: list[str]
) -> None:
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        assert coach_queries == []  # lazily: nothing read before it is asked for
        first = await uow.coach()
        second = await uow.coach()
        assert first is second and first.id == coach_id and first.name == "UoW Coach"
    assert len(coach_queries) == 1
    async with unit_of_work(container.sessionmaker, coach_id) as again:
        assert (await again.coach()).id == coach_id
    assert len(coach_queries) == 2  # a new unit of work reads it afresh


async def test_a_missing_coach_is_not_found(container: Container) -> None:
    async with unit_of_work(container.sessionmaker, uuid.uuid4()) as uow:
        assert isinstance(uow, UnitOfWork)
        with pytest.raises(DomainError, match="coach not found"):
            await uow.coach()


async def test_a_job_runs_in_one_unit_of_work_of_its_tenant(
    container: Container, coach_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's ``refresh_training_data`` job opens one unit of work for the job's coach and hands it to the
    service (which no longer opens a transaction of its own)."""
    opened: list[UnitOfWork] = []

    @contextlib.asynccontextmanager
    async def spy(sessionmaker: Any, tenant: uuid.UUID) -> AsyncIterator[UnitOfWork]:
        async with unit_of_work(sessionmaker, tenant) as uow:
            opened.append(uow)
            yield uow

    monkeypatch.setattr(worker, "unit_of_work", spy)
    result = await worker.refresh_training_data({"container": container}, str(coach_id), str(uuid.uuid4()))
    assert result == "conversation gone"
    assert [uow.coach_id for uow in opened] == [coach_id]


async def test_a_connection_is_scoped_to_the_tenant_that_checked_it_out_and_to_no_other(
    coach_id: uuid.UUID, services: Services
) -> None:
    """``app.coach_id`` is set by the pool's checkout (the liveness round trip): the unit of work's connection
    shows its coach; the same connection checked out again afterwards (a pool of one), and a session opened
    outside a unit of work while it runs, show no coach and no coach's rows."""
    engine = make_engine(services.database_url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    scope = text("SELECT current_setting('app.coach_id', true)")
    try:
        async with unit_of_work(sessionmaker, coach_id) as uow:
            assert await uow.session.scalar(scope) == str(coach_id)
            assert list((await uow.session.scalars(select(Coach.id))).all()) == [coach_id]
            backend = await uow.session.scalar(text("SELECT pg_backend_pid()"))
        async with sessionmaker() as after:
            assert await after.scalar(text("SELECT pg_backend_pid()")) == backend  # the same connection
            assert await after.scalar(scope) == ""
            assert list((await after.scalars(select(Coach.id))).all()) == []
        async with unit_of_work(sessionmaker, coach_id) as uow, sessionmaker() as outside:
            assert list((await uow.session.scalars(select(Coach.id))).all()) == [coach_id]
            assert await outside.scalar(scope) == ""
            assert list((await outside.scalars(select(Coach.id))).all()) == []
    finally:
        await engine.dispose()


async def test_a_connection_back_a_moment_ago_for_the_same_tenant_skips_the_checkout_round_trip(
    coach_id: uuid.UUID, other_coach_id: uuid.UUID, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkout's ``set_config`` is left out for a connection returned less than ``ALIVE_BYPASS_S`` ago
    already scoped to the same tenant; it is sent again for another tenant (which then sees only its own rows)
    and once the window has passed."""
    engine = make_engine(services.database_url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    sent: list[str] = []
    try:
        async with engine.connect() as conn:  # the pool's one connection, with a query logger
            raw = (await conn.get_raw_connection()).driver_connection
            raw.add_query_logger(lambda record: sent.append(record.query))

        async def checkouts_for(coach: uuid.UUID) -> int:
            before = len(sent)
            async with unit_of_work(sessionmaker, coach) as uow:
                assert list((await uow.session.scalars(select(Coach.id))).all()) == [coach]
            return sum("set_config('app.coach_id'" in query for query in sent[before:])

        assert await checkouts_for(coach_id) == 1
        assert await checkouts_for(coach_id) == 0  # the same tenant, a moment later
        assert await checkouts_for(other_coach_id) == 1
        monkeypatch.setattr(engine_module, "ALIVE_BYPASS_S", 0.0)
        assert await checkouts_for(other_coach_id) == 1  # the window has passed
    finally:
        await engine.dispose()


async def test_an_autocommit_unit_runs_each_statement_alone_and_stays_scoped(
    coach_id: uuid.UUID, services: Services
) -> None:
    """An ``autocommit`` unit of work sends no ``BEGIN``: each statement is a transaction of its own (a new
    transaction id each time), where a plain unit's statements share one.
    It still sees its coach's rows only, and its connection (a pool of one) is transactional again in the next
    unit of work."""
    engine = make_engine(services.database_url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    transaction_id = text("SELECT txid_current()")
    try:
        async with unit_of_work(sessionmaker, coach_id, autocommit=True) as uow:
            assert await uow.session.scalar(transaction_id) != await uow.session.scalar(transaction_id)
            assert list((await uow.session.scalars(select(Coach.id))).all()) == [coach_id]
            backend = await uow.session.scalar(text("SELECT pg_backend_pid()"))
        async with unit_of_work(sessionmaker, coach_id) as uow:
            assert await uow.session.scalar(text("SELECT pg_backend_pid()")) == backend  # the same connection
            assert await uow.session.scalar(transaction_id) == await uow.session.scalar(transaction_id)
        async with sessionmaker() as outside:
            assert list((await outside.scalars(select(Coach.id))).all()) == []
    finally:
        await engine.dispose()


async def test_an_autocommit_session_commits_each_statement_and_holds_no_tenant(
    coach_id: uuid.UUID, services: Services
) -> None:
    """``autocommit_session`` (credential look-ups, the outbox relay's ``DELETE``): a new transaction per
    statement, no tenant in scope, and a write there is committed by its own statement (another session sees
    it before the first one ends)."""
    engine = make_engine(services.database_url, pool_size=2)
    sessionmaker = make_sessionmaker(engine)
    transaction_id = text("SELECT txid_current()")
    try:
        async with autocommit_session(sessionmaker) as session:
            assert await session.scalar(transaction_id) != await session.scalar(transaction_id)
            assert list((await session.scalars(select(Coach.id))).all()) == []
            row = add_job(session, coach_id, "autocommit_probe", "one")
            await session.flush()
            async with sessionmaker() as other:
                assert await other.scalar(select(OutboxJob.id).where(OutboxJob.id == row.id)) == row.id
            await session.delete(row)
            await session.flush()
    finally:
        await engine.dispose()


async def test_a_tenant_unit_of_work_on_an_engine_made_elsewhere_is_refused(
    coach_id: uuid.UUID, services: Services
) -> None:
    """Only ``make_engine``'s engines scope their connections at checkout; on another engine the unit of work would
    run with no tenant (row-level security would show nothing), so it is refused before any statement."""
    engine = create_async_engine(services.database_url)
    try:
        with pytest.raises(RuntimeError, match="make_engine"):
            async with unit_of_work(make_sessionmaker(engine), coach_id):
                pytest.fail("the unit of work started")
    finally:
        await engine.dispose()
