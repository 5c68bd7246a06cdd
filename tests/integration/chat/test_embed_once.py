"""The turn embeds the client's message once: the crisis screen's MiniLM vector also serves retrieval,
memory recall and few-shot retrieval (app.chat.turn.intake ``_shared_embedding``).

Counted on the process's one all-MiniLM-L6-v2 instance (``ProviderRegistry.local_embedder``), which both the
crisis screen (``encode`` in a worker thread) and retrieval (``embed``) go through.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence

import httpx
import pytest
import respx

from app.chat.turn import TurnResult
from app.container import Container
from app.llm.registry import ProviderRegistry
from tests.integration.handoff.test_handoff_flow import Setup, chat, new_setup
from tests.openai_wire import mock_chat_endpoint

__all__ = ["new_setup"]


@pytest.fixture
def model() -> Iterator[respx.MockRouter]:
    with mock_chat_endpoint(["Let's", " look at your week."], (60, 6)) as router:
        yield router


@pytest.fixture
def encoded(registry: ProviderRegistry, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every batch of texts the local MiniLM embeds during the test."""
    embedder = registry.local_embedder()
    calls: list[list[str]] = []
    original = embedder.encode

    def counting(texts: Sequence[str]) -> list[list[float]]:
        calls.append(list(texts))
        return original(texts)

    monkeypatch.setattr(embedder, "encode", counting)
    return calls


async def test_an_english_message_is_embedded_once_per_turn(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    encoded: list[list[str]],
) -> None:
    setup = await new_setup("Embed Once Coach")
    body = await chat(http, setup, "How can I plan my week better when everything feels urgent?")

    assert model["completions"].call_count == 1 and body["reply"] == "Let's look at your week."
    # on main: two calls, the crisis screen's and retrieval's
    assert encoded == [["how can i plan my week better when everything feels urgent?"]]


async def test_a_message_in_another_language_is_embedded_once_too(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    encoded: list[list[str]],
) -> None:
    """The screen reads no embedding of Spanish text; retrieval still embeds it once."""
    setup = await new_setup("Embed Once Coach")
    await chat(http, setup, "¿Cómo puedo organizar mejor mi semana?")
    assert len(encoded) == 1


async def test_the_shared_vector_is_the_messages_own_embedding(registry: ProviderRegistry) -> None:
    """The screen's normalised window (lower-cased, accents folded) embeds like the message itself: MiniLM's
    tokenizer lower-cases and strips accents too, so retrieval sees the same vector."""
    text = "Café meetings with my Boss make me ANXIOUS before Monday."
    [raw, shared] = registry.local_embedder().encode(
        [text, "cafe meetings with my boss make me anxious before monday."]
    )
    assert sum(a * b for a, b in zip(raw, shared, strict=True)) > 0.999


async def test_the_embedding_starts_while_the_message_is_stored_and_its_turn_takes_it(
    container: Container,
    registry: ProviderRegistry,
    monkeypatch: pytest.MonkeyPatch,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    encoded: list[list[str]],
) -> None:
    """The message is embedded from the moment it is stored (``receive``), before its turn is asked for
    (``answer``), which then takes that vector instead of embedding the message again."""
    embedder = registry.local_embedder()
    counting, started = embedder.encode, threading.Event()

    def signalling(texts: Sequence[str]) -> list[list[float]]:
        started.set()
        return counting(texts)

    monkeypatch.setattr(embedder, "encode", signalling)
    setup = await new_setup("Embed Once Coach")
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    received = await container.chat.receive(
        coach_id, client_id, "What should I do first on a busy Monday?", conversation_id=None, channel="widget"
    )
    assert await asyncio.to_thread(started.wait, 10), "not embedded before its turn was asked for"
    assert encoded == [["what should i do first on a busy monday?"]]

    results = [item async for item in container.chat.answer(coach_id, client_id, received.message_id)]
    assert isinstance(results[-1], TurnResult) and results[-1].message_id is not None
    assert len(encoded) == 1


async def test_no_embedding_starts_at_intake_while_every_turn_slot_is_taken(
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    encoded: list[list[str]],
) -> None:
    """On an overloaded process the turn waits for a slot anyway: its embedding is made when the turn runs,
    once, not at intake (where it could be dropped before the turn came, and made twice)."""
    setup = await new_setup("Embed Once Coach")
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    slots, taken = container.chat._slots, []
    while not slots.locked(coach_id):  # every slot taken, by other coaches
        taken.append(uuid.uuid4())
        await slots.acquire(taken[-1])
    try:
        received = await container.chat.receive(
            coach_id, client_id, "How do I say no to extra work?", conversation_id=None, channel="widget"
        )
        await asyncio.sleep(0.5)
        assert encoded == []
    finally:
        for key in taken:
            slots.release(key)
    results = [item async for item in container.chat.answer(coach_id, client_id, received.message_id)]
    assert isinstance(results[-1], TurnResult) and results[-1].message_id is not None
    assert encoded == [["how do i say no to extra work?"]]
