"""Prompt assembly within the token budget; credentials and encryption at rest."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from app.chat.prompt import BUDGET_MARGIN, KEEP_RECENT, LINE_START, assemble_prompt
from app.chat.spotlight import DATA_CLOSE, DATA_OPEN, MARK, datamark
from app.chat.turn.decide import trim_to_sentence
from app.conversations.models import Message, SenderType
from app.core.security import SecretBox, hash_password, mask_secret, new_token, token_hash, verify_password
from app.memory.retrieval import MemoryContext
from app.rag.chunking import count_tokens
from app.rag.retrieval import RetrievedChunk


def _passage(i: int, words: int = 50) -> RetrievedChunk:
    return RetrievedChunk(
        uuid.uuid4(), uuid.uuid4(), "Meditations", i, f"passage {i} " + "virtue " * words, 0.5, 1 / (60 + i)
    )


def _history(n: int, words: int = 40) -> list[Message]:
    return [
        Message(
            sender_type=SenderType.CLIENT if i % 2 == 0 else SenderType.AI,
            text=f"turn {i} " + "feelings " * words,
        )
        for i in range(n)
    ]


SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact" / "corpus.jsonl"


def test_token_counts_of_the_pieces_between_line_starts_add_up_to_the_whole() -> None:
    """``LINE_START`` cuts: the prompt's token count is the sum of its pieces' counts, exactly (the budget search
    relies on it), on 5,000 texts mixing real abstracts (plain and datamarked) with the joints a prompt has:
    blank lines, CRLF, trailing spaces and tabs before newlines, punctuation before newlines, indented lines,
    contractions and digits after a newline, data block delimiters, emoji and the datamark character."""
    abstracts = SCIFACT.read_text(encoding="utf-8").splitlines()[:300]
    joints = ["\n", "\n\n", " \n", ".\n", "!\n\n", "\r\n", "\t\n", "\u00a0\n", "\n ", "\n\t", "  ", "[1] "]
    words = ["'s", "’re", "123", "(p. 3) ", "- ", "😀", MARK, DATA_OPEN.format(kind="passages"), DATA_CLOSE]
    rng = random.Random(7)
    for _ in range(5000):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.4:
                abstract = rng.choice(abstracts)
                start = rng.randrange(len(abstract))
                piece = abstract[start : start + rng.randint(1, 200)]
                parts.append(datamark(piece) if rng.random() < 0.5 else piece)
            else:
                parts.append(rng.choice(joints + words))
        text = "".join(parts)
        pieces = LINE_START.split(text)
        assert "".join(pieces) == text
        assert sum(count_tokens(piece) for piece in pieces) == count_tokens(text), repr(text)


def test_prompt_order_persona_passages_history_question() -> None:
    prompt = assemble_prompt(
        persona="You are calm.",
        passages=[_passage(1), _passage(2)],
        memory=MemoryContext(),
        history=_history(2),
        user_text="What now?",
        budget_tokens=4000,
    )
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system", "user", "assistant", "user"]
    system = prompt.messages[0]["content"]
    assert system.startswith("You are calm.")
    assert "[1] (Meditations,^p.^1)^passage^1" in system and "[2] (Meditations,^p.^2)" in system
    assert prompt.messages[-1]["content"] == "What now?"
    assert prompt.history_used == 2 and len(prompt.passages) == 2


def test_over_budget_drops_oldest_history_down_to_the_last_exchange_then_lowest_passages() -> None:
    """History is cut from the oldest end only down to ``KEEP_RECENT`` turns; then the lowest-ranked passages
    go (see the cut order in ``app.chat.prompt``)."""
    budget = 1000
    history = _history(10)
    prompt = assemble_prompt(
        persona="You are calm.",
        passages=[_passage(i, words=120) for i in range(1, 6)],
        memory=MemoryContext(),
        history=history,
        user_text="What now?",
        budget_tokens=budget,
    )
    assert prompt.estimated_tokens <= budget * BUDGET_MARGIN
    assert prompt.history_used == KEEP_RECENT, "older history goes before passages, the last exchange after"
    assert [m["content"] for m in prompt.messages[1:-1]] == [h.text for h in history[-KEEP_RECENT:]]
    kept = [p.page for p in prompt.passages]
    assert kept == list(range(1, len(kept) + 1)) and 0 < len(kept) < 5, "the best passages are kept"
    assert prompt.messages[-1]["content"] == "What now?"


@pytest.mark.parametrize("budget", [1000, 1300, 1700, 2200])
def test_the_cuts_stop_at_the_first_prompt_within_the_limit(budget: int) -> None:
    """The budget search (bisection over the cut order) keeps as much as fits: the same prompt with one more
    passage, counted without a limit, is over the limit."""
    passages, history = [_passage(i, words=120) for i in range(1, 8)], _history(10)

    def prompt(kept: list[RetrievedChunk], turns: list[Message], budget_tokens: int):  # type: ignore[no-untyped-def]
        return assemble_prompt(
            persona="You are calm.",
            passages=kept,
            memory=MemoryContext(),
            history=turns,
            user_text="What now?",
            budget_tokens=budget_tokens,
        )

    limit = int(budget * BUDGET_MARGIN)
    cut = prompt(passages, history, budget)
    assert cut.estimated_tokens <= limit
    assert cut.history_used == KEEP_RECENT and 1 <= len(cut.passages) < len(passages)
    one_more = prompt(passages[: len(cut.passages) + 1], history[-KEEP_RECENT:], 10**6)
    assert len(one_more.passages) == len(cut.passages) + 1
    assert one_more.estimated_tokens > limit


def test_history_is_trimmed_from_the_oldest_end() -> None:
    prompt = assemble_prompt(
        persona="p", passages=[], memory=MemoryContext(), history=_history(10), user_text="q", budget_tokens=500
    )
    assert 0 < prompt.history_used < 10
    first_kept = prompt.messages[1]["content"]
    assert first_kept.startswith(f"turn {10 - prompt.history_used} ")
    assert sum(count_tokens(m["content"]) for m in prompt.messages) <= 500


def test_password_hashes_are_argon2id_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong horse")
    assert not verify_password("not-a-hash", "correct horse")


def test_tokens_are_random_and_stored_as_sha256() -> None:
    a, b = new_token("oc"), new_token("oc")
    assert a != b and a.startswith("oc_") and len(a) == 46
    assert token_hash(a) == token_hash(a) and len(token_hash(a)) == 64 and a not in token_hash(a)


def test_secret_box_round_trip_and_wrong_key() -> None:
    box = SecretBox(Fernet.generate_key())
    sealed = box.encrypt("sk-live-abc123")
    assert b"sk-live" not in sealed
    assert box.decrypt(sealed) == "sk-live-abc123"
    with pytest.raises(ValueError, match="SECRET_KEY"):
        SecretBox(Fernet.generate_key()).decrypt(sealed)


def test_mask_secret_shows_at_most_the_last_four() -> None:
    assert mask_secret("sk-proj-1234567890abcd") == "sk-…abcd"
    assert mask_secret("short") == "…"


def test_a_reply_cut_by_the_token_limit_ends_at_its_last_sentence() -> None:
    assert trim_to_sentence('Breathe. Then say "I see." And then you can') == 'Breathe. Then say "I see."'
    assert trim_to_sentence("no sentence end here") == "no sentence end here"
