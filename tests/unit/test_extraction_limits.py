"""Extraction in a limited child process (:mod:`app.rag.isolation`): the limits are in force, each breach
ends as a reason for the coach, the page and character caps hold, and no child outlives its extraction."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from app.core.config import Settings
from app.rag.extract import PDF, TEXT, VTT, Caps, ExtractionError, Page
from app.rag.isolation import (
    HARD_CPU_GRACE_S,
    ExtractionLimits,
    _receive_pages,
    child_limits,
    extract_isolated,
    run_isolated,
)
from tests.hostile_files import CORPUS, flate_bomb, text_pdf


def _extraction_children() -> list[psutil.Process]:
    """Live spawn children of this process (the resource tracker, also spawned, is not one)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _deaf_c_loop() -> bytes:
    """Minutes of CPU inside one C call that never returns to the interpreter, so no Python signal handler
    runs there (only the hard limit's SIGKILL ends it)."""
    return hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 10**9)


async def test_the_default_limits_are_in_force_in_the_child() -> None:
    limits = ExtractionLimits.from_settings(Settings(_env_file=None))
    assert (limits.memory_mb, limits.cpu_seconds, limits.caps) == (512, 30, Caps(2000, 5_000_000))
    seen = await run_isolated(limits, child_limits)
    assert 500 * 1024 * 1024 <= seen.pop("memory_bytes") <= 512 * 1024 * 1024  # (what the child has used since)
    assert seen == {"cpu_seconds": 30, "cpu_hard_seconds": 30 + 1000 + HARD_CPU_GRACE_S}


HEAVY_MAIN = """
import asyncio, mmap, sys
BALLAST = mmap.mmap(-1, 600 * 1024 * 1024)  # the address space of a __main__ that imports a lot (never touched)
from app.rag.extract import PDF
from app.rag.isolation import ExtractionLimits, extract_isolated, run_isolated


def allocate() -> int:
    return len(bytearray(200 * 1024 * 1024))


if __name__ == "__main__":
    print(asyncio.run(run_isolated(ExtractionLimits(), allocate)) // (1024 * 1024))
    print(len(asyncio.run(extract_isolated(open(sys.argv[1], "rb").read(), PDF, ExtractionLimits())).pages))
"""


