"""Schemathesis over the app's own ``/schema/openapi.json`` (issue 12): every operation the schema lists, each
generated case (valid and invalid inputs, ``EXAMPLES`` per operation; ``FUZZ_EXAMPLES`` overrides it for a longer
local run) called as a coach (API key) and as a client (widget token), in-process over ASGI: no 5xx, and every
4xx has a JSON body with ``detail``. The coach hands every chat to a human (no model call per case)."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from app.asgi import create_app
from app.core.config import Settings
from app.core.runtime import Services
from app.llm.registry import ProviderRegistry
from tests.conftest import Coach, make_client
from tests.integration.api.conftest import api_operations

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))


@pytest.fixture(scope="session")
def api_schema(settings: Settings, services: Services, registry: ProviderRegistry) -> schemathesis.schemas.BaseSchema:
    # schemathesis's ASGI client names the host "testserver" (Starlette's TestClient): an allowed host here
    served = settings.model_copy(update={"allowed_hosts": "testserver"})
    app = create_app(served, services.database_url, services.redis_url, registry=registry)
    return schemathesis.openapi.from_asgi("/schema/openapi.json", app)


@pytest.fixture(scope="session")
async def identities(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]) -> dict[str, dict[str, str]]:
    coach = await make_coach("Fuzz")
    response = await http.patch("/api/v1/settings", headers=coach.headers, json={"handoff_mode": "human_only"})
    assert response.status_code == 200, response.text
    client = await make_client(http, coach)
    return {"coach": coach.headers, "client": {"Authorization": f"Bearer {client['widget_token']}"}}


@pytest.mark.parametrize("operation", api_operations())
def test_api(
    operation: str, api_schema: schemathesis.schemas.BaseSchema, identities: dict[str, dict[str, str]]
) -> None:
    method, path = operation.split(" ", 1)
    op = api_schema[path][method]
    cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case) -> None:
        for who, headers in identities.items():
            response = case.call(headers=headers)
            sent = f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200}"
            where = f"as {who}: {sent} -> {response.status_code} {response.text[:300]}"
            assert response.status_code < 500, where
            if response.status_code >= 400:
                media_type = (response.headers.get("content-type") or [""])[0].split(";")[0]
                assert media_type == "application/json", where
                assert "detail" in json.loads(response.text), where

    run()
