"""What a reply may cite (:func:`app.chat.turn.state.cited_passages`), checked as a client sees it: for tests of the
real offline model, which cannot know whether its reply draws on a passage (whether it cites any at all)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from app.chat.turn.state import MIN_SHARED_WORDS
from app.handoff.signals import content_words


async def assert_cites_only_what_it_draws_on(
    http: httpx.AsyncClient, widget_token: str, reply: str, citations: Sequence[Mapping[str, Any]]
) -> None:
    """Every passage of ``citations`` (a reply's, as the client is shown them: ``markers``, and ``chunk_ids`` or
    the stored ``chunk_id``) is one the ``reply`` names by its number (``[n]``) or shares at least
    :data:`~app.chat.turn.state.MIN_SHARED_WORDS` content words with; the client reads each passage's text at
    ``GET /api/v1/widget/passages/{chunk_id}``."""
    named = {int(number) for number in re.findall(r"\[(\d{1,2})\]", reply)}
    said = content_words(reply)
    auth = {"Authorization": f"Bearer {widget_token}"}
    for citation in citations:
        markers = citation["markers"]
        passages = citation.get("chunk_ids") or [citation["chunk_id"]]
        assert markers and len(markers) == len(passages), citation
        for marker, chunk_id in zip(markers, passages, strict=True):
            if marker in named:
                continue
            passage = await http.get(f"/api/v1/widget/passages/{chunk_id}", headers=auth)
            assert passage.status_code == 200, passage.text
            shared = said & content_words(passage.json()["text"])
            assert len(shared) >= MIN_SHARED_WORDS, (reply, marker, passage.json()["text"], shared)
