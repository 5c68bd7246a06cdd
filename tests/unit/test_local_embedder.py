"""The local embedder: all-MiniLM-L6-v2 as an ONNX graph on ONNX Runtime gives sentence-transformers' vectors
(the reference, on torch), the graph is exported once per cache directory, ``EMBED_THREADS`` sets its
intra-op threads, and torch (the exporter) loads with passive OpenMP threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from app.core.config import Settings
from app.llm.local import MiniLMEmbedder, minilm_onnx, minilm_path

TEXTS = [
    "hi",
    "How do I stay calm when my boss criticises my work in front of others?",
    "Ünïcode àccents, an emoji 🙂 and — punctuation!",
    "word " * 400,  # over the 256 word pieces: truncated
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory of this module's own, so the export is part of what is tested."""
    return tmp_path_factory.mktemp("onnx-cache")


def test_the_onnx_graph_gives_sentence_transformers_vectors_and_token_counts(cache: Path) -> None:
    """Batches mixing short, long (truncated) and non-ASCII texts, split across model calls (batch size 3):
    every vector within 1e-5 of sentence-transformers on torch, unit length, and the same token counts."""
    embedder = MiniLMEmbedder(batch_size=3, cache_dir=cache)
    reference = SentenceTransformer(str(minilm_path()), device="cpu")
    texts = TEXTS * 2
    ours = np.array(embedder.encode(texts))
    theirs = reference.encode(texts, normalize_embeddings=True)

    assert ours.shape == (len(texts), 384)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert embedder.max_input_tokens == reference.max_seq_length == 256
    assert [embedder.count_tokens(t) for t in TEXTS] == [len(reference.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert embedder.encode([]) == []


def test_texts_go_to_the_model_sorted_by_length_so_short_ones_are_not_padded_to_long_ones(cache: Path) -> None:
    """Two model calls of two texts each: the two short texts together (3 word pieces wide), then the two long
    ones; each text's vector is the one it gets alone, in the caller's order."""
    embedder = MiniLMEmbedder(batch_size=2, cache_dir=cache)
    shapes: list[tuple[int, ...]] = []
    session = embedder._session

    class Recording:
        def run(self, names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            shapes.append(feed["input_ids"].shape)
            return session.run(names, feed)

    texts = ["word " * 100, "hi", "word " * 50, "ok"]
    alone = [embedder.encode([text])[0] for text in texts]
    embedder._session = Recording()  # type: ignore[assignment]
    together = embedder.encode(texts)

    assert shapes == [(2, 3), (2, 102)]
    assert np.abs(np.array(together) - np.array(alone)).max() < 1e-5


def test_the_graph_is_exported_once_per_cache_directory(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second process (here: a second call) finds the exported graph and does not export again; no
    temporary file is left behind."""
    first = minilm_onnx(cache)

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    assert minilm_onnx(cache) == first
    assert [p.name for p in cache.iterdir()] == [first.name]
    assert MiniLMEmbedder(cache_dir=cache).encode(["still works"])


def test_a_failed_export_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that fails (disk full, killed) leaves neither a graph nor its temporary file, so the next
    process exports again instead of loading half a graph."""

    def failing(model: object, args: object, f: str, **kwargs: object) -> None:
        Path(f).write_bytes(b"half a graph")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch.onnx, "export", failing)
    with pytest.raises(OSError, match="No space left"):
        minilm_onnx(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("threads", "expected"), [(2, 2), (None, os.cpu_count())])
def test_embed_threads_sets_the_intra_op_threads_which_do_not_spin(
    cache: Path, threads: int | None, expected: int
) -> None:
    assert Settings(_env_file=None).embed_threads is None  # one per core
    embedder = MiniLMEmbedder(threads=threads, cache_dir=cache)
    options = embedder._session.get_session_options()
    assert options.intra_op_num_threads == expected
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


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
