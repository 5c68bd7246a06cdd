"""Extraction of an untrusted upload in a child process with memory, CPU and wall-clock limits.

A hostile PDF (a decompression bomb, a page tree of a billion pages, a parser-exhausting content stream)
must cost a bounded amount and end as a clear ``ExtractionError``, whatever the installed pypdf does about
it. Each extraction runs in a fresh process (a one-process ``concurrent.futures.ProcessPoolExecutor`` on the
``spawn`` start method, shut down after its one task, so no state of the worker is inherited and nothing of
one file outlives it), which limits itself before reading the file:

- ``RLIMIT_AS`` = the child's address space once started + ``memory_mb``: an allocation past it raises
  ``MemoryError`` (reported as such). The start-up size counts apart because ``spawn`` re-imports the parent's
  ``__main__`` module in the child: about 70 MB under ``opencoach worker``, but 500 MB under a script that
  imports the whole app (a benchmark), which a flat limit would leave with nothing to read with;
- ``RLIMIT_CPU``: a soft limit of ``cpu_seconds`` for opening the file, raised by ``cpu_seconds_per_page``
  per page once the page count is known (bounded by the page cap); the kernel's ``SIGXCPU`` at the soft
  limit ends the extraction with a reason, and its ``SIGKILL`` a few seconds later at the hard limit is the
  backstop for code that does not return to the interpreter;
- a wall-clock deadline of ``wall_seconds`` enforced by the parent, which kills the child.

Progress (pages done, page total) travels through a shared ``multiprocessing`` array; the pages themselves
travel as they are read, a batch at a time, through a one-way pipe as JSON (never pickles: the parent
trusts nothing the child sends and checks each batch's shape), so the caller can chunk and embed the first
pages while the child reads the next ones. See ``setrlimit(2)`` for the limits' semantics on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import resource
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from app.rag.extract import (
    Caps,
    ExtractedText,
    ExtractionError,
    Page,
    PageSink,
    TitleSink,
    extract_pages,
    open_advice,
)

if TYPE_CHECKING:
    from app.core.config import Settings

POLL_S = 0.1
"""How often the parent looks at the child's progress and the deadline."""
HARD_CPU_GRACE_S = 5
"""CPU seconds between the soft limit (a reason) and the hard one (``SIGKILL``)."""

_DONE, _TOTAL = range(2)


@dataclass(frozen=True)
class ExtractionLimits:
    """What one extraction may use: ``memory_mb`` MB of address space, ``cpu_seconds`` CPU seconds plus
    ``cpu_seconds_per_page`` per page, ``wall_seconds`` of wall-clock time, and the content ``caps``."""

    memory_mb: int = 512
    cpu_seconds: int = 30
    cpu_seconds_per_page: float = 0.5
    wall_seconds: float = 600.0
    caps: Caps = Caps()

    @classmethod
    def from_settings(cls, settings: Settings) -> ExtractionLimits:
        """The limits the ``EXTRACT_*`` settings give."""
        return cls(
            memory_mb=settings.extract_memory_mb,
            cpu_seconds=settings.extract_cpu_seconds,
            cpu_seconds_per_page=settings.extract_cpu_seconds_per_page,
            wall_seconds=settings.extract_timeout_seconds,
            caps=Caps(settings.extract_max_pages, settings.extract_max_characters),
        )

    def cpu_budget(self, pages: int) -> int:
        """CPU seconds allowed for a file of ``pages`` pages (``pages`` is clamped to the page cap)."""
        return self.cpu_seconds + math.ceil(min(pages, self.caps.max_pages) * self.cpu_seconds_per_page)


class _CpuExhausted(BaseException):
    """Raised in the child by ``SIGXCPU``; a ``BaseException`` so that no ``except Exception`` in a parser
    swallows it."""


_child: dict[str, Any] = {}
"""The child's limits, shared progress array and page pipe, set by :func:`_start_child`."""


def _on_sigxcpu(signum: int, frame: FrameType | None) -> None:
    raise _CpuExhausted


def _start_child(limits: ExtractionLimits, progress: Any, pages_out: Any = None) -> None:
    """Executor initializer (in the child): apply the memory and CPU limits."""
    _child.update(limits=limits, progress=progress, pages_out=pages_out, cpu_budget=limits.cpu_seconds)
    memory = _address_space_bytes() + limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    hard = limits.cpu_budget(limits.caps.max_pages) + HARD_CPU_GRACE_S
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, hard))
    signal.signal(signal.SIGXCPU, _on_sigxcpu)


