"""For every operation with an id in its path, another coach's id gives 404 and changes nothing (issue 12).

The operations come from ``/schema/openapi.json`` (those added later are covered too). Each ``{x_id}`` path
parameter is aimed at a row of coach A in the table named ``xs`` or ``…_xs`` (``client_id`` → ``clients``,
``session_id`` → ``chat_sessions``); coach B and B's client send a valid request generated
by Schemathesis from the schema (a few per operation: 404 for at least one, 401 only for the other kind of
credential, 400 only for a generated body or query the route refuses before its look-up). A snapshot of A's rows in
every table (as the owner) must be equal before and after. Rows the API cannot make without a model or a
fine-tune (a draft, an insight, an experiment, a model version) are written for A as the owner, so every
operation finds a row of A to aim at; a parameter without one fails the test."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis.errors import NonInteractiveExampleWarning
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

import app.container  # noqa: F401 - every model, so Base.metadata knows every table
from app.conversations.handoffs import Draft
from app.conversations.models import Conversation, Message, SenderType
from app.core.runtime import Services
from app.db.base import Base
from app.db.engine import make_engine
from app.learning.models import Experiment, ModelVersion
from app.llm.base import EMBEDDING_DIMENSIONS
from app.memory.models import Insight
from app.rag.models import Chunk, Document
from tests.conftest import MEDITATIONS, Coach, make_client, upload
from tests.integration.api.conftest import api_operations, api_spec, coach_rows

CASES_PER_OPERATION = 4
PATH_OPERATIONS = [op for op in api_operations() if "{" in op]


def _table_for(parameter: str) -> Table:
    """The table an ``{x_id}`` path parameter points into: ``xs`` or ``…_xs``. Fails the test if none."""
    noun = parameter.removesuffix("_id") + "s"
    for table in Base.metadata.sorted_tables:
        if table.name == noun or table.name.endswith(f"_{noun}"):
            return table
    raise AssertionError(f"no table for path parameter {parameter}")


async def _ids_of(services: Services, table: Table, coach_id: str) -> list[uuid.UUID]:
    owner = make_engine(services.migration_database_url, pool_size=1)
    try:
        async with owner.connect() as conn:
            return list((await conn.scalars(select(table.c.id).where(table.c.coach_id == coach_id))).all())
    finally:
        await owner.dispose()


async def _seed_rows(services: Services, coach_id: str) -> None:
    """As the owner, give coach A the rows the API only makes with a model at work: a pending draft answering
    A's client message, an insight about that client, a running experiment, a staging model version, and a
    chunk of A's document (ingestion needs the worker)."""
    owner = make_engine(services.migration_database_url, pool_size=1)
    try:
        async with AsyncSession(owner) as session, session.begin():
            query = select(Message, Conversation.client_id).join(
                Conversation, Message.conversation_id == Conversation.id
            )
            query = query.where(Message.coach_id == coach_id, Message.sender_type == SenderType.CLIENT).limit(1)
            message, client_id = (await session.execute(query)).one()
            document_id = await session.scalar(select(Document.id).where(Document.coach_id == coach_id).limit(1))
            now = datetime.now(UTC)
            session.add_all(
                [
                    Draft(
                        coach_id=coach_id,
                        conversation_id=message.conversation_id,
                        client_message_id=message.id,
                        text="A draft of coach A",
                    ),
                    Insight(
                        coach_id=coach_id,
                        client_id=client_id,
                        kind="goal",
                        text="Wants to sleep better",
                        source_message_ids=[message.id],
                        first_seen_at=now,
                        last_seen_at=now,
                        embedding=[0.1] * EMBEDDING_DIMENSIONS,
                        embedding_model="test",
                    ),
                    Experiment(
                        coach_id=coach_id,
                        name="Tone",
                        metric="thumbs_up_rate",
                        variants=[{"name": "warm"}, {"name": "direct"}],
                    ),
                    ModelVersion(coach_id=coach_id, model="ft:gpt-4o-mini:a", base_model="gpt-4o-mini"),
                    Chunk(
                        coach_id=coach_id,
                        document_id=document_id,
                        ordinal=0,
                        text="A passage of coach A's book.",
                        heading="",
                        token_count=7,
                        embedding=[0.1] * EMBEDDING_DIMENSIONS,
                    ),
                ]
            )
    finally:
        await owner.dispose()


