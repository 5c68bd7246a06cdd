"""``EMBED_THREADS`` caps the local embedder's torch threads for a batch (torch's default when unset: see the
setting); a single text stays on one thread, and building the embedder leaves the process's thread count alone."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_torch_loads_with_passive_openmp_threads_and_leaves_the_environment_as_it_was(preset: str | None) -> None:
    """``load_torch`` sets ``OMP_WAIT_POLICY=PASSIVE`` only around the import (an operator's own value wins and is
    kept), in a fresh interpreter where torch is not loaded yet."""
    probe = (
        "import os, sys\n"
        "import app.llm.local as local\n"
        "seen = []\n"
        "class Finder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch': seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
        "sys.meta_path.insert(0, Finder())\n"
        "local.load_torch()\n"
        "print(seen[0], os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    during, after = out.stdout.split()
    assert during == (preset or "PASSIVE")
    assert after == (preset or "None")