def _address_space_bytes() -> int:
    """This process's virtual address space (bytes), what ``RLIMIT_AS`` limits: ``/proc/self/statm``'s size."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _on_child_page(done: int, total: int) -> None:
    """Progress callback in the child; once the page count is known, the CPU budget grows with it."""
    limits: ExtractionLimits = _child["limits"]
    progress = _child["progress"]
    if done == 0:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        _child["cpu_budget"] = min(limits.cpu_budget(total), hard)
        resource.setrlimit(resource.RLIMIT_CPU, (_child["cpu_budget"], hard))
    progress[_TOTAL], progress[_DONE] = total, done


def _send_pages(pages: list[Page]) -> None:
    """Page sink in the child: one JSON message ``[[number, text, locator], …]`` down the pipe."""
    _child["pages_out"].send_bytes(json.dumps([[p.number, p.text, p.locator] for p in pages]).encode())


def _send_title(title: str | None) -> None:
    """Title sink in the child: one JSON message ``{"title": title}`` down the pipe, before the first pages."""
    _child["pages_out"].send_bytes(json.dumps({"title": title}).encode())


def _extract_in_child(data: bytes, kind: str) -> str | None:
    """The executor task: extract ``data`` under the limits, sending its pages down the page pipe; returns
    the metadata title. Limit breaches become reasons."""
    limits: ExtractionLimits = _child["limits"]
    try:
        return extract_pages(
            data, kind, on_page=_on_child_page, caps=limits.caps, sink=_send_pages, on_title=_send_title
        ).title
    except MemoryError:
        reason = f"reading the file needed more than {limits.memory_mb} MB of memory (it may be a decompression bomb)"
    except _CpuExhausted:
        # (the kernel moves the soft limit on by a second at each SIGXCPU: report the budget that was set)
        reason = (
            f"reading the file took more than {_child['cpu_budget']} s of CPU (it may be built to exhaust the reader)"
        )
    # raised outside the except clause, so the failed parse's frames (and their memory) are already freed
    raise ExtractionError(f"{reason}; {open_advice(kind)}")


def child_limits() -> dict[str, int]:
    """Executor task for tests and diagnostics: the limits in force in the child (bytes, CPU seconds);
    ``memory_bytes`` is the address space the child may still add (its limit minus its size now)."""
    return {
        "memory_bytes": resource.getrlimit(resource.RLIMIT_AS)[0] - _address_space_bytes(),
        "cpu_seconds": resource.getrlimit(resource.RLIMIT_CPU)[0],
        "cpu_hard_seconds": resource.getrlimit(resource.RLIMIT_CPU)[1],
    }


async def run_isolated(
    limits: ExtractionLimits,
    task: Callable[..., Any],
    *args: Any,
    on_page: Callable[[int, int], None] | None = None,
    sink: PageSink | None = None,
    on_title: TitleSink | None = None,
    kind: str = "",
) -> Any:
    """Run the picklable ``task(*args)`` in a fresh limited child; returns its result.

    ``on_page(done, total)`` is called in the parent when the child reports progress, ``sink(pages)`` with
    each batch of pages the child sends (in order, all of them before this returns), ``on_title(title)`` with
    the title the child sends ahead of its pages; ``kind`` (of
    :mod:`app.rag.extract`) is the file's, which the reasons name (:func:`~app.rag.extract.open_advice`).
    Raises what the task raises (pickled back), or ``ExtractionError`` when the child overran the wall deadline
    (it is killed), died (the kernel's hard CPU limit, an out-of-memory kill) or sent a malformed batch.
    Cancelling the caller kills the child.
    """
    context = multiprocessing.get_context("spawn")
    progress = context.Array("q", 2, lock=False)
    pages_in, pages_out = context.Pipe(duplex=False)
    # (not max_tasks_per_child=1: Python 3.11's executor then spawns a replacement child after the task)
    executor = ProcessPoolExecutor(
        1, mp_context=context, initializer=_start_child, initargs=(limits, progress, pages_out)
    )
    finished = False
    future: asyncio.Future[Any] | None = None
    try:
        future = asyncio.wrap_future(executor.submit(task, *args))
        deadline = asyncio.get_running_loop().time() + limits.wall_seconds
        reported = (-1, -1)
        while True:
            done, _ = await asyncio.wait({future}, timeout=POLL_S)
            _receive_pages(pages_in, limits.caps, sink, kind, on_title)
            if on_page is not None and (progress[_DONE], progress[_TOTAL]) != reported:
                reported = (progress[_DONE], progress[_TOTAL])
                on_page(*reported)
            if done:
                finished = True
                return future.result()
            if asyncio.get_running_loop().time() > deadline:
                took = f"reading the file took longer than {limits.wall_seconds:g} s"
                raise ExtractionError(f"{took}; {open_advice(kind)}")
    except BrokenProcessPool as exc:
        raise ExtractionError(
            f"the reader was stopped for exceeding its limits ({limits.memory_mb} MB of memory, "
            f"{limits.cpu_budget(progress[_TOTAL])} s of CPU); {open_advice(kind)}"
        ) from exc
    finally:
        if not finished:
            _kill_workers(executor)
            if future is not None:  # the child killed here breaks the pool: that error is ours, not one to log
                future.add_done_callback(_outcome_read)
        # off the event loop: the child exits (or its death is noticed) within a moment
        await asyncio.shield(asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True))
        pages_in.close()
        pages_out.close()


def _outcome_read(future: asyncio.Future[Any]) -> None:
    """Read a finished future's outcome, so that asyncio does not log "Future exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


def _receive_pages(
    pages_in: Any, caps: Caps, sink: PageSink | None, kind: str, on_title: TitleSink | None = None
) -> None:
    """Hand every batch waiting in the pipe to ``sink`` (dropped without one), and a title message
    (``{"title": str | null}``) to ``on_title``. A batch is at most the character cap as JSON (6 bytes a
    character at worst) plus room for page numbers and locators. Raises ``ExtractionError`` for a message that is
    too long or neither a title nor ``[[int | null, str, str | null], …]`` (its reason names the file's ``kind``)."""
    malformed = f"the reader sent malformed pages; {open_advice(kind)}"
    while pages_in.poll():
        try:
            raw = pages_in.recv_bytes(caps.max_characters * 6 + 64 * caps.max_pages + 1024)
            batch = json.loads(raw)
        except (OSError, ValueError) as exc:  # (OSError: over the length; ValueError: not JSON)
            raise ExtractionError(malformed) from exc
        except EOFError:
            return
        if isinstance(batch, dict) and batch.keys() == {"title"} and isinstance(batch["title"], str | None):
            if on_title is not None:
                on_title(batch["title"])
            continue
        if not isinstance(batch, list) or not all(_is_page(item) for item in batch):
            raise ExtractionError(malformed)
        if sink is not None:
            sink([Page(number, text, locator) for number, text, locator in batch])


def _is_page(item: object) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 3  # noqa: PLR2004 - [number, text, locator]
        and (item[0] is None or (isinstance(item[0], int) and not isinstance(item[0], bool)))
        and isinstance(item[1], str)
        and (item[2] is None or isinstance(item[2], str))
    )


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    """SIGKILL the executor's child, wherever it is (starting, reading, stuck in C). Python 3.14 has this as
    ``ProcessPoolExecutor.kill_workers()``; before it, the executor's own ``_processes`` map is the way."""
    for process in list((executor._processes or {}).values()):  # noqa: SLF001 - see the docstring
        with contextlib.suppress(ProcessLookupError, ValueError):
            process.kill()


async def extract_isolated(
    data: bytes,
    kind: str,
    limits: ExtractionLimits,
    *,
    on_page: Callable[[int, int], None] | None = None,
    sink: PageSink | None = None,
    on_title: TitleSink | None = None,
) -> ExtractedText:
    """:func:`app.rag.extract.extract_pages` of ``data`` in a limited child (see the module docstring).

    With a ``sink``, each batch of pages goes to it as soon as the child has read it (the result's
    ``pages`` is then empty); without one, the result holds every page. ``on_title`` gets the file's title
    before its first batch. Raises ``ExtractionError`` with a
    reason for the coach for every unusable or hostile file (possibly after some batches were sunk)."""
    pages: list[Page] = []
    title: str | None = await run_isolated(
        limits, _extract_in_child, data, kind, on_page=on_page, sink=sink or pages.extend, on_title=on_title, kind=kind
    )
    return ExtractedText(pages, title)
