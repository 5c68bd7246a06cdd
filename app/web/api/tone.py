"""REST API of tone (:mod:`app.accounts.tone`). The coach sets the allowed intensities and the modes
(``/api/v1/tone``, coach key or dashboard session) and reads a client's consent log
(``/api/v1/tone/consents/{client_id}``); the client reads and sets their tone and gives or withdraws
consent (``/api/v1/widget/tone``, widget token or session cookie).

Bad input answers 400 with a JSON ``detail`` (an intensity outside the coach's range names the range; a mode
without consent says to consent first) and stores nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.params import JSONBody

from app.accounts.tone import client_view
from app.auth import CLIENT_DEPENDENCIES, COACH_DEPENDENCIES, TEXT_BODY_MAX_BYTES
from app.deps import ClientIdentityDep, ContainerDep, PathId, Uow


class ToneChoiceIn(msgspec.Struct, forbid_unknown_fields=True):
    """The client's choice: ``intensity`` 1–6 (within the coach's range) and/or ``mode`` (a mode key or
    ``"default"``); a field left out is unchanged."""

    intensity: int | None = None
    mode: Annotated[str, msgspec.Meta(min_length=1, max_length=30)] | None = None


class ConsentIn(msgspec.Struct, forbid_unknown_fields=True):
    """Consent to ``mode``'s consent text of ``version`` (from ``GET /api/v1/widget/tone``); ``confirmation``
    1, then 2 for the most intense mode."""

    mode: Annotated[str, msgspec.Meta(min_length=1, max_length=30)]
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    confirmation: int = 1


class ToneSettingsController(Controller):
    path = "/api/v1/tone"
    tags = ["tone"]
    dependencies = COACH_DEPENDENCIES

    @get("/")
    async def get_settings(self, uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """The coach's tone settings ``{"min", "max", "default", "modes": [{"key", "label", "description",
        "instruction", "most_intense"}]}``."""
        return await container.tone.settings(uow)

    @put("/", request_max_body_size=TEXT_BODY_MAX_BYTES)
    async def put_settings(self, data: JSONBody[dict[str, Any]], uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """Replace the tone settings (400 naming the field on bad input; nothing changed)."""
        return (await container.tone.update_settings(uow, data)).as_dict()

    @get("/consents/{client_id:str}")
    async def consent_log(self, client_id: PathId, uow: Uow, container: ContainerDep) -> list[dict[str, Any]]:
        """A client's tone consent log, oldest first (404 for another coach's client)."""
        return await container.tone.consent_log(uow, client_id)


class WidgetToneController(Controller):
    path = "/api/v1/widget/tone"
    tags = ["widget"]
    dependencies = CLIENT_DEPENDENCIES

    @get("/")
    async def get_tone(self, identity: ClientIdentityDep, uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """The client's tone, the coach's range and modes with their consent texts
        (:func:`app.accounts.tone.client_view`)."""
        return client_view(await container.tone.client_state(uow, identity.client_id, datetime.now(UTC)))

    @put("/")
    async def put_tone(
        self, data: JSONBody[ToneChoiceIn], identity: ClientIdentityDep, uow: Uow, container: ContainerDep
    ) -> dict[str, Any]:
        """Set intensity and/or mode. 400 (nothing stored): intensity outside the coach's range (the message
        names it), unknown mode, or a mode without valid consent."""
        now = datetime.now(UTC)
        choice = await container.tone.choose(uow, identity.client_id, now, intensity=data.intensity, mode=data.mode)
        return client_view(choice)

    @post("/consent", status_code=200)
    async def consent(
        self, data: JSONBody[ConsentIn], identity: ClientIdentityDep, uow: Uow, container: ContainerDep
    ) -> dict[str, Any]:
        """Consent to a mode (logged; switches to it). The most intense mode: ``confirmation`` 1 then 2. 400
        (nothing logged) for an unknown mode, an outdated ``version`` or a second confirmation without a
        first."""
        choice = await container.tone.consent(
            uow,
            identity.client_id,
            datetime.now(UTC),
            mode=data.mode,
            version=data.version,
            confirmation=data.confirmation,
        )
        return client_view(choice)

    @delete("/consent", status_code=200)
    async def withdraw(self, identity: ClientIdentityDep, uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """Withdraw consent to the current mode (logged) and go back to the default mode."""
        return client_view(await container.tone.withdraw(uow, identity.client_id, datetime.now(UTC)))
