"""The worker's retry of model-calling jobs (``app.worker._retrying``)."""

from __future__ import annotations

import pytest
from arq.worker import Retry

from app import worker
from app.llm.base import ProviderError


async def failing(error: ProviderError) -> str:
    raise error


@pytest.mark.parametrize(("lasting", "retried"), [(False, True), (True, False)])
async def test_a_lasting_provider_error_is_not_retried(lasting: bool, retried: bool) -> None:
    """A refusal no retry changes (a key refused, a quota used up) ends the job at its first try; a passing failure
    is tried again later."""
    error = ProviderError("AuthenticationError: HTTP 401 Unauthorized", lasting=lasting)
    with pytest.raises(Retry if retried else ProviderError):
        await worker._retrying({"job_try": 1}, failing(error), "a summary")


@pytest.mark.parametrize(("retry_after", "job_try", "defer_s"), [(None, 2, 60), (600.0, 2, 600), (5.0, 2, 60)])
async def test_a_job_waits_as_long_as_the_provider_asked(retry_after: float | None, job_try: int, defer_s: int) -> None:
    """Memory jobs retried a provider that asked for "Retry-After: 600" on their own 30/60/90 s schedule (found by a
    run against a misbehaving provider): the next try now waits the longer of the two."""
    error = ProviderError("RateLimitError: HTTP 429 Too Many Requests", retry_after=retry_after)
    with pytest.raises(Retry) as excinfo:
        await worker._retrying({"job_try": job_try}, failing(error), "a summary")

    assert excinfo.value.defer_score == defer_s * 1000
