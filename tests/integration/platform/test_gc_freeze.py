"""The API and worker processes freeze what start-up loaded (:func:`app.core.runtime.freeze_startup_heap`), so
the garbage collector's full collections skip it instead of pausing the process for half a second."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from app.asgi import create_app
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.llm.registry import ProviderRegistry
from app.worker import build_worker


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Start with nothing frozen (an earlier test's app may have frozen this process's heap)."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    yield


@pytest.mark.usefixtures("unfrozen")
async def test_the_app_freezes_its_start_up_heap_once_the_models_are_loaded(
    settings: Settings, services: Services, registry: ProviderRegistry
) -> None:
    app = create_app(settings, services.database_url, services.redis_url, registry=registry)
    async with serve_in_background(app):
        await app.state.warm_up
        # the freeze is the warm-up's done callback, run on the loop's next turn: when the warm-up had ended before
        # this await, the await did not yield and the count was read before the freeze (a full CI run failed so)
        await asyncio.sleep(0)
        frozen = gc.get_freeze_count()
    # the whole process's heap (modules, app, ORM): far more than the collector tracks after it
    assert frozen > 100_000
    assert frozen > len(gc.get_objects())


@pytest.mark.usefixtures("unfrozen")
async def test_the_worker_freezes_its_start_up_heap(
    settings: Settings, services: Services, registry: ProviderRegistry
) -> None:
    worker = build_worker(settings, services.database_url, services.redis_url, burst=True, registry=registry)
    ctx: dict[str, Any] = {}
    assert worker.on_startup is not None and worker.on_shutdown is not None
    await worker.on_startup(ctx)
    try:
        assert gc.get_freeze_count() > 100_000
    finally:
        await worker.on_shutdown(ctx)
        await worker.close()
