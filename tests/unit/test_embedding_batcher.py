"""Query embeddings are micro-batched: ``embed`` calls made while the model is busy become one model call
(:class:`app.llm.batching.EmbeddingBatcher`), and the chat turn embeds its query through the batcher. The
provider registry's model lookups never block the event loop while a model loads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pytest import MonkeyPatch

from app.llm.base import ProviderError
from app.llm.batching import EmbeddingBatcher

if TYPE_CHECKING:
    from app.llm.registry import ProviderRegistry

T = TypeVar("T")


class FakeEmbedder:
    """Vector ``[len(text), index]`` per text; records each batch it is called with."""

    model = "fake"
    dimensions = 2
    max_input_tokens = 256

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        await asyncio.sleep(0)
        if self.fail:
            raise ProviderError("model down")
        return [[float(len(text)), float(i)] for i, text in enumerate(texts)]


class SlowEmbedder(FakeEmbedder):
    """A :class:`FakeEmbedder` whose calls wait for ``release`` (a model call that takes a while)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        await self.release.wait()
        return [[float(len(text)), float(i)] for i, text in enumerate(texts)]


async def test_calls_made_together_become_one_model_call_and_each_caller_gets_its_own_vectors() -> None:
    inner = FakeEmbedder()
    batcher = EmbeddingBatcher(inner)
    texts = [["a"], ["bb", "ccc"], ["dddd"]]
    results = await asyncio.gather(*(batcher.embed(t) for t in texts))
    assert inner.batches == [["a", "bb", "ccc", "dddd"]]
    assert batcher.calls == 1
    assert results == [[[1.0, 0.0]], [[2.0, 1.0], [3.0, 2.0]], [[4.0, 3.0]]]


async def test_a_call_to_an_idle_model_goes_out_at_once() -> None:
    """No window to wait for: the call reaches the model on the event loop's next turn."""
    inner = SlowEmbedder()
    batcher = EmbeddingBatcher(inner)
    call = asyncio.create_task(batcher.embed(["one"]))
    for _ in range(3):
        await asyncio.sleep(0)
    assert inner.batches == [["one"]]
    inner.release.set()
    assert await call == [[3.0, 0.0]]
    assert await batcher.embed(["three"]) == [[5.0, 0.0]]
    assert inner.batches == [["one"], ["three"]]


async def test_calls_made_while_the_model_is_busy_go_out_together_when_it_returns() -> None:
    inner = SlowEmbedder()
    batcher = EmbeddingBatcher(inner, max_texts=3)
    first = asyncio.create_task(batcher.embed(["first"]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.embed([str(n)])) for n in range(4)]
    await asyncio.sleep(0.01)
    assert inner.batches == [["first"]]  # one model call at a time
    inner.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, *waiting), 5)
    # the waiting calls in two batches of at most max_texts, in the order they came
    assert inner.batches == [["first"], ["0", "1", "2"], ["3"]]
    assert [vectors[0] for vectors in results] == [[5.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 0.0]]
    assert batcher.calls == 3


async def test_an_error_reaches_every_caller_of_the_batch_and_the_next_call_goes_out() -> None:
    inner = FakeEmbedder(fail=True)
    batcher = EmbeddingBatcher(inner)
    results = await asyncio.gather(batcher.embed(["x"]), batcher.embed(["y"]), return_exceptions=True)
    assert all(isinstance(r, ProviderError) for r in results)
    inner.fail = False
    assert await asyncio.wait_for(batcher.embed(["zz"]), 5) == [[2.0, 0.0]]


async def test_no_texts_make_no_call() -> None:
    inner = FakeEmbedder()
    assert await EmbeddingBatcher(inner).embed([]) == []
    assert inner.batches == []


def new_registry() -> ProviderRegistry:
    """A provider registry with nothing loaded yet."""
    from cryptography.fernet import Fernet

    from app.core.config import Settings
    from app.core.security import SecretBox
    from app.llm.registry import ProviderRegistry

    settings = Settings(secret_key=Fernet.generate_key().decode())
    return ProviderRegistry(settings, SecretBox.from_settings(settings))


async def ticks_while(awaitable: Awaitable[T]) -> tuple[T, int]:
    """``awaitable``'s result, and how many times a task ticking every millisecond ran meanwhile (few: the
    event loop stood still)."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    try:
        async with asyncio.timeout(120):
            return await awaitable, ticks
    finally:
        ticker.cancel()


def test_the_chat_turn_embeds_its_query_through_the_processs_batcher() -> None:
    """Local coaches' queries go through one batcher per process; remote embedders are used as they are."""
    from app.accounts.models import Coach

    registry = new_registry()
    local = Coach(name="Local", embedding_provider="local", embedding_model=None)
    batcher = registry.query_embedder_for(local)
    assert isinstance(batcher, EmbeddingBatcher)
    assert batcher.inner is registry.local_embedder()
    assert registry.query_embedder_for(local) is batcher


