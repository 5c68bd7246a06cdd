"""Vector search expressions shared by the statements that rank rows by embedding."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, bindparam
from sqlalchemy.orm import InstrumentedAttribute


def query_distance(column: InstrumentedAttribute[Any]) -> ColumnElement[float]:
    """Cosine distance (pgvector's ``<=>``: 0 for the same direction, up to 2) from ``column``'s vectors to the
    bound parameter ``query``, typed as ``column`` (a list of floats of its dimensions). For statements built
    once and run with ``{"query": vector}``: the parameter carries the column's vector type, so pgvector's
    SQLAlchemy type sends it."""
    return column.cosine_distance(bindparam("query", type_=column.type))  # type: ignore[no-any-return]
