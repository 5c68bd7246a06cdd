"""The local embedder encodes one text (a turn's query) on one torch thread and a batch on the process's
default number (app.llm.local.SentenceTransformerEmbedder)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from app.llm.local import SentenceTransformerEmbedder


def test_one_text_uses_one_torch_thread_and_a_batch_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    default = torch.get_num_threads()
    if default < 2:
        pytest.skip("torch runs one thread on this machine: nothing to tell apart")
    embedder = SentenceTransformerEmbedder()
    seen: list[int] = []
    original = embedder._st.encode

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(embedder._st, "encode", recording)
    try:
        [query] = embedder.encode(["How do I stop worrying?"])
        batch = embedder.encode(["How do I stop worrying?", "Start with one small step."])
    finally:
        torch.set_num_threads(default)

    assert seen == [1, default]
    assert len(query) == 384 and abs(sum(a * b for a, b in zip(query, batch[0], strict=True)) - 1) < 1e-4
