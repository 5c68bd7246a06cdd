"""Picks each coach's chat model and embedder; local models are loaded once per process and shared."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.core.config import Settings
from app.core.egress import EgressGuard
from app.core.security import SecretBox
from app.llm.base import EMBEDDING_DIMENSIONS, ChatMessage, ChatProvider, Embedder, ProviderError
from app.llm.batching import EmbeddingBatcher
from app.llm.local import LOCAL_EMBEDDING_MODEL, LlamaCppChatProvider, MiniLMEmbedder
from app.llm.openai_compat import OpenAIChatProvider, OpenAIEmbedder
from app.llm.rerank import HttpReranker

_Remote = TypeVar("_Remote", OpenAIChatProvider, OpenAIEmbedder)
MAX_REMOTE_CLIENTS = 256
"""SDK clients kept for reuse; the oldest is dropped beyond this (coaches change keys rarely)."""
NO_OPENAI_KEY = "no API key: OpenAI's endpoint (no base URL set) needs the account's key"
"""Why :meth:`ProviderRegistry.probe_chat` sends no test message to OpenAI without a key."""
PROBE_TIMEOUT_S = 15
"""How long :meth:`ProviderRegistry.probe_chat` waits for a coach's model to answer its test message."""


_Looked = TypeVar("_Looked")
_Stored = TypeVar("_Stored")


def embedding_model_name(provider: str, model: str | None) -> str:
    """The name of the model :meth:`ProviderRegistry.embedder` builds for these settings (a coach's
    ``embedding_provider`` and ``embedding_model``), known without loading it: the name stored with each
    vector."""
    return model if provider == "openai" and model else LOCAL_EMBEDDING_MODEL


SWITCH_RETRIES = 2
"""How many times a writer of vectors starts again with the new model after :func:`lock_embedding_model`
found a switch; one more switch fails it (an embedder whose ``model`` differs from the name of the coach's
settings would otherwise loop forever)."""


class EmbedderSwitched(Exception):
    """The coach's embedding model in use is no longer the one a writer of vectors embedded with: a switch
    committed since the writer chose it. Its vectors would not be comparable with the coach's others, nor found
    (queries and recall read the model in use); the writer starts again with the new model, at most
    :data:`SWITCH_RETRIES` times."""


_EMBEDDING_MODEL_LOCKED = (
    select(Coach.embedding_provider, Coach.embedding_model)
    .where(Coach.id == bindparam("coach_id"))
    .with_for_update(read=True, key_share=True)  # FOR KEY SHARE (key_share alone: FOR NO KEY UPDATE)
)
"""Run on every chat turn: built once, with a bound parameter (SQLAlchemy reuses its cache key)."""


async def lock_embedding_model(session: AsyncSession, coach_id: uuid.UUID) -> str | None:
    """The name of the coach's embedding model in use (``None`` when the coach is gone), the coach's row locked
    (``FOR KEY SHARE``) until the transaction ends. A transaction that stores vectors of that model after this
    call cannot miss a switch: the re-embedding job switches with the row locked ``FOR UPDATE``, so it waits
    for this transaction, and its catch-up then finds these vectors. Writers of one coach never wait for each
    other (``KEY SHARE`` locks are compatible) nor for a change of the coach's other settings (a ``NO KEY
    UPDATE``). Take it before locking other rows (the switch locks the coach's row first, then its documents)."""
    row = (await session.execute(_EMBEDDING_MODEL_LOCKED, {"coach_id": coach_id})).one_or_none()
    return None if row is None else embedding_model_name(*row)


async def _off_loop(loading: bool, lookup: Callable[[], _Looked]) -> _Looked:
    """``lookup()`` in a thread while a local model it needs may still be ``loading`` (it blocks for seconds on
    the model's lock), else directly: the event loop keeps serving requests while a model loads, and a lookup
    that needs no local model (a coach on an OpenAI-compatible endpoint) pays no thread hop."""
    return await asyncio.to_thread(lookup) if loading else lookup()


