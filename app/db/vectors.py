"""pgvector's column types sent in its binary format, and the vector search expressions shared by the statements
that rank rows by embedding."""

from __future__ import annotations

import logging
from typing import Any

from pgvector.asyncpg import register_vector
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import ColumnElement, Dialect, bindparam
from sqlalchemy.orm import InstrumentedAttribute

log = logging.getLogger(__name__)


class _BoundAsIs:
    """Bound values go to the driver unconverted: the connection's codec encodes them. Each type still sets
    ``cache_ok`` itself: SQLAlchemy reads it from the class's own ``__dict__``."""

    def bind_processor(self, dialect: Dialect) -> Any:
        return None


class BinaryVector(_BoundAsIs, VECTOR):
    """pgvector's ``vector(n)`` whose bound values (a list of floats or a 1-d numpy array) go to asyncpg as they
    are, for the connection's binary codec (:func:`register_vector_codecs`) to send as pgvector's binary
    format: 4 bytes a dimension. pgvector's own SQLAlchemy type formats them as text first: a 384-d list took
    400 µs and 7.4 kB (``repr`` of each float), the binary encoding 20 µs and 1.5 kB, and PostgreSQL no
    longer parses the floats. Read values are lists of floats, as before."""

    cache_ok = True


class BinaryHalfVec(_BoundAsIs, HALFVEC):
    """pgvector's ``halfvec(n)`` (2-byte floats) bound as :class:`BinaryVector` binds ``vector``."""

    cache_ok = True


async def register_vector_codecs(connection: Any) -> bool:
    """Give asyncpg ``connection`` pgvector's binary codecs for ``vector``, ``halfvec`` and ``sparsevec``
    (``pgvector.asyncpg.register_vector``: the types are looked up, a round trip each). Returns ``False``,
    registering nothing, when the database has no ``vector`` type yet (the extension is created by the first
    migration): the caller tries again on a later checkout."""
    try:
        await register_vector(connection)
    except ValueError as exc:  # asyncpg: "unknown type: public.vector"
        log.debug("pgvector's codecs not registered: %s", exc)
        return False
    return True


def query_distance(column: InstrumentedAttribute[Any]) -> ColumnElement[float]:
    """Cosine distance (pgvector's ``<=>``: 0 for the same direction, up to 2) from ``column``'s vectors to the
    bound parameter ``query``, typed as ``column`` (a list of floats of its dimensions). For statements built
    once and run with ``{"query": vector}``: the parameter carries the column's vector type, so pgvector's
    SQLAlchemy type sends it."""
    return column.cosine_distance(bindparam("query", type_=column.type))  # type: ignore[no-any-return]
