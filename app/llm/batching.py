"""Micro-batching of query embeddings across concurrent chat turns.

Under load many turns embed their one-sentence query at the same moment; each ``embed`` call alone pays the
model's per-call overhead (a thread hop, tokenizer and forward-pass set-up). :class:`EmbeddingBatcher`
sends the calls that arrive while the model is busy as one batch when it is free again, and a call that
finds the model idle at once: batching while busy, as in Clipper's adaptive batching (Crankshaw et al., NSDI
2017) or vLLM's continuous batching, rather than a fixed wait. A fixed window (NVIDIA Triton's
``max_queue_delay_microseconds``, which this replaced) made every turn wait for it, 3 ms, even alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from app.llm.base import Embedder

DEFAULT_MAX_TEXTS = 64
"""The most texts one model call holds (a single call with more texts is sent alone)."""


class EmbeddingBatcher:
    """An :class:`~app.llm.base.Embedder` that coalesces concurrent ``embed`` calls into calls of ``inner``, one
    at a time: a call made while ``inner`` is idle goes out on the event loop's next turn (with the calls made in
    the same turn); the calls made while it is busy wait and go out together, at most ``max_texts`` texts a
    batch, as soon as it returns. Vectors come back in the order of each caller's ``texts``; if the inner call
    raises, every caller of that batch gets the same exception (``ProviderError`` from the inner embedder).
    Must be used from one event loop (the process's)."""

    def __init__(self, inner: Embedder, *, max_texts: int = DEFAULT_MAX_TEXTS) -> None:
        self.inner = inner
        self.model = inner.model
        self.dimensions = inner.dimensions
        self.max_input_tokens = inner.max_input_tokens
        self._max_texts = max_texts
        self._pending: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._busy = False
        self._running: set[asyncio.Task[None]] = set()
        self.calls = 0
        """Calls made to ``inner`` so far (for tests and benchmarks)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` → ``len(texts)`` vectors of ``dimensions`` floats, in one batch with the other calls
        pending meanwhile. Raises whatever the inner embedder raises."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        self._pending.append((list(texts), future))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Send the pending calls, up to ``max_texts`` texts (at least one call), as one batch (in a task; the
        callers await their futures); when none is pending, the model is idle."""
        taken = count = 0
        while taken < len(self._pending) and (taken == 0 or count + len(self._pending[taken][0]) <= self._max_texts):
            count += len(self._pending[taken][0])
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        if not batch:
            self._busy = False
            return
        self.calls += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._running.discard)
        task.add_done_callback(lambda _: self._flush())

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
