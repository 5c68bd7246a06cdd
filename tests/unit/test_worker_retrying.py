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
