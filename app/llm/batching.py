"""Micro-batching of query embeddings across concurrent chat turns.

Under load many turns embed their one-sentence query at the same moment; each ``embed`` call alone pays the
model's per-call overhead (a thread hop, tokenizer and forward-pass set-up). :class:`EmbeddingBatcher` sends
the wrapped embedder one batch at a time: a call that finds it idle goes out on the event loop's next turn
(with the calls made in the same turn), and the calls that arrive while a batch runs wait for it and go out
together as the next one. This is the "dynamic batching" of model servers, with the queue-while-busy policy of
Hugging Face's text-embeddings-inference rather than a fixed wait (Triton's ``max_queue_delay_microseconds``):
a lone turn waits for nothing, and under load the batch grows with the model's own latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from app.llm.base import Embedder

DEFAULT_MAX_TEXTS = 64
"""Texts per batch at most; calls beyond it wait for the next batch (a call is never split)."""


class EmbeddingBatcher:
    """An :class:`~app.llm.base.Embedder` that coalesces concurrent ``embed`` calls into calls of ``inner``, one
    at a time (see the module docstring).

    ``max_texts``: texts per batch at most (a single call larger than that is sent alone). Vectors come back in
    the order of each caller's ``texts``; if the inner call raises, every caller of that batch gets the same
    exception (``ProviderError`` from the inner embedder). Must be used from one event loop (the process's)."""

    def __init__(self, inner: Embedder, *, max_texts: int = DEFAULT_MAX_TEXTS) -> None:
        self.inner = inner
        self.model = inner.model
        self.dimensions = inner.dimensions
        self.max_input_tokens = inner.max_input_tokens
        self._max_texts = max_texts
        self._pending: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0
        """Calls made to ``inner`` so far (for tests and benchmarks)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` → ``len(texts)`` vectors of ``dimensions`` floats, in one batch with the other calls
        waiting at the time. Raises whatever the inner embedder raises."""
        if not texts:
            return []
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(texts), future))
        if self._sender is None:  # idle: start sending on the loop's next turn
            self._sender = asyncio.get_running_loop().create_task(self._send())
        return await future

    async def _send(self) -> None:
        """Send the waiting calls, one batch after another, until none is left."""
        try:
            await asyncio.sleep(0)  # the calls made in the same turn of the loop join the first batch
            while self._pending:
                batch: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= self._max_texts):
                    texts, future = self._pending.pop(0)
                    batch.append((texts, future))
                    size += len(texts)
                self.calls += 1
                await self._run(batch)
        finally:
            self._sender = None

    async def _run(self, batch: list[tuple[list[str], asyncio.Future[list[list[float]]]]]) -> None:
        try:
            vectors = await self.inner.embed([text for texts, _ in batch for text in texts])
        except Exception as exc:  # every caller of the batch sees the inner embedder's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for texts, future in batch:
            if not future.done():  # a cancelled caller gives up its vectors
                future.set_result(vectors[start : start + len(texts)])
            start += len(texts)
