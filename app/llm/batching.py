"""Micro-batching of query embeddings across concurrent chat turns.

Under load many turns embed their one-sentence query at the same moment; each ``embed`` call alone pays the
model's per-call overhead (a thread hop, tokenizer and forward-pass set-up). :class:`EmbeddingBatcher`
collects the calls that arrive within ``window_seconds`` of the first one and sends them to the wrapped
embedder as one batch, then hands each caller its own vectors. The technique is the "dynamic batching" of
model servers (e.g. NVIDIA Triton's ``max_queue_delay_microseconds``), applied in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from app.llm.base import Embedder

DEFAULT_WINDOW_SECONDS = 0.003
"""How long the first call of a batch waits for others (3 ms: small next to a turn, long enough to gather
the turns that arrive together)."""
DEFAULT_MAX_TEXTS = 64
"""A batch is sent at once when it holds this many texts, without waiting for the window to end."""


class EmbeddingBatcher:
    """An :class:`~app.llm.base.Embedder` that coalesces concurrent ``embed`` calls into one call of ``inner``.

    ``window_seconds``: the wait after the first pending call before the batch is sent; ``max_texts``: a batch
    this large is sent at once. Vectors come back in the order of each caller's ``texts``; if the inner call
    raises, every caller of that batch gets the same exception (``ProviderError`` from the inner embedder).
    Must be used from one event loop (the process's)."""

    def __init__(
        self,
        inner: Embedder,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_texts: int = DEFAULT_MAX_TEXTS,
    ) -> None:
        self.inner = inner
        self.model = inner.model
        self.dimensions = inner.dimensions
        self.max_input_tokens = inner.max_input_tokens
        self._window = window_seconds
        self._max_texts = max_texts
        self._pending: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._pending_texts = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.calls = 0
        """Calls made to ``inner`` so far (for tests and benchmarks)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` → ``len(texts)`` vectors of ``dimensions`` floats, in one batch with the other calls
        made within the window. Raises whatever the inner embedder raises."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        self._pending.append((list(texts), future))
        self._pending_texts += len(texts)
        if self._pending_texts >= self._max_texts:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._flush)
        return await future

    def _flush(self) -> None:
        """Send the pending calls as one batch (in a task; the callers await their futures)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending, self._pending_texts = self._pending, [], 0
        if batch:
            self.calls += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._running.discard)

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