def test_a_child_whose_main_module_is_big_still_has_its_memory_to_read_with(tmp_path: Path) -> None:
    """``spawn`` re-imports the parent's ``__main__`` in the child (600 MB of address space here): the memory
    limit counts from the child's size once started, so the child can still allocate 200 MB and read an
    honest PDF (a flat 512 MB limit left it nothing: every allocation failed, 'needed more than 512 MB')."""
    script, pdf = tmp_path / "heavy_main.py", tmp_path / "honest.pdf"
    script.write_text(HEAVY_MAIN)
    pdf.write_bytes(text_pdf(3))
    run = subprocess.run(
        [sys.executable, str(script), str(pdf)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["200", "3"]


async def test_an_honest_pdf_is_read_in_the_child_with_progress() -> None:
    progress: list[tuple[int, int]] = []
    extracted = await extract_isolated(
        text_pdf(3), PDF, ExtractionLimits(), on_page=lambda done, total: progress.append((done, total))
    )
    assert [p.number for p in extracted.pages] == [1, 2, 3]
    assert "Hostile but polite text." in extracted.pages[2].text
    assert progress[-1] == (3, 3)


async def test_the_child_streams_pages_to_a_sink_before_it_finishes() -> None:
    """Pages come through the pipe in batches of eight as the child reads them, in order, each once."""
    batches: list[list[Page]] = []
    extracted = await extract_isolated(text_pdf(40), PDF, ExtractionLimits(), sink=batches.append)
    assert extracted.pages == []
    assert [p.number for batch in batches for p in batch] == list(range(1, 41))
    assert len(batches) == 5 and "Hostile but polite text." in batches[4][7].text


async def test_a_transcripts_timestamps_come_through_the_pipe() -> None:
    """Each speaker turn's start time (``Page.locator``) survives the child → parent batches."""
    vtt = b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v Ann>One.\n\n00:01:05.000 --> 00:01:06.000\n<v Ben>Two.\n"
    batches: list[list[Page]] = []
    await extract_isolated(vtt, VTT, ExtractionLimits(), sink=batches.append)
    assert [p.locator for batch in batches for p in batch] == ["00:00:01", "00:01:05"]


@pytest.mark.parametrize(
    "message",
    [
        b"not json",
        b'{"pages": 1}',
        b"[[1, 2, null]]",
        b'[["1", "text", null]]',
        b'[[true, "text", null]]',
        b"[[1]]",
        b'[[1, "text"]]',
        b'[[null, "text", 5]]',
    ],
)
def test_a_malformed_batch_from_the_child_is_refused(message: bytes) -> None:
    """The parent trusts nothing from the reader: a batch not of ``[[int | null, str, str | null], …]`` is an
    error."""
    pages_in, pages_out = multiprocessing.Pipe(duplex=False)
    pages_out.send_bytes(message)
    with pytest.raises(ExtractionError, match="malformed pages; check that the EPUB opens in an e-book reader"):
        _receive_pages(pages_in, Caps(), lambda pages: None, "epub")


def test_a_batch_over_the_character_cap_is_refused() -> None:
    pages_in, pages_out = multiprocessing.Pipe(duplex=False)
    ended: list[str] = []

    def send() -> None:  # a thread: the length and the text are two writes, and the second may come late
        try:
            pages_out.send_bytes(b'[[1, "' + b"a" * 20_000 + b'", null]]')
            ended.append("sent")
        except BrokenPipeError:  # the text came after the parent had refused the batch and closed its end
            ended.append("broken pipe")

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    assert pages_in.poll(10)  # the message is in the pipe
    with pytest.raises(ExtractionError, match="malformed pages"):
        _receive_pages(pages_in, Caps(max_pages=1, max_characters=1000), lambda pages: None, PDF)
    pages_in.close()
    sender.join(10)
    assert len(ended) == 1  # the sender is done either way (its error no longer surfaces in a later test)


@pytest.mark.parametrize(
    ("data", "kind", "caps", "reason"),
    [
        (text_pdf(60), PDF, Caps(max_pages=50), "the PDF has 60 pages, over the 50-page limit"),
        (b"word " * 400, TEXT, Caps(max_characters=1500), "more than 1,500 characters of text"),
        (text_pdf(80), PDF, Caps(max_characters=1000), "more than 1,000 characters of text"),
    ],
)
async def test_page_and_character_caps(data: bytes, kind: str, caps: Caps, reason: str) -> None:
    with pytest.raises(ExtractionError, match=re.escape(reason)):
        await extract_isolated(data, kind, ExtractionLimits(caps=caps))


async def test_a_bomb_past_the_memory_limit_fails_with_the_reason() -> None:
    with pytest.raises(ExtractionError, match="more than 256 MB of memory"):
        await extract_isolated(flate_bomb(), PDF, ExtractionLimits(memory_mb=256))


async def test_a_file_past_the_cpu_limit_fails_with_the_reason() -> None:
    limits = ExtractionLimits(memory_mb=2048, cpu_seconds=2, cpu_seconds_per_page=0)
    with pytest.raises(ExtractionError, match="more than 2 s of CPU"):
        await extract_isolated(flate_bomb(), PDF, limits)


async def test_code_deaf_to_sigxcpu_is_killed_at_the_hard_limit() -> None:
    limits = ExtractionLimits(cpu_seconds=1, cpu_seconds_per_page=0, caps=Caps(max_pages=1))
    with pytest.raises(ExtractionError, match="stopped for exceeding its limits"):
        await run_isolated(limits, _deaf_c_loop)


async def test_the_wall_deadline_kills_the_child() -> None:
    started = time.monotonic()
    with pytest.raises(ExtractionError, match="took longer than 1 s"):
        await run_isolated(ExtractionLimits(wall_seconds=1), time.sleep, 60)
    assert time.monotonic() - started < 15
    await asyncio.sleep(0.5)
    assert _extraction_children() == []


async def test_cancelling_the_extraction_kills_the_child() -> None:
    """And logs nothing: the killed child's broken pool was logged as "Future exception was never retrieved" when
    a document was deleted while it was read (found by a privacy run)."""
    logged: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: logged.append(context))
    task = asyncio.create_task(run_isolated(ExtractionLimits(), time.sleep, 60))
    for _ in range(100):
        await asyncio.sleep(0.1)
        if _extraction_children():
            break
    assert _extraction_children(), "the child started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    assert _extraction_children() == []
    gc.collect()
    await asyncio.sleep(0.1)
    assert [context["message"] for context in logged] == []


async def test_every_hostile_file_fails_with_a_reason_under_the_default_limits() -> None:
    """The corpus of :mod:`tests.hostile_files` under the default limits (512 MB, 30 s of CPU)."""
    limits = ExtractionLimits.from_settings(Settings(_env_file=None))
    for hostile in CORPUS:
        started = time.monotonic()
        with pytest.raises(ExtractionError) as failure:
            await extract_isolated(hostile.make(), PDF, limits)
        assert re.search(hostile.reason, str(failure.value)), (hostile.name, str(failure.value))
        assert time.monotonic() - started < 60, hostile.name
