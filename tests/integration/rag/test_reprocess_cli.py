"""``opencoach documents reprocess``: the operator's "Process again" over a library after an upgrade that reads
files better. The session's database is shared with every other test, so each run names its coach (``--coach``):
a run over every coach would process the other tests' documents again."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.container import Container
from app.core.runtime import Services
from app.db.outbox import relay
from app.rag.extract import ExtractionError
from app.rag.pipeline import IngestRun
from tests.conftest import TEST_MAX_UPLOAD_MB, Coach, upload


def reprocess_cli(
    services: Services, tmp_path: Path, *args: str, owner_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``opencoach documents reprocess`` on the test run's servers, as the schema owner (as ``rotate-secret``) or
    the role of ``owner_url``."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL")},
        "MIGRATION_DATABASE_URL": owner_url or services.migration_database_url,
        "DATABASE_URL": services.database_url,
        "REDIS_URL": services.redis_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "documents", "reprocess", "--data-dir", str(tmp_path / "d"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_every_document_of_a_library_is_processed_again_once_and_skips_are_explained(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    services: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ready documents (and with ``--failed`` the failed ones) that finished before ``--before`` are queued
    to be processed again, each replacing its original once ready (a failed one is processed again itself); one
    already being processed again, or whose file was not kept (over the upload limit), is skipped with the reason;
    another coach's library is left alone; a second run skips what the first did."""
    coach, other = await make_coach("Library Coach"), await make_coach("Other Library")
    h = coach.headers
    habits = await upload(http, coach, "habits.txt", b"Small habits, repeated daily, compound.\n" * 30)
    sleep = await upload(http, coach, "sleep.txt", b"Sleep at the same hour every night.\n" * 30)
    under_way = await upload(http, coach, "walks.txt", b"A walk after lunch clears the head.\n" * 30)
    theirs = await upload(http, other, "theirs.txt", b"Another coach's notes on focus.\n" * 30)
    await run_jobs()

    async def broken(self: IngestRun, *args: object, **kwargs: object) -> None:
        raise ExtractionError("the reader broke")

    with monkeypatch.context() as patched:
        patched.setattr(IngestRun, "run", broken)
        failed = await upload(http, coach, "plan.txt", b"A plan for the week: one walk a day.\n" * 10)
        their_failed = await upload(http, other, "plan.txt", b"A plan for the week: one walk a day.\n" * 10)
        await run_jobs()
    huge = await upload(http, coach, "huge.txt", b"a" * int((TEST_MAX_UPLOAD_MB + 0.5) * 1024 * 1024))
    finished = datetime.now(UTC)
    copy = await http.post(f"/api/v1/documents/{under_way['id']}/reprocess", headers=h)
    assert copy.status_code == 202, copy.text

    nothing = reprocess_cli(services, tmp_path, "--coach", coach.coach_id, "--before", "2020-01-01")
    assert nothing.returncode == 0, nothing.stderr
    assert "0 queued, 0 skipped" in nothing.stdout

    done = reprocess_cli(services, tmp_path, "--coach", coach.coach_id, "--before", finished.isoformat(), "--failed")
    assert done.returncode == 0, done.stderr
    assert "3 queued, 2 skipped" in done.stdout, done.stdout
    assert "“Walks” is being processed again already" in done.stdout, done.stdout
    assert "“Huge” was not kept (over the upload limit)" in done.stdout, done.stdout

    again = reprocess_cli(services, tmp_path, "--coach", coach.coach_id, "--before", finished.isoformat())
    assert "0 queued, 3 skipped" in again.stdout, again.stdout

    await relay(container.sessionmaker, container.redis)
    await run_jobs()
    listed = (await http.get("/api/v1/documents", headers=h)).json()
    ready = [d for d in listed if d["status"] == "ready"]
    originals = {habits["id"], sleep["id"], under_way["id"], None}
    assert {d["replaces_id"] for d in ready} == originals, "each original replaced by its copy, once"
    assert failed["id"] in {d["id"] for d in ready} and len(ready) == 4, "the failed one processed again itself"
    assert [d["id"] for d in listed if d["status"] != "ready"] == [huge["id"]]
    # run again with the cut-off printed first: the copies finished after it, nothing is processed twice
    assert f"finished before {finished.isoformat()} (--before)" in done.stdout
    resumed = reprocess_cli(services, tmp_path, "--coach", coach.coach_id, "--before", finished.isoformat())
    assert "0 queued, 0 skipped" in resumed.stdout, resumed.stdout
    # another coach's failed copy of the same file is theirs (the owner's role is not bound by row-level security)
    theirs_now = (await http.get("/api/v1/documents", headers=other.headers)).json()
    assert [(d["id"], d["status"]) for d in theirs_now] == [(their_failed["id"], "failed"), (theirs["id"], "ready")]


def test_a_wrong_coach_role_or_time_is_a_clear_error(services: Services, tmp_path: Path) -> None:
    """An unknown or malformed coach id, a ``--before`` in the future (the copies would be processed again on the
    next run) and the app's role instead of the owner's (under row-level security it sees no coach, and would
    report nothing done as a success) each stop the command with one line saying why."""
    started = datetime.now(UTC)
    unknown = reprocess_cli(services, tmp_path, "--coach", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "no coach has the id" in unknown.stderr
    cut_off = datetime.fromisoformat(unknown.stdout.split("finished before ")[1].split(" (--before)")[0])
    assert started < cut_off < datetime.now(UTC), "the default cut-off is the run's start, printed first"
    malformed = reprocess_cli(services, tmp_path, "--coach", "nope")
    assert malformed.returncode == 2 and "not a coach id (a UUID): 'nope'" in malformed.stderr
    future = reprocess_cli(services, tmp_path, "--before", "2999-01-01")
    assert future.returncode == 2 and "is in the future" in future.stderr
    app_role = reprocess_cli(services, tmp_path, owner_url=services.database_url)
    assert app_role.returncode == 1 and "is not the schema's owner" in app_role.stderr, app_role.stderr
    assert all("Traceback" not in run.stderr for run in (unknown, malformed, future, app_role))
