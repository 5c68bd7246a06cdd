"""Litestar dependency providers shared by controllers."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State

from app.container import Container


def provide_container(state: State) -> Container:
    """The process container created at start-up (``app.state.container``)."""
    container: Any = state.container
    return container  # type: ignore[no-any-return]
