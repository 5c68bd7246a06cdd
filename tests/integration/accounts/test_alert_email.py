"""A coach's alert e-mail is confirmed by its owner before any alert goes there: a new address waits as
``alert_email_pending``, the confirmation e-mail (a real local SMTP server, aiosmtpd) carries a signed, expiring
link, the link's page confirms it once, and alerts meanwhile keep going to the previous confirmed address."""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.fernet import Fernet

from app.accounts.alert_email import confirmation_token
from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.core.config import Settings
from app.core.runtime import Services
from app.core.security import SecretBox
from app.db.engine import tenant_session
from app.handoff.alerts import AlertService, crisis_event
from app.llm.registry import ProviderRegistry
from app.worker import build_workers, run_workers
from tests.conftest import Coach as ApiCoach
from tests.integration.handoff.test_alerts import (
    Mailbox,
    open_handoff,
    service,
    smtp,  # noqa: F401 - the local SMTP server fixture
)

CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')
INVALID = "This confirmation link is not valid"


async def set_alert_email(container: Container, coach_id: uuid.UUID, email: str) -> None:
    """Change the coach's ``alert_email`` through the settings service, as the API and the dashboard do."""
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.accounts.update_settings(uow, alert_email=email)


async def addresses(container: Container, coach_id: uuid.UUID) -> tuple[str | None, str | None]:
    """The coach's ``(alert_email, alert_email_pending)``."""
    async with tenant_session(container.sessionmaker, coach_id) as session:
        coach = await session.get(Coach, coach_id)
        assert coach is not None
        return coach.alert_email, coach.alert_email_pending


async def mailed_link(alerts: AlertService, mailbox: Mailbox, coach_id: uuid.UUID, email: str) -> str:
    """Send the confirmation e-mail and return its link as a path with its query (the server's host apart)."""
    assert await alerts.send_confirmation(coach_id, email) == "confirmation sent"
    recipients, message = mailbox.messages[-1]
    assert recipients == [email] and message["Subject"] == "Confirm your OpenCoach alert e-mail"
    body = message.get_content()
    link = re.search(r"https://coach\.example/alert-email/confirm\?token=\S+", body)
    assert link is not None, body
    parts = urlsplit(link[0])
    return f"{parts.path}?{parts.query}"