async def test_a_turns_embedder_lookup_neither_waits_for_the_chat_model_nor_blocks_the_event_loop() -> None:
    """At start-up the warm-up loads SmolLM2 in a thread for seconds (here: its lock is held throughout). A
    turn's lookup of the query embedder must not wait for it, and while MiniLM itself loads, the event loop
    keeps running. Before, every lookup took the registry's one lock on the event loop: the whole process
    (every request, socket and event stream) stood still until both models were loaded."""
    from app.accounts.models import Coach

    registry = new_registry()
    local = Coach(name="Local", embedding_provider="local", embedding_model=None)
    with registry._chat_lock:  # SmolLM2 "loading"
        embedder, ticks = await ticks_while(registry.query_embedder(local))
    assert isinstance(embedder, EmbeddingBatcher)
    assert ticks > 10, "the event loop stood still while the embedder loaded"
    assert await registry.query_embedder(local) is embedder  # loaded: the same batcher, straight away


async def test_a_chat_model_lookup_waits_for_the_models_load_off_the_event_loop() -> None:
    """While another thread loads SmolLM2 (here: holds its lock for 0.5 s, then stores a stand-in), a coach's
    chat model lookup waits in a thread: the event loop keeps running and the lookup returns the loaded model.
    Before, ``chat_for`` took the lock on the event loop, and a job or turn stopped the whole process."""
    from app.accounts.models import Coach

    registry = new_registry()
    loaded = object()
    holding = threading.Event()

    def load() -> None:
        with registry._chat_lock:
            holding.set()
            time.sleep(0.5)
            registry._local_chat = loaded  # type: ignore[assignment]

    loader = threading.Thread(target=load)
    loader.start()
    holding.wait()
    chat, ticks = await ticks_while(registry.chat_for(Coach(name="Local", llm_provider="local")))
    loader.join()
    assert chat is loaded
    assert ticks > 10, "the event loop stood still while the chat model loaded"


async def test_a_coach_on_an_openai_endpoint_looks_up_its_models_without_a_thread(monkeypatch: MonkeyPatch) -> None:
    """Nothing local is loaded (a web process before its warm-up, a benchmark), yet a coach whose chat and
    embedding models are remote needs neither SmolLM2 nor MiniLM: the lookups must not hop to a thread."""
    from app.accounts.models import Coach

    def no_thread(*_: object) -> None:
        raise AssertionError("the lookup waited in a thread")

    registry = new_registry()
    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    coach = Coach(
        name="Remote",
        llm_provider="openai",
        llm_model="gpt-4o-mini",
        llm_base_url="http://127.0.0.1:9/v1",
        embedding_provider="openai",
        embedding_model="text-embedding-3-small",
        embedding_base_url="http://127.0.0.1:9/v1",
    )
    assert (await registry.chat_for(coach)).model == "gpt-4o-mini"
    assert (await registry.chat_for(coach, model="ft:gpt-4o-mini:coach")).model == "ft:gpt-4o-mini:coach"
    assert (await registry.embedder_for(coach)).model == "text-embedding-3-small"
    assert (await registry.query_embedder(coach)).model == "text-embedding-3-small"
    assert registry._local_chat is None and registry._local_embedder is None


async def test_a_coach_s_remote_client_is_made_once_and_its_key_decrypted_once(monkeypatch: MonkeyPatch) -> None:
    """Every chat turn asks for the coach's provider: the SDK client (and its connection pool) is reused, and
    the stored key is decrypted only when the client is made; a changed key (a new ciphertext) makes a new one
    that sends the new key."""
    from app.accounts.models import Coach

    registry = new_registry()
    box = registry._secrets
    coach = Coach(
        name="Remote",
        llm_provider="openai",
        llm_model="gpt-4o-mini",
        llm_base_url="http://127.0.0.1:9/v1",
        llm_api_key_encrypted=box.encrypt("sk-first"),
    )
    decrypted: list[str] = []
    decrypt = box.decrypt

    def counted(token: bytes, **kwargs: Any) -> str:
        decrypted.append(decrypt(token, **kwargs))
        return decrypted[-1]

    monkeypatch.setattr(box, "decrypt", counted)
    first = await registry.chat_for(coach)
    assert all([await registry.chat_for(coach) is first for _ in range(3)])
    assert decrypted == ["sk-first"]
    coach.llm_api_key_encrypted = box.encrypt("sk-second")
    second = await registry.chat_for(coach)
    assert second is not first and decrypted == ["sk-first", "sk-second"]
    assert second._client.api_key == "sk-second"
