"""Reading a chunk's section heading back from a header stored before chunks recorded it (migration 0059), so a
rename re-heads it with the heading kept (:func:`app.rag.headers.heading_of`)."""

from __future__ import annotations

import pytest

from app.rag.chunking import chunk_header
from app.rag.headers import heading_of


@pytest.mark.parametrize(
    ("header", "title", "heading"),
    [
        ("Meditations — Book One", "Meditations", "Book One"),
        ("Meditations", "Meditations", ""),
        ("Marcus — Meditations — Book One", "Marcus — Meditations", "Book One"),  # a title holding the separator
        ("Old File Name — Book One", "Meditations", "Book One"),  # made with the file-name title
        ("Old File Name", "Meditations", ""),
        ("", "Meditations", ""),
    ],
)
def test_the_heading_is_what_follows_the_title_the_header_was_made_with(header: str, title: str, heading: str) -> None:
    assert heading_of(header, title) == heading


def test_a_header_rebuilt_from_its_heading_names_the_new_title_and_keeps_the_heading() -> None:
    old = chunk_header("Meditations", "Book One")
    assert chunk_header("My Stoic Notes", heading_of(old, "Meditations")) == "My Stoic Notes — Book One"