def _remote_chat_model(coach: Coach) -> str | None:
    """The model the coach chats with on its OpenAI-compatible endpoint; ``None``: SmolLM2."""
    return coach.llm_model if coach.llm_provider == "openai" and coach.llm_model else None


def _local_embedding(provider: str, model: str | None) -> bool:
    """Whether these embedding settings mean the offline MiniLM."""
    return embedding_model_name(provider, model) == LOCAL_EMBEDDING_MODEL


class ProviderRegistry:
    """``chat_for(coach)`` / ``embedder_for(coach)``: the coach's OpenAI-compatible endpoint when configured
    (key decrypted only here), else the offline defaults. Remote clients send through ``egress`` (the process's
    :class:`~app.core.egress.EgressGuard`, from ``OUTBOUND_ALLOW``)."""

    def __init__(self, settings: Settings, secrets: SecretBox) -> None:
        self._settings = settings
        self._secrets = secrets
        self.egress = EgressGuard.from_settings(settings)
        # one lock per thing built once, so that a chat turn's lookup never waits behind another model's load
        # (the start-up warm-up loads SmolLM2 for seconds in a thread)
        self._chat_lock = threading.Lock()
        self._embedder_lock = threading.Lock()
        self._remote_lock = threading.Lock()
        self._local_chat: LlamaCppChatProvider | None = None
        self._local_embedder: MiniLMEmbedder | None = None
        self._query_batcher: EmbeddingBatcher | None = None
        self._reranker: HttpReranker | None = None
        self._remote: dict[tuple[str, str, str | None, bytes | None], OpenAIChatProvider | OpenAIEmbedder] = {}

    def local_chat(self) -> LlamaCppChatProvider:
        """The process-wide SmolLM2 instance (loaded on first use)."""
        with self._chat_lock:
            if self._local_chat is None:
                self._local_chat = LlamaCppChatProvider(
                    n_ctx=self._settings.llm_context_tokens, n_threads=self._settings.llm_threads
                )
            return self._local_chat

    def local_embedder(self) -> MiniLMEmbedder:
        """The process-wide all-MiniLM-L6-v2 instance (loaded on first use)."""
        with self._embedder_lock:
            if self._local_embedder is None:
                self._local_embedder = MiniLMEmbedder(threads=self._settings.embed_threads)
            return self._local_embedder

    def local_query_embedder(self) -> EmbeddingBatcher:
        """The local embedder behind the process's :class:`~app.llm.batching.EmbeddingBatcher`: chat turns embed
        their query through it, so concurrent turns share one model call (ingestion's large batches do not)."""
        local = self.local_embedder()
        with self._embedder_lock:
            if self._query_batcher is None:
                self._query_batcher = EmbeddingBatcher(local)
            return self._query_batcher

    async def query_embedder(self, coach: Coach) -> Embedder:
        """The embedder for one chat turn's query: :meth:`embedder_for`'s, batched across turns when local."""
        loading = self._query_batcher is None and _local_embedding(coach.embedding_provider, coach.embedding_model)
        return await _off_loop(loading, lambda: self.query_embedder_for(coach))

    def query_embedder_for(self, coach: Coach) -> Embedder:
        """:meth:`query_embedder`, blocking while the offline embedder loads (for a thread, not the event loop)."""
        embedder = self._embedder_for(coach)
        return self.local_query_embedder() if embedder is self._local_embedder else embedder

    def warm_up(self) -> None:
        """Load the offline models now (blocking, seconds) so the first chat turn does not pay for it."""
        self.local_query_embedder()
        self.local_chat()

    def reranker(self) -> HttpReranker | None:
        """The operator's reranker (``RERANK_BASE_URL``), or ``None`` when none is configured (the default)."""
        if not self._settings.rerank_base_url:
            return None
        if self._reranker is None:
            self._reranker = HttpReranker(
                self._settings.rerank_base_url,
                self._settings.rerank_model,
                self._settings.rerank_api_key,
                self.egress,
            )
        return self._reranker

    def decrypt_key(self, encrypted: bytes | None) -> str | None:
        """Decrypt a stored provider key (``None`` when none is set). Raises ``ValueError`` when no configured
        key opens it."""
        return self._secrets.decrypt(encrypted) if encrypted else None

    def _provider_key(self, encrypted: bytes | None) -> str | None:
        """:meth:`decrypt_key` for a provider call: a key no configured key opens (``SECRET_KEY`` changed
        without ``SECRET_KEY_OLD``) fails the call as the provider would, with ``ProviderError``."""
        try:
            return self.decrypt_key(encrypted)
        except ValueError as exc:
            raise ProviderError(f"the coach's provider API key cannot be used: {exc}; enter it again") from exc

    def _cached(self, key: tuple[str, str, str | None, bytes | None], build: Callable[[], _Remote]) -> _Remote:
        """Reuse one SDK client (and its connection pool) per endpoint, model and stored (encrypted) key;
        ``key[0]`` names the kind, so a key always maps to what ``build`` makes. ``build`` decrypts the key:
        only a new client pays for it (Fernet, about 0.1 ms of CPU, several times per chat turn before)."""
        with self._remote_lock:
            if key not in self._remote:
                if len(self._remote) >= MAX_REMOTE_CLIENTS:
                    self._remote.pop(next(iter(self._remote)))
                self._remote[key] = build()
            return cast(_Remote, self._remote[key])

    async def chat_for(self, coach: Coach, *, model: str | None = None) -> ChatProvider:
        """The coach's chat provider; ``model`` overrides the coach's model name on its OpenAI-compatible
        endpoint (a fine-tuned model version, an experiment's variant) and is ignored for the local model.
        Never blocks the event loop: while SmolLM2 loads (seconds), the lookup waits in a thread."""
        loading = self._local_chat is None and _remote_chat_model(coach) is None
        return await _off_loop(loading, lambda: self._chat_for(coach, model))

    async def probe_chat(self, coach: Coach) -> str | None:
        """Why the coach's OpenAI-compatible chat model did not answer a one-token test message ("Hello",
        ``max_tokens`` 1) within :data:`PROBE_TIMEOUT_S` seconds: the ``ProviderError``'s message (never the
        endpoint's own words: :func:`~app.llm.openai_compat.describe_error`); ``None`` when it answered, and for
        the offline model (nothing to reach); :data:`NO_OPENAI_KEY`, without a request, for OpenAI's own endpoint (no
        base URL) with no key. Costs the coach one request to their endpoint."""
        if _remote_chat_model(coach) is None:
            return None
        if not coach.llm_base_url and coach.llm_api_key_encrypted is None:  # (no request: OpenAI refuses it)
            return NO_OPENAI_KEY
        hello = [ChatMessage(role="user", content="Hello")]
        try:
            provider = self._chat_for(coach, None)
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                async for _ in provider.stream(hello, max_tokens=1, temperature=0):
                    pass
        except ProviderError as exc:
            return str(exc)
        except TimeoutError:
            return f"TimeoutError: the endpoint did not answer within {PROBE_TIMEOUT_S} s"
        return None

    def _chat_for(self, coach: Coach, model: str | None) -> ChatProvider:
        remote = _remote_chat_model(coach)
        if remote is not None:
            model, base_url, encrypted = model or remote, coach.llm_base_url, coach.llm_api_key_encrypted
            return self._cached(
                ("chat", model, base_url, encrypted),
                lambda: OpenAIChatProvider(
                    model=model,
                    api_key=self._provider_key(encrypted),
                    base_url=base_url,
                    timeout=self._settings.llm_timeout_seconds,
                    deadline=self._settings.llm_deadline_seconds,
                    egress=self.egress,
                ),
            )
        return self.local_chat()

    async def embedder_for(self, coach: Coach) -> Embedder:
        """The coach's embedder *in use* (the one its stored vectors were made with); vectors always have
        ``EMBEDDING_DIMENSIONS`` floats. Never blocks the event loop: while MiniLM loads, the lookup waits in a
        thread."""
        loading = self._local_embedder is None and _local_embedding(coach.embedding_provider, coach.embedding_model)
        return await _off_loop(loading, lambda: self._embedder_for(coach))

    def _embedder_for(self, coach: Coach) -> Embedder:
        return self.embedder(
            coach.embedding_provider, coach.embedding_model, coach.embedding_base_url, coach.embedding_api_key_encrypted
        )

    async def requested_embedder(self, coach: Coach) -> Embedder:
        """The embedder the coach asked to switch to (``embedding_requested_*``), which the re-embedding job
        uses until it switches; the one in use when nothing is requested. Loads like :meth:`embedder_for`."""
        if coach.embedding_requested_provider is None:
            return await self.embedder_for(coach)
        return await _off_loop(
            self._local_embedder is None
            and _local_embedding(coach.embedding_requested_provider, coach.embedding_requested_model),
            lambda: self.embedder(
                coach.embedding_requested_provider or "",
                coach.embedding_requested_model,
                coach.embedding_requested_base_url,
                coach.embedding_requested_api_key_encrypted,
            ),
        )

    async def store_embedded(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        coach_id: uuid.UUID,
        embedder: Embedder,
        texts: Sequence[str],
        store: Callable[[UnitOfWork, list[list[float]], str], Awaitable[_Stored]],
        *,
        vectors: list[list[float]] | None = None,
    ) -> _Stored:
        """Embed ``texts`` with ``embedder`` outside any transaction (or take ``vectors``, their embedding by it,
        already computed), then return ``await store(uow, vectors, model)`` inside one unit of work in which
        ``model``, the vectors' model, is the coach's embedding model in use, locked until it commits
        (:func:`lock_embedding_model`). When the coach switched models meanwhile, the texts are embedded again
        with its new embedder, at most :data:`SWITCH_RETRIES` times; then raises :class:`EmbedderSwitched`.
        The jobs that write vectors (episodes, session summaries, insights, interventions) store through it:
        without the check, a vector stored after the switch's catch-up kept the old model for good. Raises
        ``NotFound`` when the coach is gone and what ``embed`` raises (``ProviderError``)."""
        for attempt in range(1 + SWITCH_RETRIES):
            if vectors is None:
                vectors = await embedder.embed(texts)
            async with unit_of_work(sessionmaker, coach_id) as uow:
                in_use = await lock_embedding_model(uow.session, coach_id)
                if in_use == embedder.model:
                    return await store(uow, vectors, embedder.model)
                coach = await uow.coach()
            if attempt < SWITCH_RETRIES:
                embedder, vectors = await self.embedder_for(coach), None
        raise EmbedderSwitched(f"the embedding model in use is now {in_use}, not {embedder.model}")

    def embedder(
        self, provider: str, model: str | None, base_url: str | None, api_key_encrypted: bytes | None
    ) -> Embedder:
        """An OpenAI-compatible embedder (``/v1/embeddings`` at ``base_url`` with ``dimensions`` =
        ``EMBEDDING_DIMENSIONS``) when ``provider`` is ``"openai"`` and ``model`` is set, else the offline
        all-MiniLM-L6-v2."""
        if provider == "openai" and model:  # the rule of embedding_model_name
            return self._cached(
                ("embedding", model, base_url, api_key_encrypted),
                lambda: OpenAIEmbedder(
                    model=model,
                    api_key=self._provider_key(api_key_encrypted),
                    base_url=base_url,
                    dimensions=EMBEDDING_DIMENSIONS,
                    timeout=self._settings.llm_timeout_seconds,
                    deadline=self._settings.llm_deadline_seconds,
                    egress=self.egress,
                ),
            )
        return self.local_embedder()
