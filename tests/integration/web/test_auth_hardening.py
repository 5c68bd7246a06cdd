"""Tokens, sessions, keys (issue 12): API keys (create, list by prefix, revoke), password change that ends the
other sessions, a fresh session id at log-in and sign-up, cookie flags, rate limits on log-in and sign-up (per
IP, per account, in Redis), argon2 off the event loop, the same work for unknown e-mails, small bodies only."""

from __future__ import annotations

import asyncio
import re
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app.asgi import create_app
from app.container import Container
from app.core import security
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.core.security import token_hash
from app.llm.registry import ProviderRegistry
from app.web.sessions import SESSION_NAMESPACE
from tests.conftest import Coach
from tests.integration.web.test_dashboard import CSRF, PASSWORD, csrf, sign_up

STRICT_IP_LIMIT = 6
STRICT_ACCOUNT_LIMIT = 3


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client, like a browser tab."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        yield client


@pytest.fixture
async def other_browser(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser (another device of the same coach)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
async def strict_url(settings: Settings, services: Services, registry: ProviderRegistry) -> AsyncIterator[str]:
    """An app with the real kind of limits (a few attempts a minute) and an https public URL."""
    strict = settings.model_copy(
        update={
            "public_url": "https://coach.example",
            "auth_rate_limit_ip": f"{STRICT_IP_LIMIT}/minute",
            "auth_rate_limit_account": f"{STRICT_ACCOUNT_LIMIT}/minute",
        }
    )
    async with serve_in_background(
        create_app(strict, services.database_url, services.redis_url, registry=registry)
    ) as url:
        yield url


def fake_ip() -> str:
    """A client address for ``X-Forwarded-For`` (uvicorn trusts it from 127.0.0.1): a label, never connected to."""
    n = uuid.uuid4().int
    return f"127.{n % 250 + 1}.{n // 250 % 250 + 1}.{n // 62500 % 250 + 1}"


async def log_in(browser: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    token = await csrf(browser, "/login")
    return await browser.post("/login", data={"email": email, "password": password, "_csrf_token": token})


async def strict_login(url: str, email: str, password: str, ip: str) -> httpx.Response:
    """POST /login on the https app: its CSRF cookie is ``Secure``, so it is sent by hand over plain http."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        page = await client.get("/login")
        match = CSRF.search(page.text)
        assert match
        return await client.post(
            "/login",
            data={"email": email, "password": password, "_csrf_token": match.group(1)},
            headers={"X-Forwarded-For": ip, "Cookie": f"oc_csrf={page.cookies['oc_csrf']}"},
        )


# --- API keys -------------------------------------------------------------------------------------------------


async def test_api_keys_are_created_listed_by_prefix_and_revoked_at_once(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    created = await http.post("/api/v1/api-keys", headers=coach.headers, json={"name": "Zapier"})
    assert created.status_code == 201, created.text
    new = created.json()
    assert new["name"] == "Zapier" and re.fullmatch(r"oc_[A-Za-z0-9_-]{43}", new["key"])
    assert new["prefix"] == new["key"][:10] and new["revoked_at"] is None
    new_headers = {"Authorization": f"Bearer {new['key']}"}
    assert (await http.get("/api/v1/documents", headers=new_headers)).status_code == 200

    listed = await http.get("/api/v1/api-keys", headers=coach.headers)
    assert listed.status_code == 200
    assert new["key"] not in listed.text and coach.api_key not in listed.text
    by_name = {key["name"]: key for key in listed.json()}
    assert set(by_name) == {"default", "Zapier"} and "key" not in by_name["Zapier"]
    assert by_name["default"]["prefix"] == coach.api_key[:10]
    assert by_name["default"]["last_used_at"] is not None and by_name["Zapier"]["last_used_at"] is not None

    other = await make_coach()
    assert (await http.delete(f"/api/v1/api-keys/{new['id']}", headers=other.headers)).status_code == 404
    assert (await http.get("/api/v1/documents", headers=new_headers)).status_code == 200

    assert (await http.delete(f"/api/v1/api-keys/{new['id']}", headers=coach.headers)).status_code == 204
    refused = await http.get("/api/v1/documents", headers=new_headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert (await http.get("/api/v1/documents", headers=coach.headers)).status_code == 200
    revoked = {key["name"]: key for key in (await http.get("/api/v1/api-keys", headers=coach.headers)).json()}
    assert revoked["Zapier"]["revoked_at"] is not None and revoked["default"]["revoked_at"] is None


async def test_api_key_bad_input_is_a_400_and_creates_nothing(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    for body in ({"name": "   "}, {"name": ""}, {"name": "x" * 101}, {}):
        response = await http.post("/api/v1/api-keys", headers=coach.headers, json=body)
        assert response.status_code == 400 and response.json()["detail"], body
    assert response.headers["content-type"].startswith("application/json")
    unknown = await http.delete(f"/api/v1/api-keys/{uuid.uuid4()}", headers=coach.headers)
    assert unknown.status_code == 404 and unknown.json()["detail"] == "API key not found"
    assert len((await http.get("/api/v1/api-keys", headers=coach.headers)).json()) == 1


async def test_dashboard_creates_shows_once_and_revokes_api_keys(browser: httpx.AsyncClient) -> None:
    await sign_up(browser)
    await browser.get("/dashboard/settings")  # the sign-up key is shown (and dropped from the session) here
    token = await csrf(browser, "/dashboard/settings")
    page = await browser.post("/dashboard/settings/api-keys", data={"name": "Reporting", "_csrf_token": token})
    assert page.status_code == 200
    match = re.search(r"(oc_[A-Za-z0-9_-]{43})", page.text)
    assert match and "Reporting" in page.text
    key = match.group(1)
    again = await browser.get("/dashboard/settings")
    assert key not in again.text and f"{key[:10]}…" in again.text
    assert (await browser.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {key}"})).status_code == 200

    keys = (await browser.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {key}"})).json()
    key_id = next(k["id"] for k in keys if k["name"] == "Reporting")
    revoked = await browser.post(f"/dashboard/settings/api-keys/{key_id}/revoke", data={"_csrf_token": token})
    assert revoked.status_code == 200 and "revoked" in revoked.text
    assert (await browser.get("/api/v1/documents", headers={"Authorization": f"Bearer {key}"})).status_code == 401

    forged = await browser.post("/dashboard/settings/api-keys", data={"name": "Forged"})
    assert forged.status_code == 403, "a dashboard path containing /api still needs the CSRF token"
    forged = await browser.post(f"/dashboard/settings/api-keys/{key_id}/revoke")
    assert forged.status_code == 403
    empty = await browser.post("/dashboard/settings/api-keys", data={"name": " ", "_csrf_token": token})
    assert empty.status_code == 400 and "name must be 1 to 100 characters" in empty.text
    missing = await browser.post(f"/dashboard/settings/api-keys/{uuid.uuid4()}/revoke", data={"_csrf_token": token})
    assert missing.status_code == 404 and "API key not found" in missing.text


# --- password change ------------------------------------------------------------------------------------------


async def test_api_password_change_needs_the_current_password_and_ends_dashboard_sessions(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    browser: httpx.AsyncClient,
    other_browser: httpx.AsyncClient,
) -> None:
    coach = await make_coach()
    for tab in (browser, other_browser):
        assert (await log_in(tab, coach.email)).status_code in (302, 303)
        assert (await tab.get("/dashboard/settings")).status_code == 200
    change = {"email": coach.email, "current_password": "not my password", "new_password": "a new long password"}

    wrong = await http.post("/api/v1/auth/password", headers=coach.headers, json=change)
    assert wrong.status_code == 400 and wrong.json()["detail"] == "current_password is wrong"
    too_short = change | {"current_password": PASSWORD, "new_password": "x"}
    short = await http.post("/api/v1/auth/password", headers=coach.headers, json=too_short)
    assert short.status_code == 400 and "at least 8" in short.json()["detail"]
    stranger = await http.post(
        "/api/v1/auth/password", headers=coach.headers, json=change | {"email": "nobody@example.com"}
    )
    assert stranger.status_code == 404
    anonymous = await http.post("/api/v1/auth/password", json=change | {"current_password": PASSWORD})
    assert anonymous.status_code == 401
    assert (await browser.get("/dashboard/settings")).status_code == 200, "a refused change ends nothing"

    done = await http.post("/api/v1/auth/password", headers=coach.headers, json=change | {"current_password": PASSWORD})
    assert done.status_code == 200 and done.json() == {"sessions_ended": 2}
    for tab in (browser, other_browser):
        ended = await tab.get("/dashboard/settings")
        assert ended.status_code in (302, 303) and ended.headers["location"] == "/login"
    assert (await log_in(browser, coach.email)).status_code == 401
    assert (await log_in(browser, coach.email, "a new long password")).status_code in (302, 303)


async def test_a_session_in_use_longer_than_its_log_ins_index_lived_is_still_ended_by_a_password_change(
    http: httpx.AsyncClient, services: Services, make_coach: Callable[..., Awaitable[Coach]], browser: httpx.AsyncClient
) -> None:
    """The store keeps a session 14 days from its last use; the coach's index of session ids lived 14 days from
    the last log-in, so a session used every day outlived it and a password change no longer ended it. Each
    use of a session now renews its place in the index."""
    coach = await make_coach()
    assert (await log_in(browser, coach.email)).status_code in (302, 303)
    redis = Redis.from_url(services.redis_url)
    try:
        await redis.delete(f"{SESSION_NAMESPACE}_of:{coach.coach_id}")  # expired: 14 days without a log-in
    finally:
        await redis.aclose()
    assert (await browser.get("/dashboard/settings")).status_code == 200  # the session, still in use
    change = {"email": coach.email, "current_password": PASSWORD, "new_password": "a new long password"}
    done = await http.post("/api/v1/auth/password", headers=coach.headers, json=change)
    assert done.status_code == 200 and done.json() == {"sessions_ended": 1}
    ended = await browser.get("/dashboard/settings")
    assert ended.status_code in (302, 303) and ended.headers["location"] == "/login"


async def test_dashboard_password_change_keeps_this_session_and_ends_the_others(
    browser: httpx.AsyncClient, other_browser: httpx.AsyncClient
) -> None:
    email = await sign_up(browser)
    assert (await log_in(other_browser, email)).status_code in (302, 303)
    token = await csrf(browser, "/dashboard/settings")
    before = browser.cookies["session"]
    form = {"current_password": "wrong password", "new_password": "brand new secret", "_csrf_token": token}

    wrong = await browser.post("/dashboard/settings/password", data=form | {"new_password_confirm": "brand new secret"})
    assert wrong.status_code == 400 and "current_password is wrong" in wrong.text
    typo = await browser.post(
        "/dashboard/settings/password",
        data=form | {"current_password": PASSWORD, "new_password_confirm": "brand new secreT"},
    )
    assert typo.status_code == 400 and "confirmation differ" in typo.text
    assert (await other_browser.get("/dashboard/settings")).status_code == 200

    done = await browser.post(
        "/dashboard/settings/password",
        data=form | {"current_password": PASSWORD, "new_password_confirm": "brand new secret"},
    )
    assert done.status_code == 200 and "1 other session(s) logged out" in done.text
    assert browser.cookies["session"] != before
    assert (await browser.get("/dashboard/settings")).status_code == 200
    assert (await other_browser.get("/dashboard/settings")).status_code in (302, 303)
    async with httpx.AsyncClient(base_url=str(browser.base_url), cookies={"session": before}) as stale:
        assert (await stale.get("/dashboard/settings")).status_code in (302, 303)
    assert (await log_in(other_browser, email, "brand new secret")).status_code in (302, 303)


BLANK_PASSWORDS = (" " * 8, "\t" * 8, " \n" * 6, "\u3000" * 10)
"""Passwords of 8 characters or more that are only blanks (spaces, tabs, line breaks, an ideographic space)."""


async def test_blank_passwords_are_refused_at_api_sign_up_and_password_change(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """Eight spaces pass a length rule but are no password: sign-up and password change refuse them with a 400
    that says why; no account is made, the password is not changed."""
    coach = await make_coach()
    for blank in BLANK_PASSWORDS:
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        signup = await http.post("/api/v1/auth/signup", json={"coach_name": "B", "email": email, "password": blank})
        assert signup.status_code == 400 and signup.json()["detail"] == "password must not be empty or only spaces"
        ok = await http.post("/api/v1/auth/signup", json={"coach_name": "B", "email": email, "password": PASSWORD})
        assert ok.status_code == 201, "the refused sign-up stored nothing"
        change = {"email": coach.email, "current_password": PASSWORD, "new_password": blank}
        changed = await http.post("/api/v1/auth/password", headers=coach.headers, json=change)
        assert changed.status_code == 400
        assert changed.json()["detail"] == "new_password must not be empty or only spaces"
    for password in (PASSWORD, "  spaced password  "):  # blanks around a real password are part of it
        change = {"email": coach.email, "current_password": PASSWORD, "new_password": password}
        assert (await http.post("/api/v1/auth/password", headers=coach.headers, json=change)).status_code == 200
        back = {"email": coach.email, "current_password": password, "new_password": PASSWORD}
        assert (await http.post("/api/v1/auth/password", headers=coach.headers, json=back)).status_code == 200


async def test_blank_passwords_are_refused_on_the_dashboard_forms(
    browser: httpx.AsyncClient, other_browser: httpx.AsyncClient
) -> None:
    """The sign-up and password forms show the same message; nothing is made or changed."""
    email = await sign_up(browser)
    for blank in BLANK_PASSWORDS:
        token = await csrf(other_browser, "/signup")
        other = f"{uuid.uuid4().hex[:12]}@example.com"
        form = {"coach_name": "B", "email": other, "password": blank, "_csrf_token": token}
        signup = await other_browser.post("/signup", data=form)
        assert signup.status_code == 400 and "password must not be empty or only spaces" in signup.text
        assert (await log_in(other_browser, other, blank)).status_code == 401, "no account was made"
        token = await csrf(browser, "/dashboard/settings")
        form = {"current_password": PASSWORD, "new_password": blank, "new_password_confirm": blank}
        changed = await browser.post("/dashboard/settings/password", data=form | {"_csrf_token": token})
        assert changed.status_code == 400 and "new_password must not be empty or only spaces" in changed.text
    assert (await log_in(other_browser, email)).status_code in (302, 303), "the password is unchanged"


# --- account deletion -------------------------------------------------------------------------------------------


def session_ids_stored(services: Services, ids: list[str]) -> list[str]:
    """Which of these dashboard session ids still have their data in Redis."""
    redis = SyncRedis.from_url(services.redis_url)
    try:
        return [i for i in ids if redis.exists(f"{SESSION_NAMESPACE}:{i}")]
    finally:
        redis.close()


async def test_api_account_deletion_ends_every_dashboard_session(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    browser: httpx.AsyncClient,
    other_browser: httpx.AsyncClient,
    services: Services,
) -> None:
    coach = await make_coach()
    for tab in (browser, other_browser):
        assert (await log_in(tab, coach.email)).status_code in (302, 303)
    ids = [browser.cookies["session"], other_browser.cookies["session"]]
    assert session_ids_stored(services, ids) == ids
    wrong = await http.post("/api/v1/account/delete", headers=coach.headers, json={"password": "nope"})
    assert wrong.status_code == 403 and session_ids_stored(services, ids) == ids, "a refused deletion ends nothing"

    done = await http.post("/api/v1/account/delete", headers=coach.headers, json={"password": PASSWORD})
    assert done.status_code == 200, done.text
    assert session_ids_stored(services, ids) == []
    for tab in (browser, other_browser):
        ended = await tab.get("/dashboard/settings")
        assert ended.status_code in (302, 303) and ended.headers["location"] == "/login"


async def test_dashboard_account_deletion_ends_the_other_sessions_too(
    browser: httpx.AsyncClient, other_browser: httpx.AsyncClient, services: Services
) -> None:
    email = await sign_up(browser)
    assert (await log_in(other_browser, email)).status_code in (302, 303)
    ids = [browser.cookies["session"], other_browser.cookies["session"]]
    token = await csrf(browser, "/dashboard/settings")
    gone = await browser.post("/dashboard/account/delete", data={"password": PASSWORD, "_csrf_token": token})
    assert gone.status_code in (302, 303) and gone.headers["location"] == "/signup"
    assert session_ids_stored(services, ids) == []


async def settings_tab(client: httpx.AsyncClient, login: httpx.Response) -> tuple[dict[str, str], str]:
    """The logged-in session of ``login`` on the settings page, as a browser tab holds it: its ``Cookie`` header
    (the session and the CSRF cookie) and the page's CSRF token."""
    session = f"session={login.cookies['session']}"
    page = await client.get("/dashboard/settings", headers={"Cookie": session})
    match = CSRF.search(page.text)
    assert page.status_code == 200 and match
    return {"Cookie": f"{session}; oc_csrf={page.cookies['oc_csrf']}"}, match.group(1)


async def test_account_deletion_is_rate_limited_per_account_on_the_api_and_the_dashboard(
    strict_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """A stolen API key (or an unlocked dashboard) cannot guess the password by deleting the account: the API
    and the settings form share one count per account, over which even the right password gets 429."""
    coach = await make_coach()
    login = await strict_login(strict_url, coach.email, PASSWORD, fake_ip())
    assert login.status_code in (302, 303)
    async with httpx.AsyncClient(base_url=strict_url, timeout=60) as client:
        tab, token = await settings_tab(client, login)

        async def api(password: str) -> httpx.Response:
            headers = coach.headers | {"X-Forwarded-For": fake_ip()}
            return await client.post("/api/v1/account/delete", headers=headers, json={"password": password})

        async def form(password: str) -> httpx.Response:
            data = {"password": password, "_csrf_token": token}
            return await client.post(
                "/dashboard/account/delete", headers=tab | {"X-Forwarded-For": fake_ip()}, data=data
            )

        for attempt in (api, api, form):
            assert (await attempt("a guess")).status_code == 403
        refused = await api(PASSWORD)
        assert refused.status_code == 429 and refused.json()["detail"].startswith("too many attempts")
        assert int(refused.headers["retry-after"]) >= 1
        refused_form = await form(PASSWORD)
        assert refused_form.status_code == 429 and "too many attempts" in refused_form.text
    assert (await http.get("/api/v1/clients", headers=coach.headers)).status_code == 200, "nothing deleted"
    big = await http.post("/api/v1/account/delete", headers=coach.headers, json={"password": "x" * 8000})
    assert big.status_code == 413


async def test_dashboard_password_change_shares_the_accounts_log_in_count(
    strict_url: str, container: Container, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The settings form counted its guesses of the current password per user id, a second budget beside the
    e-mail's for whoever holds a session: log-ins and password changes now count together, per e-mail."""
    coach = await make_coach()
    login = await strict_login(strict_url, coach.email, PASSWORD, fake_ip())  # attempt 1
    assert login.status_code in (302, 303)
    assert (await strict_login(strict_url, coach.email, "wrong password", fake_ip())).status_code == 401  # 2
    async with httpx.AsyncClient(base_url=strict_url, timeout=60) as client:
        tab, token = await settings_tab(client, login)

        async def change(current: str) -> httpx.Response:
            new = "brand new secret"
            data = {"current_password": current, "new_password": new, "new_password_confirm": new}
            return await client.post(
                "/dashboard/settings/password",
                headers=tab | {"X-Forwarded-For": fake_ip()},
                data=data | {"_csrf_token": token},
            )

        guess = await change("a guess")  # attempt 3: the last of the minute's
        assert guess.status_code == 400 and "current_password is wrong" in guess.text
        refused = await change(PASSWORD)
        assert refused.status_code == 429 and "too many attempts" in refused.text
    assert await container.accounts.login(coach.email, PASSWORD) is not None, "the password is unchanged"


# --- sessions and cookies -------------------------------------------------------------------------------------


async def test_login_gives_a_new_session_id_and_the_planted_one_is_dead(
    browser: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    planted = "f" * 64  # what an attacker set in the victim's browser before log-in
    plant(browser, planted)
    login = await log_in(browser, coach.email)
    assert login.status_code in (302, 303)
    issued = login.cookies["session"]
    assert issued != planted and len(issued) == 64
    async with httpx.AsyncClient(base_url=str(browser.base_url), cookies={"session": planted}) as attacker:
        page = await attacker.get("/dashboard/settings")
        assert page.status_code in (302, 303) and page.headers["location"] == "/login"
    assert (await browser.get("/dashboard/settings")).status_code == 200

    # logging in again from a logged-in browser rotates too, and the previous id stops working
    again = await log_in(browser, coach.email)
    assert again.status_code in (302, 303) and again.cookies["session"] not in (issued, planted)
    async with httpx.AsyncClient(base_url=str(browser.base_url), cookies={"session": issued}) as old:
        assert (await old.get("/dashboard/settings")).status_code in (302, 303)


async def test_signup_gives_a_new_session_id(browser: httpx.AsyncClient) -> None:
    planted = "e" * 64
    plant(browser, planted)
    await sign_up(browser)
    assert browser.cookies["session"] != planted and len(browser.cookies["session"]) == 64
    async with httpx.AsyncClient(base_url=str(browser.base_url), cookies={"session": planted}) as attacker:
        assert (await attacker.get("/dashboard/settings")).status_code in (302, 303)


def plant(browser: httpx.AsyncClient, session_id: str) -> None:
    """Set the browser's session cookie to ``session_id`` (the only one it has)."""
    browser.cookies.clear()
    browser.cookies.set("session", session_id, domain=browser.base_url.host)


def cookie_flags(response: httpx.Response, name: str) -> set[str]:
    """The attributes of the ``Set-Cookie`` header for ``name``, lower-cased (``secure``, ``samesite=lax`` …)."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return {part.strip().lower() for part in header.split(";")[1:]}
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


async def test_cookies_are_secure_on_https_and_always_httponly_and_samesite(
    strict_url: str, base_url: str, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    async with httpx.AsyncClient(base_url=strict_url) as client:
        page = await client.get("/login")
    assert {"secure", "httponly", "samesite=lax"} <= cookie_flags(page, "oc_csrf")
    login = await strict_login(strict_url, coach.email, PASSWORD, fake_ip())
    assert login.status_code in (302, 303)
    assert {"secure", "httponly", "samesite=lax"} <= cookie_flags(login, "session")
    async with httpx.AsyncClient(base_url=base_url) as plain:
        login = await log_in(plain, coach.email)
    assert login.status_code in (302, 303)
    flags = cookie_flags(login, "session")
    assert "secure" not in flags and {"httponly", "samesite=lax"} <= flags


# --- rate limits, hashing, body size ----------------------------------------------------------------------------


async def test_login_is_limited_per_account_across_ips(
    strict_url: str, make_coach: Callable[..., Awaitable[Coach]], services: Services
) -> None:
    coach = await make_coach()
    for _ in range(STRICT_ACCOUNT_LIMIT):
        assert (await strict_login(strict_url, coach.email, "wrong password", fake_ip())).status_code == 401
    refused = await strict_login(strict_url, coach.email, PASSWORD, fake_ip())
    assert refused.status_code == 429 and "too many attempts" in refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # another account from the same kind of fresh IP is not affected
    other = await make_coach()
    assert (await strict_login(strict_url, other.email, PASSWORD, fake_ip())).status_code in (302, 303)
    redis = SyncRedis.from_url(services.redis_url)
    try:
        keys = list(redis.scan_iter("opencoach_auth*"))
        assert any(token_hash(coach.email).encode() in key for key in keys), "counted in Redis"
        assert not any(coach.email.encode() in key for key in keys), "no e-mail address in key names"
    finally:
        redis.close()


async def test_signup_is_limited_per_ip_with_a_json_429_and_stores_nothing(strict_url: str) -> None:
    ip = fake_ip()
    emails = [f"{uuid.uuid4().hex[:12]}@example.com" for _ in range(STRICT_IP_LIMIT + 1)]
    async with httpx.AsyncClient(base_url=strict_url, timeout=60, headers={"X-Forwarded-For": ip}) as client:
        for email in emails[:-1]:
            body = {"coach_name": "Limited", "email": email, "password": PASSWORD}
            assert (await client.post("/api/v1/auth/signup", json=body)).status_code == 201
        body = {"coach_name": "Limited", "email": emails[-1], "password": PASSWORD}
        refused = await client.post("/api/v1/auth/signup", json=body)
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("too many attempts") and int(refused.headers["retry-after"]) >= 1
    async with httpx.AsyncClient(base_url=strict_url, timeout=60, headers={"X-Forwarded-For": fake_ip()}) as client:
        assert (await client.post("/api/v1/auth/signup", json=body)).status_code == 201, "nothing was stored"


async def test_auth_bodies_over_4_kib_get_413(http: httpx.AsyncClient, browser: httpx.AsyncClient) -> None:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    big = {"coach_name": "Big", "email": email, "password": PASSWORD, "padding": "x" * 8000}
    response = await http.post("/api/v1/auth/signup", json=big)
    assert response.status_code == 413 and response.json()["detail"]
    token = await csrf(browser, "/login")
    form = await browser.post("/login", data={"email": email, "password": "x" * 8000, "_csrf_token": token})
    assert form.status_code == 413
    ok = await http.post("/api/v1/auth/signup", json={k: v for k, v in big.items() if k != "padding"})
    assert ok.status_code == 201, "the refused sign-up stored nothing"


class RecordingHasher:
    """Wraps argon2's ``PasswordHasher``: which threads verify, how many at once, how many calls."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.running = self.most = self.verifies = 0
        self.threads: set[int] = set()

    def hash(self, password: str) -> str:
        return self._inner.hash(password)  # type: ignore[no-any-return]

    def verify(self, password_hash: str, password: str) -> bool:
        with self._lock:
            self.running += 1
            self.verifies += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(0.05)
            return self._inner.verify(password_hash, password)  # type: ignore[no-any-return]
        finally:
            with self._lock:
                self.running -= 1


async def test_password_checks_run_off_the_event_loop_a_few_at_a_time(
    container: Container, make_coach: Callable[..., Awaitable[Coach]], monkeypatch: pytest.MonkeyPatch
) -> None:
    coach = await make_coach()
    recorder = RecordingHasher(security._hasher)
    monkeypatch.setattr(security, "_hasher", recorder)
    results = await asyncio.gather(*(container.accounts.login(coach.email, PASSWORD) for _ in range(8)))
    assert all(result is not None for result in results)
    assert threading.get_ident() not in recorder.threads, "argon2 ran on the event loop thread"
    assert recorder.most == security.PASSWORD_HASH_THREADS


async def test_an_unknown_email_costs_a_password_check_like_a_wrong_password(
    container: Container, make_coach: Callable[..., Awaitable[Coach]], monkeypatch: pytest.MonkeyPatch
) -> None:
    coach = await make_coach()
    recorder = RecordingHasher(security._hasher)
    monkeypatch.setattr(security, "_hasher", recorder)
    assert await container.accounts.login("nobody-here@example.com", PASSWORD) is None
    assert recorder.verifies == 1, "no argon2 verification for an unknown e-mail: its answer comes faster"
    monkeypatch.setattr(security, "_hasher", recorder._inner)

    async def timed(email: str) -> float:
        started = time.perf_counter()
        assert await container.accounts.login(email, "wrong password") is None
        return time.perf_counter() - started

    await timed("warm-up@example.com")
    known = statistics.median([await timed(coach.email) for _ in range(5)])
    unknown = statistics.median([await timed(f"{uuid.uuid4().hex}@example.com") for _ in range(5)])
    assert unknown > 0.5 * known, (unknown, known)


def test_rate_limit_settings_are_checked() -> None:
    assert Settings(auth_rate_limit_ip="3/second;10/hour").auth_rate_limit_ip == "3/second;10/hour"
    with pytest.raises(ValueError, match="rate limit"):
        Settings(auth_rate_limit_account="lots")
    defaults = Settings()
    assert defaults.auth_rate_limit_ip and defaults.auth_rate_limit_account


async def test_an_anonymous_page_view_stores_no_session(browser: httpx.AsyncClient, services: Services) -> None:
    """Every page view without a session cookie stored an empty session in Redis for 14 days (a loop of
    anonymous requests filled Redis, which holds the jobs and the rate limits too): none is stored now."""
    redis = SyncRedis.from_url(services.redis_url)
    try:
        before = len(redis.keys(f"{SESSION_NAMESPACE}:*"))
        for page in ("/login", "/signup", "/"):
            response = await browser.get(page)
            assert response.status_code in (200, 302, 303, 307) and "session" not in response.cookies
        async with httpx.AsyncClient(base_url=str(browser.base_url), cookies={"session": "a" * 64}) as made_up:
            assert "session" not in (await made_up.get("/login")).cookies  # a cookie naming no session
        assert len(redis.keys(f"{SESSION_NAMESPACE}:*")) == before
    finally:
        redis.close()
    await sign_up(browser)  # a log-in still starts one
    assert session_ids_stored(services, [browser.cookies["session"]]) == [browser.cookies["session"]]


async def test_a_session_ended_while_its_request_runs_stays_ended(
    browser: httpx.AsyncClient, other_browser: httpx.AsyncClient
) -> None:
    """A request of a session that a password change elsewhere ends while the request runs (here: its body
    still arriving) used to write the session back with its response, so the old cookie logged in again."""
    email = await sign_up(browser)
    assert (await log_in(other_browser, email)).status_code in (302, 303)
    token = await csrf(browser, "/dashboard/settings")
    stolen = browser.cookies["session"]
    sent, go_on = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"timezone=UTC"
        sent.set()
        await go_on.wait()
        yield b"&_csrf_token=" + token.encode()

    headers = {"content-type": "application/x-www-form-urlencoded", "x-csrftoken": token}
    in_flight = asyncio.create_task(browser.post("/dashboard/settings/tone", content=slow_body(), headers=headers))
    await asyncio.wait_for(sent.wait(), 30)
    await asyncio.sleep(0.3)  # the request is being handled: its session was loaded
    other_token = await csrf(other_browser, "/dashboard/settings")
    form = {"current_password": PASSWORD, "new_password": "brand new secret", "_csrf_token": other_token}
    done = await other_browser.post(
        "/dashboard/settings/password", data=form | {"new_password_confirm": "brand new secret"}
    )
    assert done.status_code == 200 and "1 other session(s) logged out" in done.text
    go_on.set()
    finished = await in_flight
    assert "session" not in finished.cookies  # nor cleared: the browser may hold a new session's cookie by now
    async with httpx.AsyncClient(base_url=str(browser.base_url), cookies={"session": stolen}) as stale:
        assert (await stale.get("/dashboard/settings")).status_code in (302, 303)
