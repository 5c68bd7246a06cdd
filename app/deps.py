"""Litestar dependency providers and the annotated types handlers declare them with."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from app.accounts.service import ClientIdentity
from app.container import Container

ContainerDep: TypeAlias = NamedDependency[Container]
CoachId: TypeAlias = NamedDependency[uuid.UUID]
"""The tenant of the request (from the API key or the dashboard session)."""
ClientIdentityDep: TypeAlias = NamedDependency[ClientIdentity]
PathId: TypeAlias = FromPath[uuid.UUID]
PathStr: TypeAlias = FromPath[str]


def provide_container(state: State) -> Container:
    """The process container created at start-up (``app.state.container``)."""
    container: Any = state.container
    return container  # type: ignore[no-any-return]