async def open_link(base_url: str, link: str) -> tuple[httpx.Response, httpx.Response]:
    """Open the link's page, then post its token as its "Confirm" button does (also for a refused link, whose page
    has no button: as a replayed request would): ``(page, answer)``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as browser:
        csrf = CSRF.search((await browser.get("/login")).text)
        assert csrf is not None
        page = await browser.get(link)
        token = parse_qs(urlsplit(link).query).get("token", [""])[0]
        return page, await browser.post("/alert-email/confirm", data={"token": token, "_csrf_token": csrf[1]})


async def test_a_new_address_gets_no_alert_until_its_owner_confirms_it_once(
    container: Container,
    settings: Settings,
    base_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    mailbox, port = smtp
    opened = await open_handoff(container, settings)
    alerts = service(container, settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    await set_alert_email(container, opened.coach_id, "typo@example.com")

    assert await addresses(container, opened.coach_id) == (None, "typo@example.com")
    assert await alerts.deliver(opened.coach_id, opened.handoff_id) == "no alert channel configured"
    assert mailbox.messages == []

    link = await mailed_link(alerts, mailbox, opened.coach_id, "typo@example.com")
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as browser:
        page = await browser.get(link)  # opening the link (a mail scanner does too) confirms nothing
    assert page.status_code == 200 and "typo@example.com" in page.text and "Confirm" in page.text
    assert await addresses(container, opened.coach_id) == (None, "typo@example.com")

    page, confirmed = await open_link(base_url, link)
    assert confirmed.status_code == 200 and "Confirmed" in confirmed.text, confirmed.text
    assert await addresses(container, opened.coach_id) == ("typo@example.com", None)
    assert await alerts.deliver(opened.coach_id, opened.handoff_id, event=crisis_event(uuid.uuid4())) == "email sent"
    assert mailbox.messages[-1][0] == ["typo@example.com"]

    # the link works once
    page, again = await open_link(base_url, link)
    assert page.status_code == 400 and INVALID in page.text
    assert again.status_code == 400 and INVALID in again.text
    assert await addresses(container, opened.coach_id) == ("typo@example.com", None)


async def test_the_alerts_worker_mails_the_link_a_settings_change_queued(
    container: Container,
    settings: Settings,
    services: Services,
    registry: ProviderRegistry,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    mailbox, port = smtp
    opened = await open_handoff(container, settings)
    await set_alert_email(container, opened.coach_id, "worker@example.com")
    mailing = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False})
    await run_workers(build_workers(mailing, services.database_url, services.redis_url, burst=True, registry=registry))
    assert [recipients for recipients, _ in mailbox.messages] == [["worker@example.com"]]
    assert "/alert-email/confirm?token=" in mailbox.messages[0][1].get_content()


async def test_changing_the_address_needs_a_new_confirmation_and_alerts_stay_with_the_confirmed_one(
    container: Container,
    settings: Settings,
    base_url: str,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    mailbox, port = smtp
    opened = await open_handoff(container, settings, alert_email="old@example.com")  # confirmed
    alerts = service(container, settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    await set_alert_email(container, opened.coach_id, "new@example.com")

    assert await addresses(container, opened.coach_id) == ("old@example.com", "new@example.com")
    assert await alerts.deliver(opened.coach_id, opened.handoff_id) == "email sent"
    assert [recipients for recipients, _ in mailbox.messages] == [["old@example.com"]]

    first = await mailed_link(alerts, mailbox, opened.coach_id, "new@example.com")
    await set_alert_email(container, opened.coach_id, "third@example.com")  # changed again before confirming
    assert await alerts.send_confirmation(opened.coach_id, "new@example.com") == (
        "not sent: the address no longer waits for confirmation"
    )
    _, refused = await open_link(base_url, first)
    assert refused.status_code == 400 and INVALID in refused.text
    assert await addresses(container, opened.coach_id) == ("old@example.com", "third@example.com")

    _, confirmed = await open_link(base_url, await mailed_link(alerts, mailbox, opened.coach_id, "third@example.com"))
    assert confirmed.status_code == 200, confirmed.text
    assert await addresses(container, opened.coach_id) == ("third@example.com", None)

    # the confirmed address again drops a pending one; clearing stops e-mail alerts at once
    await set_alert_email(container, opened.coach_id, "fourth@example.com")
    await set_alert_email(container, opened.coach_id, "third@example.com")
    assert await addresses(container, opened.coach_id) == ("third@example.com", None)
    await set_alert_email(container, opened.coach_id, "")
    assert await addresses(container, opened.coach_id) == (None, None)


async def test_an_expired_or_tampered_link_is_a_clear_400(
    container: Container, settings: Settings, base_url: str
) -> None:
    opened = await open_handoff(container, settings)
    await set_alert_email(container, opened.coach_id, "owner@example.com")
    box = SecretBox.from_settings(settings)
    valid = confirmation_token(box, opened.coach_id, "owner@example.com")
    middle = len(valid) // 2
    tampered = valid[:middle] + ("A" if valid[middle] != "A" else "B") + valid[middle + 1 :]
    links = {
        "expired": confirmation_token(box, opened.coach_id, "owner@example.com", at=int(time.time()) - 49 * 3600),
        "tampered": tampered,
        "another key": confirmation_token(SecretBox(Fernet.generate_key()), opened.coach_id, "owner@example.com"),
        "not a token": "not-a-token",
        "empty": "",
    }
    for what, token in links.items():
        page, answer = await open_link(base_url, f"/alert-email/confirm?token={token}")
        assert page.status_code == 400 and INVALID in page.text, what
        assert answer.status_code == 400 and INVALID in answer.text, what
    assert await addresses(container, opened.coach_id) == (None, "owner@example.com")


async def test_the_api_shows_the_pending_address_and_resends_its_link(
    http: httpx.AsyncClient, make_coach: object
) -> None:
    coach: ApiCoach = await make_coach("Alert E-mail Coach")  # type: ignore[operator]
    nothing = await http.post("/api/v1/settings/alert-email/resend", headers=coach.headers)
    assert nothing.status_code == 409 and "no alert e-mail is waiting" in nothing.json()["detail"]

    patched = await http.patch("/api/v1/settings", json={"alert_email": "me@example.com"}, headers=coach.headers)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["alert_email"], patched.json()["alert_email_pending"]) == (None, "me@example.com")
    resent = await http.post("/api/v1/settings/alert-email/resend", headers=coach.headers)
    assert resent.status_code == 202 and resent.json()["alert_email_pending"] == "me@example.com"


async def test_confirmation_e_mails_are_limited_per_coach(http: httpx.AsyncClient, make_coach: object) -> None:
    """``ALERT_EMAIL_CONFIRM_LIMIT`` (default 5 an hour): an account cannot make the server mail address after
    address; one over the limit is a 429 and changes nothing."""
    coach: ApiCoach = await make_coach("Busy Alert Coach")  # type: ignore[operator]
    for n in range(4):
        patched = await http.patch("/api/v1/settings", json={"alert_email": f"a{n}@example.com"}, headers=coach.headers)
        assert patched.status_code == 200, patched.text
    assert (await http.post("/api/v1/settings/alert-email/resend", headers=coach.headers)).status_code == 202

    refused = await http.patch("/api/v1/settings", json={"alert_email": "a9@example.com"}, headers=coach.headers)
    assert refused.status_code == 429 and "too many confirmation e-mails" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 0
    again = await http.post("/api/v1/settings/alert-email/resend", headers=coach.headers)
    assert again.status_code == 429
    settings = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert settings["alert_email_pending"] == "a3@example.com", "the refused change stored nothing"
    # an address that sends no e-mail (the one pending, or none) is no confirmation
    same = await http.patch("/api/v1/settings", json={"alert_email": "a3@example.com"}, headers=coach.headers)
    cleared = await http.patch("/api/v1/settings", json={"alert_email": ""}, headers=coach.headers)
    assert same.status_code == cleared.status_code == 200


async def test_confirmation_e_mails_to_one_address_are_limited_across_coaches(
    http: httpx.AsyncClient, make_coach: object
) -> None:
    """``ALERT_EMAIL_ADDRESS_LIMIT`` (default 3 an hour): the per-coach limit alone let many accounts mail-bomb one
    address. The fourth coach naming it (in capitals, with a ``+tag``: the same mailbox) gets a 429 and nothing
    changes; another address is still confirmed for that coach."""
    victim = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    for n in range(3):
        coach: ApiCoach = await make_coach(f"Bomber {n}")  # type: ignore[operator]
        patched = await http.patch("/api/v1/settings", json={"alert_email": victim}, headers=coach.headers)
        assert patched.status_code == 200, patched.text

    last: ApiCoach = await make_coach("Bomber 3")  # type: ignore[operator]
    tagged = victim.upper().replace("@", "+bomb@")
    refused = await http.patch("/api/v1/settings", json={"alert_email": tagged}, headers=last.headers)
    assert refused.status_code == 429, refused.text
    assert refused.json()["detail"].startswith("too many confirmation e-mails to this address: try again in")
    assert int(refused.headers["retry-after"]) > 0
    settings = (await http.get("/api/v1/settings", headers=last.headers)).json()
    assert settings["alert_email_pending"] is None, "the refused change stored nothing"
    own = await http.patch("/api/v1/settings", json={"alert_email": "bomber3@example.com"}, headers=last.headers)
    assert own.status_code == 200 and own.json()["alert_email_pending"] == "bomber3@example.com", own.text