@pytest.fixture(scope="module")
async def victim(services: Services, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]) -> Coach:
    """Coach A: a document, two clients, a client's chat (conversation, message, chat session, handoff), and
    the rows of :func:`_seed_rows` (draft, insight, experiment, model version, chunk)."""
    coach = await make_coach("Victim")
    await http.patch("/api/v1/settings", headers=coach.headers, json={"handoff_mode": "human_only"})
    await upload(http, coach, MEDITATIONS)
    client = await make_client(http, coach, "A1")
    await make_client(http, coach, "A2")
    widget = {"Authorization": f"Bearer {client['widget_token']}"}
    response = await http.post("/api/v1/chat", headers=widget, json={"text": "I need to talk to my coach"})
    assert response.status_code == 200, response.text
    await _seed_rows(services, coach.coach_id)
    return coach


@pytest.fixture(scope="module")
async def intruders(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]) -> dict[str, dict[str, str]]:
    """Coach B's API key and B's client's widget token."""
    coach = await make_coach("Intruder")
    client = await make_client(http, coach)
    return {"coach": coach.headers, "client": {"Authorization": f"Bearer {client['widget_token']}"}}


def _cases(operation: str, path_ids: dict[str, str]) -> list[Any]:
    """Valid requests for ``operation`` with these path parameters, generated from the schema."""
    method, path = operation.split(" ", 1)
    strategy = schemathesis.openapi.from_dict(api_spec())[path][method].as_strategy(path_parameters=path_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        return [strategy.example() for _ in range(CASES_PER_OPERATION)]


def _body_schema(operation: str) -> dict[str, Any]:
    """The JSON request body's object schema of ``operation`` (the first ``$ref`` of a ``oneOf`` with null
    followed), or ``{}`` when it takes none."""
    method, path = operation.split(" ", 1)
    spec = api_spec()
    schema = spec["paths"][path][method.lower()].get("requestBody", {}).get("content", {})
    schema = schema.get("application/json", {}).get("schema", {})
    schema = next((s for s in schema.get("oneOf", []) if "$ref" in s), schema)
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return dict(schema)


def _known_fields(operation: str, body: Any) -> Any:
    """``body`` without the extra properties Schemathesis adds to objects whose schema does not forbid them
    (msgspec structs refuse unknown fields with a 400, which would hide the 404 under test)."""
    schema = _body_schema(operation)
    if not isinstance(body, dict) or "properties" not in schema:
        return body
    return {key: value for key, value in body.items() if key in schema["properties"]}


def _optional_query(operation: str) -> bool:
    """Whether ``operation`` takes query parameters, none of them required (a page's ``cursor`` and ``limit``)."""
    method, path = operation.split(" ", 1)
    query = [p for p in api_spec()["paths"][path][method.lower()].get("parameters", []) if p["in"] == "query"]
    return bool(query) and not any(p.get("required") for p in query)


@pytest.mark.parametrize("operation", PATH_OPERATIONS)
async def test_another_coachs_id_gives_404_and_changes_nothing(
    operation: str,
    services: Services,
    http: httpx.AsyncClient,
    victim: Coach,
    intruders: dict[str, dict[str, str]],
) -> None:
    path_ids: dict[str, str] = {}
    for parameter in (p.strip("{}") for p in operation.split("/") if p.startswith("{")):
        ids = await _ids_of(services, _table_for(parameter), victim.coach_id)
        assert ids, f"coach A has no {_table_for(parameter).name} row for {parameter}"
        path_ids[parameter] = str(ids[0])
    before = await coach_rows(services, victim.coach_id)
    statuses: set[int] = set()
    cases = _cases(operation, path_ids)
    requests: list[tuple[str, str, dict[str, Any]]] = []
    for case in cases:
        kwargs: dict[str, Any] = {"params": case.query or None}
        if isinstance(case.body, dict | list):
            kwargs["json"] = _known_fields(operation, case.body)
        requests.append((case.method, case.formatted_path, kwargs))
    if _body_schema(operation).get("required") == []:  # every field optional: {} is valid and reaches the look-up
        requests.append((cases[0].method, cases[0].formatted_path, {"json": {}}))  # (random text can all be refused)
    elif _optional_query(operation):  # a random cursor or limit is refused: the request without them is valid
        requests.append((cases[0].method, cases[0].formatted_path, {**requests[0][2], "params": None}))
    for method, path, kwargs in requests:
        answers = {}
        for who, headers in intruders.items():  # B's API key and B's client's widget token
            response = await http.request(method, path, headers=headers, **kwargs)
            answers[who] = response.status_code
            assert "detail" in response.json(), response.text
        where = f"{method} {path} {kwargs}: {answers}"
        # 401: the other kind of credential; 400: a generated body or query the route refuses before its look-up
        assert set(answers.values()) <= {400, 401, 404}, where
        statuses |= set(answers.values())
    assert 404 in statuses, f"{operation}: no request reached the id look-up ({statuses})"
    assert await coach_rows(services, victim.coach_id) == before
