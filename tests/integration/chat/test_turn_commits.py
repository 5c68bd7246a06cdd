"""Which of the turn's transactions wait for the disk: what the client or coach is told is stored commits
synchronously; the intake of a turn the model answers, which writes only the message's episode (derived data,
stored again if the message is answered again), commits asynchronously (:func:`app.db.engine.commit_asynchronously`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import respx
from sqlalchemy import event

from app.chat.turn import TurnResult
from app.container import Container
from tests.integration.handoff.test_handoff_flow import Setup, new_setup
from tests.openai_wire import mock_chat_endpoint

__all__ = ["new_setup"]

ASYNCHRONOUS = "SET LOCAL synchronous_commit TO off"


@pytest.fixture
def model() -> Iterator[respx.MockRouter]:
    with mock_chat_endpoint(["Start with", " one small step."], (60, 6)) as router:
        yield router


@pytest.fixture
def transactions(container: Container) -> Iterator[list[list[str]]]:
    """The statements of every transaction the app's engine commits during the test, one list per
    transaction, in the order they commit."""
    engine = container.engine.sync_engine
    open_: dict[int, list[str]] = {}
    committed: list[list[str]] = []

    def begin(conn: Any) -> None:
        open_[id(conn)] = []

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if id(conn) in open_:
            open_[id(conn)].append(" ".join(sql.split()))

    def commit(conn: Any) -> None:
        committed.append(open_.pop(id(conn), []))

    listeners = [("begin", begin), ("before_cursor_execute", statement), ("commit", commit)]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    yield committed
    for name, listener in listeners:
        event.remove(engine, name, listener)


async def _turn(container: Container, setup: Setup, text: str) -> TurnResult:
    """One turn through the chat service (the served app's own engine is not this test's to watch)."""
    turn = container.chat.turn(
        uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id), text, conversation_id=None, channel="api"
    )
    [result] = [item async for item in turn if isinstance(item, TurnResult)]
    return result


def _writing(transactions: list[list[str]], prefix: str) -> list[list[str]]:
    return [t for t in transactions if any(s.startswith(prefix) for s in t)]


async def test_only_the_intake_of_a_model_answered_turn_commits_asynchronously(
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    transactions: list[list[str]],
) -> None:
    setup = await new_setup("Commit Coach")
    transactions.clear()
    result = await _turn(container, setup, "How do I keep going when a week of work feels like too much?")
    assert result.reply == "Start with one small step." and model["completions"].call_count == 1

    [intake] = _writing(transactions, "INSERT INTO episodes")
    assert ASYNCHRONOUS in intake
    # the client's message (receive) and the reply (persist): both stored durably before the client hears back
    stored = _writing(transactions, "INSERT INTO messages")
    assert len(stored) == 2 and all(ASYNCHRONOUS not in t for t in stored)
    assert sum(ASYNCHRONOUS in t for t in transactions) == 1


async def test_a_crisis_reply_stored_at_intake_commits_synchronously(
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    transactions: list[list[str]],
) -> None:
    """The crisis protocol stores its reply and the handoff in the intake's transaction: the client is told
    the coach was alerted, so that transaction waits for the disk."""
    setup = await new_setup("Commit Coach")
    transactions.clear()
    result = await _turn(container, setup, "I want to kill myself tonight, I have the pills ready.")
    assert result.handoff is not None and result.handoff["reason"] == "crisis"
    assert model["completions"].call_count == 0

    [intake] = _writing(transactions, "INSERT INTO handoffs")
    assert any(s.startswith("INSERT INTO messages") for s in intake)
    assert not any(ASYNCHRONOUS in t for t in transactions)
