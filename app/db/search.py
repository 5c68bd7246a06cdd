"""Substring search under row-level security: the database's search functions and their patterns.

``name ILIKE '%q%'`` is served by a trigram GIN index (``gin_trgm_ops``, migration 0027) for patterns of three
characters or more, but not for the app role: under row-level security PostgreSQL applies a condition through an
index only when its operator is LEAKPROOF, and ILIKE is not. So the app searches through SECURITY DEFINER
functions that filter by the current tenant themselves: ``inbox_search(pattern)`` (conversation ids, 0027) and
``client_search(pattern)`` (client ids, 0036).
"""

from __future__ import annotations


def contains_pattern(q: str) -> str:
    """``q`` as an ILIKE pattern (escape character ``\\``) matching it anywhere, its own ``%``, ``_`` and ``\\``
    taken literally: ``"50%_off"`` → ``"%50\\%\\_off%"``."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
