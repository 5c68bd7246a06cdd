"""Cross-coach intervention patterns are k-anonymous: a cell (technique × the client's mood) is shown to any
coach only once at least five distinct coaches contributed to it, however many uses it has."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx

from app.container import Container
from app.db.engine import tenant_session
from app.learning.interventions import K_ANONYMITY, count_pattern, shared_patterns
from tests.conftest import Coach


async def _cells(http: httpx.AsyncClient, container: Container, coach: Coach, strategy: str) -> tuple[list, list]:
    """The cell ``strategy`` as the service and as the coach's dashboard API show it."""
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        service = [p for p in await shared_patterns(session, limit=10_000) if p["strategy"] == strategy]
    response = await http.get("/api/v1/learning/dashboard", headers=coach.headers, params={"days": 7})
    assert response.status_code == 200, response.text
    shown = response.json()["interventions"]["cross_coach_patterns"]
    return service, [p for p in shown if p["strategy"] == strategy]


async def test_a_pattern_cell_needs_five_distinct_coaches(
    http: httpx.AsyncClient, container: Container, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """Four coaches (one of them twice, with many uses) → the cell is hidden from every coach, in the service
    and on the dashboard; the fifth coach → it is shown, with all uses counted."""
    assert K_ANONYMITY == 5
    strategy = f"k-anon {uuid.uuid4().hex[:12]}"  # a cell of its own: other tests share the table
    coaches = [await make_coach(f"K coach {n}") for n in range(5)]

    async def contribute(coach: Coach) -> None:
        async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
            await count_pattern(session, uuid.UUID(coach.coach_id), strategy, "negative", uses=500, successes=400)

    for coach in coaches[:4]:
        await contribute(coach)
    await contribute(coaches[0])  # the same coach again is not a fifth coach
    for coach in coaches:
        service, dashboard = await _cells(http, container, coach, strategy)
        assert service == [] and dashboard == [], "4 coaches: the cell must stay hidden"

    await contribute(coaches[4])
    expected = [{"strategy": strategy, "situation": "negative", "uses": 3000, "success_rate": 0.8}]
    for coach in (coaches[0], coaches[4]):
        service, dashboard = await _cells(http, container, coach, strategy)
        assert service == expected and dashboard == expected
