"""Keyset pagination ("seek method"; Winand, *SQL Performance Explained*, ch. 7): a list read a page at a time,
each page starting just after the last row of the one before, found by the sort key rather than an ``OFFSET``.
A page deep in a long list costs what the first does, and rows added meanwhile never push a row already
seen onto the next page (with ``OFFSET`` they shift every later page by one: a row shown twice or skipped).

A list sorted by a time then the row id (the id breaks ties between rows of the same instant) is paged with
:class:`PageRequest` (its :meth:`~PageRequest.apply` adds the ``WHERE``, ``ORDER BY`` and ``LIMIT`` to a
statement, :meth:`~PageRequest.page` cuts the result); the position travels as an opaque, URL-safe cursor
(:func:`encode_cursor`, which other sort keys, like the inbox's, use too).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from sqlalchemy import ColumnExpressionArgument, Select, asc, desc, tuple_

from app.core.errors import InvalidInput

DEFAULT_PAGE_SIZE = 50
"""Rows of one page unless the reader asks for another ``limit``."""
MAX_PAGE_SIZE = 200
"""Most rows one page may hold (the largest ``limit`` a reader may ask for)."""
BAD_CURSOR = "cursor is not a valid cursor of this list: use the one the previous page gave"

T = TypeVar("T")
S = TypeVar("S", bound="Select[*tuple[Any, ...]]")


def encode_cursor(values: Sequence[str | int]) -> str:
    """``values`` (JSON scalars) as an opaque URL-safe string: base64url of their JSON array, no padding."""
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def decode_cursor(value: str, length: int) -> list[Any]:
    """The ``length`` values :func:`encode_cursor` wrote into ``value``. Raises ``ValueError`` for anything else
    (a truncated or edited cursor)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(BAD_CURSOR) from exc
    if not isinstance(values, list) or len(values) != length:
        raise ValueError(BAD_CURSOR)
    return values


def decode_cursor_time(value: Any) -> datetime:
    """A cursor's time, ISO 8601 with its UTC offset, as UTC (the database compares it in UTC). Raises
    ``ValueError`` or ``TypeError`` for anything else: no such time, no offset, or outside the years 1–9999 once
    in UTC (``0001-01-01T00:00:00+05:00``), which the driver could not send."""
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValueError(BAD_CURSOR)
    try:
        return at.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(BAD_CURSOR) from exc


@dataclass(frozen=True)
class Keyset:
    """A row's place in a list sorted by ``at`` (a timezone-aware time), then ``id``."""

    at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        """The position as a cursor (:func:`encode_cursor` of ``[ISO time, id]``)."""
        return encode_cursor([self.at.isoformat(), str(self.id)])

    @classmethod
    def decode(cls, value: str) -> Keyset:
        """The position :meth:`encode` wrote. Raises ``InvalidInput`` for anything else (a truncated or edited
        cursor, a time :func:`decode_cursor_time` refuses)."""
        try:
            at, id_ = decode_cursor(value, 2)
            return cls(decode_cursor_time(at), uuid.UUID(id_))
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidInput(BAD_CURSOR) from exc


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its ``items`` and the position of the page after it (``None``: this is the last)."""

    items: list[T]
    next: Keyset | None


@dataclass(frozen=True)
class PageRequest:
    """Which page of a list a reader asked for: the rows after ``after`` (``None``: from the top), at most
    ``limit`` of them (``None``: every row, :data:`EVERY_ROW`: for the app's own reads of a work queue, never
    from a request). Build one from a request's query with :meth:`parse`."""

    after: Keyset | None = None
    limit: int | None = DEFAULT_PAGE_SIZE

    @classmethod
    def parse(cls, cursor: str | None, limit: int | None) -> PageRequest:
        """From a request's ``cursor`` (the previous page's, empty or ``None``: the first page) and ``limit``
        (``None``: :data:`DEFAULT_PAGE_SIZE`). Raises ``InvalidInput`` for a bad cursor or a limit outside
        1–:data:`MAX_PAGE_SIZE`."""
        if limit is not None and not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        return cls(Keyset.decode(cursor) if cursor else None, DEFAULT_PAGE_SIZE if limit is None else limit)

    @property
    def fetch(self) -> int | None:
        """How many rows the page's statement reads: ``limit`` + 1 (the one more tells :meth:`page` whether a
        next page exists); ``None`` (every row) without a limit."""
        return None if self.limit is None else self.limit + 1

    def apply(
        self,
        stmt: S,
        at: ColumnExpressionArgument[datetime],
        id_: ColumnExpressionArgument[uuid.UUID],
        *,
        newest_first: bool,
    ) -> S:
        """``stmt`` ordered by ``at`` then ``id_`` (both descending with ``newest_first``, else ascending), from
        just after :attr:`after`, ``limit`` + 1 rows (the one more tells :meth:`page` whether a next page
        exists; every row without a limit). The position is one row-value comparison, ``(at, id) < (:at, :id)``,
        which an index on ``(…, at, id)`` answers by a range scan."""
        if self.after is not None:
            key, mark = tuple_(at, id_), tuple_(self.after.at, self.after.id)
            stmt = stmt.where(key < mark if newest_first else key > mark)
        order = (desc(at), desc(id_)) if newest_first else (asc(at), asc(id_))
        stmt = stmt.order_by(*order)
        return stmt if self.fetch is None else stmt.limit(self.fetch)

    def page(self, rows: Sequence[T], key: Callable[[T], Keyset]) -> Page[T]:
        """The page of ``rows`` (the result of a statement :meth:`apply` built): the first ``limit`` of them, and
        the position of the last one when there were more (all of them, and no next page, without a limit)."""
        if self.limit is None or len(rows) <= self.limit:
            return Page(list(rows), None)
        items = list(rows[: self.limit])
        return Page(items, key(items[-1]))


EVERY_ROW = PageRequest(limit=None)
"""Every row of a list in its order, in one page (a work queue the app shows whole)."""


def page_query(page: PageRequest, position: Keyset | None, **filters: str) -> str | None:
    """The URL query (``a=1&b=2``, encoded) of the page that starts after ``position`` in the list ``page`` was
    read from: its non-empty ``filters``, the reader's ``limit`` when not the default, and the ``cursor``;
    ``None`` without a position (no such page: the last page's next, the first page's own cursor)."""
    if position is None:
        return None
    query = {name: value for name, value in filters.items() if value}
    if page.limit != DEFAULT_PAGE_SIZE:
        query["limit"] = str(page.limit)
    return urlencode(query | {"cursor": position.encode()})
