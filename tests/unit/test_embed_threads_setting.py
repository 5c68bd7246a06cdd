"""The local embedder's torch threads follow ``EMBED_THREADS`` (one by default: see the setting)."""

from __future__ import annotations

import torch

from app.core.config import Settings
from app.llm.local import SentenceTransformerEmbedder


def test_the_local_embedder_sets_torchs_threads() -> None:
    assert Settings(_env_file=None).embed_threads == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        SentenceTransformerEmbedder(threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
