"""An id in a URL path that is not a UUID (``/api/v1/conversations/not-a-uuid``) is a 400 naming the parameter,
``{"status_code": 400, "detail": "malformed conversation_id: not a UUID"}``, and changes nothing; before, the
routes that typed it ``{…:uuid}`` let the router answer a bare ``{"detail": "Not Found"}`` and the others
Litestar's "Validation failed for …". A well-formed id that names nothing keeps its 404 naming what was not found,
and a dashboard or widget page load keeps the 404 page."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from app.core.runtime import Services
from tests.conftest import Coach, make_client, upload
from tests.integration.api.conftest import coach_rows, placeholder_app
from tests.integration.web.test_dashboard import browser, log_in

__all__ = ["browser"]  # the fixture, imported for the tests here

MALFORMED = "not-a-uuid"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
PARAMETER = re.compile(r"\{(\w+):\w+\}")
ID_ROUTES = [
    (method, route.path)
    for route in placeholder_app().routes
    if route.path_parameters and not route.path.startswith(("/static/", "/schema/", "/w/{token"))
    for method in sorted(getattr(route, "methods", set()) - {"HEAD", "OPTIONS"})
]
"""``(method, route path)`` of every route with an id in its path (not the widget link's token, a static file's
path or the schema's format)."""
API_ROUTES = [(method, path) for method, path in ID_ROUTES if not path.startswith("/dashboard")]


def malformed_detail(path: str) -> str:
    """The ``detail`` of a 400 for ``path`` with every id in it malformed."""
    names = PARAMETER.findall(path)
    return f"malformed {' and '.join(names)}: not {'a UUID' if len(names) == 1 else 'UUIDs'}"


@dataclass
class Tenant:
    """A coach with a client, the client's conversation held by the coach, the coach's reply in it and a
    document, as ids; ``widget``: the client's ``Authorization`` header."""

    coach: Coach
    widget: dict[str, str]
    client: str
    conversation: str
    message: str
    document: str


@pytest.fixture(scope="module")
async def tenant(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]) -> Tenant:
    coach = await make_coach("Malformed ids")
    await http.patch("/api/v1/settings", headers=coach.headers, json={"handoff_mode": "human_only"})
    document = await upload(http, coach, "notes.txt", b"Breathe in for four counts, out for six.")
    client = await make_client(http, coach)
    widget = {"Authorization": f"Bearer {client['widget_token']}"}
    chat = await http.post("/api/v1/chat", headers=widget, json={"text": "I need to talk to my coach"})
    assert chat.status_code == 200, chat.text
    conversation = chat.json()["conversation_id"]
    taken = await http.post(f"/api/v1/conversations/{conversation}/takeover", headers=coach.headers)
    assert taken.status_code == 200, taken.text
    reply = await http.post(
        f"/api/v1/conversations/{conversation}/messages", headers=coach.headers, json={"text": "I am here."}
    )
    assert reply.status_code == 201, reply.text
    return Tenant(coach, widget, client["id"], conversation, reply.json()["id"], document["id"])


def test_no_route_lets_the_router_parse_an_id() -> None:
    """A ``{…:uuid}`` route parameter is parsed by the router, which answers a malformed one with a bare 404
    before any handler: every id is ``{…:str}`` and parsed by its handler's ``PathId`` (``uuid.UUID``)."""
    for route in placeholder_app().routes:
        for name, parameter in route.path_parameters.items():
            if route.path.startswith("/static/"):
                continue
            assert parameter.type is str, f"{route.path}: {name} is {parameter.type.__name__}"
            for handler in getattr(route, "route_handlers", []):
                declared = handler.parsed_fn_signature.parameters.get(name)
                assert declared is None or declared.annotation in (uuid.UUID, str), f"{route.path}: {name}"


@pytest.mark.parametrize(("method", "path"), API_ROUTES, ids=[f"{m} {p}" for m, p in API_ROUTES])
async def test_a_malformed_id_in_the_path_is_a_400_naming_it_and_changes_nothing(
    http: httpx.AsyncClient, services: Services, tenant: Tenant, method: str, path: str
) -> None:
    url = PARAMETER.sub(MALFORMED, path)
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}  # a body the route refuses: the id comes first
    before = await coach_rows(services, tenant.coach.coach_id)
    answers = {}
    for who, headers in {"coach": tenant.coach.headers, "client": tenant.widget}.items():
        response = await http.request(method, url, headers=headers, **body)
        answers[who] = response.status_code
        if response.status_code != 401:  # 401: the other kind of credential (checked before the path's ids)
            assert response.status_code == 400, response.text
            assert response.json() == {"status_code": 400, "detail": malformed_detail(path)}
    assert 400 in answers.values(), answers
    assert await coach_rows(services, tenant.coach.coach_id) == before


@pytest.mark.parametrize(
    ("kind", "who", "method", "path", "body"),
    [
        ("conversation", "coach", "GET", "/api/v1/conversations/{}", None),
        ("conversation", "client", "GET", "/api/v1/widget/conversations/{}/messages", None),
        ("message", "client", "POST", "/api/v1/messages/{}/feedback", {"helpful": True}),
        ("document", "coach", "GET", "/api/v1/documents/{}", None),
        ("client", "coach", "GET", "/api/v1/clients/{}/export", None),
        ("client", "coach", "GET", "/api/v1/clients/{}/memory", None),
    ],
)
async def test_a_malformed_id_is_a_400_an_unknown_one_its_404_and_a_valid_one_works(
    http: httpx.AsyncClient,
    tenant: Tenant,
    kind: str,
    who: str,
    method: str,
    path: str,
    body: dict[str, bool] | None,
) -> None:
    headers = tenant.coach.headers if who == "coach" else tenant.widget

    async def call(value: str) -> httpx.Response:
        return await http.request(method, path.format(value), headers=headers, json=body)

    malformed = await call(MALFORMED)
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["detail"] == f"malformed {kind}_id: not a UUID"
    unknown = await call(UNKNOWN)
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["detail"] == f"{kind} not found"
    valid = await call(getattr(tenant, kind))
    assert valid.status_code == 200, valid.text


async def test_a_page_with_a_malformed_id_keeps_the_404_page_and_its_fragments_get_the_400(
    browser: httpx.AsyncClient, tenant: Tenant
) -> None:
    await log_in(browser, tenant.coach)
    page = {"Accept": "text/html"}
    for url in (
        f"/dashboard/conversations/{MALFORMED}",
        f"/dashboard/clients/{MALFORMED}",
        f"/w/avatar/{MALFORMED}",
        f"/dashboard/inbox?conversation={MALFORMED}",  # a query's id: a JSON 400 before
    ):
        response = await browser.get(url, headers=page)
        assert response.status_code == 404, url
        assert "There is nothing at this address." in response.text, url
    unknown = await browser.get(f"/dashboard/conversations/{UNKNOWN}", headers=page)
    assert unknown.status_code == 404
    assert "Not found: conversation not found." in unknown.text
    fragment = await browser.get(f"/dashboard/conversations/{MALFORMED}/earlier", headers={"HX-Request": "true"})
    assert fragment.status_code == 400, fragment.text
    assert fragment.json()["detail"] == "malformed conversation_id: not a UUID"
    valid = await browser.get(f"/dashboard/conversations/{tenant.conversation}/earlier", headers={"HX-Request": "true"})
    assert valid.status_code == 200, valid.text
