"""Adding an outbox job checks its arguments at the call, not at the flush far from the cause."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import AFTER_COMMIT_KEY, after_commit, discard_after_commit
from app.db.outbox import OutboxHealth, add_job, pending_rows


def test_args_are_stored_as_json_and_the_row_is_remembered_for_the_relay() -> None:
    session = AsyncSession()
    coach_id = uuid.uuid4()
    row = add_job(session, coach_id, "job", str(coach_id), 3, True, None, ["a"], {"k": 1.5})
    assert row.args == [str(coach_id), 3, True, None, ["a"], {"k": 1.5}]
    assert row.job_id == f"job:outbox:{row.id}" and row.attempts == 0
    assert pending_rows(session) == [row]
    assert pending_rows(session) == []  # taken once


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((uuid.uuid4(),), {}, TypeError, "ids as strings"),
        ((datetime.now(UTC),), {}, TypeError, "JSON values"),
        ((float("nan"),), {}, TypeError, "JSON values"),
        ((), {"defer_until": datetime(2030, 1, 1)}, ValueError, "timezone-aware"),
        ((), {"job_id": "x" * 301}, ValueError, "longer than 300"),
    ],
)
def test_bad_job_arguments_are_refused_at_the_call(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    session = AsyncSession()
    with pytest.raises(error, match=match):
        add_job(session, None, "job", *args, **kwargs)  # type: ignore[arg-type]
    assert pending_rows(session) == [] and not session.new


def test_a_rolled_back_transaction_forgets_its_jobs_and_hooks() -> None:
    session = AsyncSession()
    add_job(session, None, "job")

    async def hook() -> None:
        raise AssertionError("must not run")

    after_commit(session, hook)
    discard_after_commit(session)
    assert pending_rows(session) == [] and AFTER_COMMIT_KEY not in session.info


@pytest.mark.parametrize(
    ("state", "line"),
    [
        (OutboxHealth(0, None, None, 0, None), "outbox: 0 jobs waiting"),
        (OutboxHealth(3, datetime.now(UTC), 42.4, 0, None), "outbox: 3 jobs waiting, oldest 42 s"),
        (
            OutboxHealth(3, datetime.now(UTC), 42.4, 2, "ConnectionError: refused"),
            "outbox: 3 jobs waiting, oldest 42 s, 2 failing (last error: ConnectionError: refused)",
        ),
    ],
)
def test_the_health_line(state: OutboxHealth, line: str) -> None:
    assert state.line() == line
