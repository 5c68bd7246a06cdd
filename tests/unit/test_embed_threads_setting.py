"""``EMBED_THREADS`` caps the local embedder's torch threads for a batch (torch's default when unset: see the
setting); a single text stays on one thread, and building the embedder leaves the process's thread count alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from app.core.config import Settings
from app.llm.local import SentenceTransformerEmbedder


def test_embed_threads_caps_a_batch_and_one_text_stays_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).embed_threads is None  # torch's default: one per core
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        embedder = SentenceTransformerEmbedder(threads=2)
        assert torch.get_num_threads() == 3
        seen: list[int] = []
        original = embedder._st.encode

        def recording(*args: Any, **kwargs: Any) -> Any:
            seen.append(torch.get_num_threads())
            return original(*args, **kwargs)

        monkeypatch.setattr(embedder._st, "encode", recording)
        embedder.encode(["How do I stop worrying?", "Start with one small step."])
        embedder.encode(["How do I stop worrying?"])
    finally:
        torch.set_num_threads(before)

    assert seen == [2, 1]
