"""Client memory without a database: prompt assembly with memory under the token budget (and its documented
cut order), the recall score, profile list merging, the strict output schema and how it goes over the wire
to OpenAI's Structured Outputs, and the transcript windows of the memory jobs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import respx

from app.chat.prompt import (
    BUDGET_MARGIN,
    KEEP_PASSAGES,
    KEEP_RECENT,
    MEMORY_HEADER,
    PER_MESSAGE_OVERHEAD,
    assemble_prompt,
)
from app.chat.spotlight import HIERARCHY, datamark
from app.chat.turn.generate import prompt_budget
from app.conversations.models import Message, SenderType
from app.core.config import Settings
from app.llm.base import ChatMessage, ProviderError
from app.llm.openai_compat import OpenAIChatProvider
from app.llm.schema import RETRY_TEMPERATURES, InvalidModelOutput, generate_structured, output_schema
from app.memory.models import InsightKind
from app.memory.profile import PROFILE_LIST_CAP, PROFILE_LIST_MAX, _merge_list
from app.memory.prompts import INSIGHT_ECHOES, PROFILE_ECHOES, SUMMARY_ECHOES, echoes
from app.memory.retrieval import (
    HALF_LIFE_DAYS,
    RECENCY_SHARE,
    MemoryContext,
    MemoryItem,
    recency_weight,
    without_repeats,
)
from app.memory.schemas import InsightExtraction, MatchDecision, ProfileOutput, SessionSummaryOutput
from app.memory.transcript import (
    LINE_PREFIX_TOKENS,
    TRANSCRIPT_STAMP,
    Grounding,
    content_words,
    copies,
    format_messages,
    shares_words,
    windows,
)
from app.rag.chunking import count_tokens
from app.rag.retrieval import RetrievedChunk, rrf_fuse
from tests.openai_wire import mock_openai, openai_completion, openai_error

# --- prompt assembly with memory ------------------------------------------------------------------------

PERSONA = "You are the calm AI assistant of Coach Rivera."
QUESTION = "What should I focus on this week?"


def _passage(i: int, words: int = 60) -> RetrievedChunk:
    return RetrievedChunk(uuid.uuid4(), uuid.uuid4(), "Meditations", i, f"passage {i} " + "virtue " * words, 0.5, 0.01)


def _history(n: int, words: int = 45) -> list[Message]:
    return [
        Message(sender_type=SenderType.CLIENT if i % 2 == 0 else SenderType.AI, text=f"turn {i} " + "feelings " * words)
        for i in range(n)
    ]


def _item(rank: int, words: int = 25) -> MemoryItem:
    """Memory item ``rank`` (0 is the best); alternates insights and summaries, scores strictly descending."""
    layer = "insight" if rank % 2 == 0 else "summary"
    label = "goal" if layer == "insight" else "session of 2026-10-01"
    return MemoryItem(
        layer, uuid.uuid4(), label, f"memory {rank} " + "marathon " * words, 1.0 - rank / 100, 0.5, (uuid.uuid4(),)
    )


def _profile(n: int) -> list[str]:
    return [f"Profile line {i}: " + "prefers short concrete plans " * 4 for i in range(n)]


N_HISTORY, N_ITEMS, N_PASSAGES, N_PROFILE = 14, 12, 6, 5
HISTORY = _history(N_HISTORY)
ITEMS = [_item(r) for r in range(N_ITEMS)]
PASSAGES = [_passage(i) for i in range(1, N_PASSAGES + 1)]
PROFILE = _profile(N_PROFILE)


def _assemble(budget: int, **overrides: Any) -> Any:
    args: dict[str, Any] = {
        "persona": PERSONA,
        "passages": PASSAGES,
        "memory": MemoryContext(list(PROFILE), list(ITEMS)),
        "history": HISTORY,
        "user_text": QUESTION,
        "budget_tokens": budget,
    }
    args.update(overrides)
    return assemble_prompt(**args)


def _recount(messages: list[ChatMessage]) -> int:
    return sum(count_tokens(msg["content"]) + PER_MESSAGE_OVERHEAD for msg in messages)


def _check_shape(prompt: Any) -> None:
    """What survived is always a best-first prefix (items, passages, profile) or the newest suffix (L1)."""
    system = prompt.messages[0]["content"]
    assert system.startswith(PERSONA)
    assert prompt.messages[-1] == {"role": "user", "content": QUESTION}
    assert [i.id for i in prompt.memory_items] == [i.id for i in ITEMS[: len(prompt.memory_items)]]
    assert [p.chunk_id for p in prompt.passages] == [p.chunk_id for p in PASSAGES[: len(prompt.passages)]]
    turns = prompt.messages[1:-1]
    assert len(turns) == prompt.history_used
    assert [t["content"] for t in turns] == [h.text for h in HISTORY[N_HISTORY - prompt.history_used :]]
    for line in PROFILE[: prompt.profile_lines]:
        assert datamark(line) in system
    for line in PROFILE[prompt.profile_lines :]:
        assert datamark(line) not in system
    for item in ITEMS:
        assert (datamark(item.line()) in system) == (item in prompt.memory_items)
    assert (MEMORY_HEADER in system) == bool(prompt.memory_items or prompt.profile_lines)
    assert prompt.estimated_tokens == _recount(prompt.messages)


def _check_cut_order(prompt: Any) -> None:
    """The documented order: L1 down to KEEP_RECENT → passages down to KEEP_PASSAGES → memory items → passages
    down to one → profile lines → the last passage → the remaining L1 turns. A later cut implies every earlier
    one is exhausted."""
    h, i, p, f = prompt.history_used, len(prompt.memory_items), len(prompt.passages), prompt.profile_lines
    if p < N_PASSAGES:
        assert h <= KEEP_RECENT, "passages are cut only after L1 is down to KEEP_RECENT turns"
    if i < N_ITEMS:
        assert h <= KEEP_RECENT and p <= KEEP_PASSAGES, "memory is cut only after the weaker passages"
    if p < KEEP_PASSAGES:
        assert i == 0 and h <= KEEP_RECENT, "the best passages are cut only after every memory item"
    if f < N_PROFILE:
        assert p <= 1 and i == 0 and h <= KEEP_RECENT, "the profile goes only when one passage is left"
    if p == 0:
        assert f == 0, "the last passage goes after the whole profile"
    if h < KEEP_RECENT:
        assert p == 0 and f == 0 and i == 0, "the last two turns go last"


def test_every_budget_fits_and_cuts_follow_the_documented_order() -> None:
    """Sweeping the budget from tiny to ample: each prompt fits within budget × BUDGET_MARGIN (whenever the
    persona and the new message alone fit), the survivors are best-first prefixes / the newest turns, the
    cut order holds, every stage of it is reached, and a bigger budget never keeps less of anything."""
    floor = _recount(
        [{"role": "system", "content": f"{PERSONA}\n\n{HIERARCHY}"}, {"role": "user", "content": QUESTION}]
    )  # nothing left to cut: the persona, the instruction hierarchy and the message
    stages: set[str] = set()
    previous: tuple[int, int, int, int] | None = None
    for budget in range(40, 6000, 20):
        prompt = _assemble(budget)
        _check_shape(prompt)
        _check_cut_order(prompt)
        limit = budget * BUDGET_MARGIN
        if floor <= limit:
            assert prompt.estimated_tokens <= limit, budget
        else:
            assert prompt.estimated_tokens == floor
        h, i, p, f = prompt.history_used, len(prompt.memory_items), len(prompt.passages), prompt.profile_lines
        state = (h, i, p, f)
        if previous is not None:
            assert all(now >= before for now, before in zip(state, previous, strict=True)), (budget, state, previous)
        previous = state
        if KEEP_RECENT < h < N_HISTORY:
            stages.add("history")
        if h == KEEP_RECENT and i == N_ITEMS and KEEP_PASSAGES < p < N_PASSAGES:
            stages.add("weaker passages")
        if h == KEEP_RECENT and p == KEEP_PASSAGES and 0 < i < N_ITEMS:
            stages.add("items")
        if i == 0 and p == 1 < KEEP_PASSAGES:
            stages.add("passages")
        if p == 1 and 0 < f < N_PROFILE:
            stages.add("profile")
        if p == 0 and f == 0 and h == KEEP_RECENT:
            stages.add("last passage")
        if h == 1:
            stages.add("last turns")
        if state == (N_HISTORY, N_ITEMS, N_PASSAGES, N_PROFILE):
            stages.add("everything")
    assert stages == {
        "history",
        "weaker passages",
        "items",
        "passages",
        "profile",
        "last passage",
        "last turns",
        "everything",
    }


def test_long_history_and_many_memory_items_fit_the_apps_budget() -> None:
    """The app's own budget (2048-token context minus a 256-token reply) with 40 long turns, 30 memory items,
    8 profile lines and 5 passages: the prompt fits, keeps the two newest turns, and the best memory items."""
    history, items, profile = _history(40, words=60), [_item(r, words=30) for r in range(30)], _profile(8)
    budget = 2048 - 256
    prompt = assemble_prompt(  # datamarked text costs ~1.8x its plain tokens: 3 passages, not 5, leave room
        persona=PERSONA,
        passages=PASSAGES[:3],
        memory=MemoryContext(profile, items),
        history=history,
        user_text=QUESTION,
        budget_tokens=budget,
    )
    assert prompt.estimated_tokens <= budget * BUDGET_MARGIN
    assert prompt.estimated_tokens == _recount(prompt.messages)
    assert prompt.history_used == KEEP_RECENT
    assert [m["content"] for m in prompt.messages[1:-1]] == [h.text for h in history[-KEEP_RECENT:]]
    assert 0 < len(prompt.memory_items) < 30
    assert prompt.memory_items == items[: len(prompt.memory_items)], "the lowest-scored items are cut first"
    assert len(prompt.passages) == KEEP_PASSAGES, "the weakest passage goes before memory items"
    assert prompt.profile_lines == 8, "the best passages and the profile outlast memory items"


def test_prompt_places_profile_and_memory_before_passages_and_reports_attribution() -> None:
    """System message: persona, the memory block (header, profile lines, items best first), then grounding
    with the passages; ``memory_used`` splits the ids by layer and flags the profile."""
    items = ITEMS[:3]
    prompt = _assemble(8000, memory=MemoryContext(PROFILE[:2], items), passages=PASSAGES[:2], history=HISTORY[-2:])
    system = prompt.messages[0]["content"]
    positions = [
        system.index(PERSONA),
        system.index(MEMORY_HEADER),
        system.index(datamark(PROFILE[0])),
        system.index(datamark(PROFILE[1])),
        *(system.index(datamark(item.line())) for item in items),
        system.index("[1] (Meditations,^p.^1)^passage^1"),
        system.index("[2] (Meditations,^p.^2)^passage^2"),
    ]
    assert positions == sorted(positions)
    assert items[0].line() == f"- [goal] {items[0].text}"
    assert prompt.memory_used() == {
        "message_ids": [],
        "insight_ids": [str(items[0].id), str(items[2].id)],
        "summary_ids": [str(items[1].id)],
        "profile": True,
    }


def test_without_memory_there_is_no_memory_block() -> None:
    prompt = _assemble(8000, memory=MemoryContext())
    assert MEMORY_HEADER not in prompt.messages[0]["content"]
    assert prompt.memory_used() == {"message_ids": [], "insight_ids": [], "summary_ids": [], "profile": False}


# --- recall score ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_days", "weight"),
    [(0.0, 1.0), (HALF_LIFE_DAYS, 0.75), (2 * HALF_LIFE_DAYS, 0.625), (15.0, 0.5 + 0.5 * 2**-0.5), (3650.0, 0.5)],
)
def test_recency_weight_with_share_half_halves_the_extra_weight_every_30_days(age_days: float, weight: float) -> None:
    assert recency_weight(age_days, 0.5) == pytest.approx(weight, abs=1e-9)


def test_recency_weight_never_exceeds_one_nor_drops_below_one_minus_share() -> None:
    assert recency_weight(-5.0) == 1.0, "a timestamp in the future (clock skew) counts as now"
    assert all(1 - RECENCY_SHARE < recency_weight(d) <= 1.0 for d in (0, 1, 10, 100, 1000))
    assert recency_weight(10.0) > recency_weight(100.0), "newer ranks higher, all else equal"
    assert recency_weight(1000.0, 0.0) == 1.0, "share 0 is no recency prior"


def test_rrf_fuse_sums_weighted_reciprocal_ranks() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    fused = rrf_fuse([[a, b], [b, c]], [1.0, 5.0], k=20)
    assert fused[a] == pytest.approx(1 / 21)
    assert fused[b] == pytest.approx(1 / 22 + 5 / 21)
    assert fused[c] == pytest.approx(5 / 22)
    assert sorted(fused, key=fused.__getitem__, reverse=True) == [b, c, a], "found by both arms wins"


def test_rrf_fuse_of_no_rankings_is_empty_and_weights_must_match() -> None:
    assert rrf_fuse([[], []], [1.0, 1.0], k=20) == {}
    with pytest.raises(ValueError):
        rrf_fuse([[uuid.uuid4()]], [1.0, 2.0], k=20)


def _recalled(
    layer: str, sources: list[uuid.UUID], item_id: uuid.UUID | None = None, text: str | None = None
) -> MemoryItem:
    """A recalled item; its text is its own unless ``text`` is given."""
    item_id = item_id or uuid.uuid4()
    return MemoryItem(layer, item_id, "2026-01-01, x", text or f"text {item_id}", 1.0, 0.5, tuple(sources))


def test_without_repeats_shows_no_fact_twice() -> None:
    m1, m2, m3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    episode_m1 = _recalled("message", [m1], m1)
    insight = _recalled("insight", [m1, m2])
    episode_m2 = _recalled("message", [m2], m2)
    episode_m3 = _recalled("message", [m3], m3)
    kept = without_repeats([episode_m1, insight, episode_m2, episode_m3], limit=10)
    assert kept == [insight, episode_m3], "the insight stands for m1 and m2"


def test_without_repeats_shows_the_same_text_once_and_gives_the_other_slots_to_other_memories() -> None:
    """The same AI sentence, sent in seven sessions (seven episodes), and the same handoff notice twice: each
    shown once, by the best-ranked copy, whatever its case and spacing; the slots left go to the next items."""
    sentence = "Let's take it one step at a time."
    texts = [sentence, *["  let's TAKE it one step\nat a time.  "] * 6]
    copies = [_recalled("message", [m], m, text) for m, text in ((uuid.uuid4(), text) for text in texts)]
    notices = [_recalled("message", [m], m, "A coach will join you shortly.") for m in (uuid.uuid4(), uuid.uuid4())]
    others = [_recalled("message", [m], m) for m in (uuid.uuid4() for _ in range(10))]
    kept = without_repeats([copies[0], notices[0], *copies[1:], notices[1], *others], limit=10)
    assert kept == [copies[0], notices[0], *others[:8]]
    assert len({item.id for item in kept}) == 10, "ten different memories, each attributed once"


def test_without_repeats_lets_an_insight_with_the_same_words_replace_the_message_it_cites() -> None:
    """An insight worded as the message it cites stands for it (the message goes, the insight is shown); a second
    copy of that message, not cited, is not shown beside it."""
    m1, m2 = uuid.uuid4(), uuid.uuid4()
    said = "I want to run a 10k in March."
    message, copy = _recalled("message", [m1], m1, said), _recalled("message", [m2], m2, said)
    insight = _recalled("insight", [m1], text=said)
    assert without_repeats([message, insight, copy], limit=10) == [insight]


def test_without_repeats_keeps_insights_and_summaries_citing_the_same_message_and_stops_at_the_limit() -> None:
    m1, m2, m3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    insight = _recalled("insight", [m1])
    summary = _recalled("summary", [m1, m2])
    episode = _recalled("message", [m3], m3)
    assert without_repeats([_recalled("message", [m2], m2), summary], limit=10) == [summary]
    assert without_repeats([insight, summary, episode], limit=10) == [insight, summary, episode]
    assert without_repeats([insight, summary, episode], limit=2) == [insight, summary]


# --- profile list merging -------------------------------------------------------------------------------


def test_merge_list_appends_only_new_entries_case_insensitively() -> None:
    assert _merge_list(["Short answers", "Walks"], ["short ANSWERS", "Voice notes"]) == [
        "Short answers",
        "Walks",
        "Voice notes",
    ]
    assert _merge_list([], []) == []
    assert _merge_list(["a b"], []) == ["a b"]


def test_merge_list_does_not_duplicate_within_one_batch() -> None:
    assert _merge_list(["Walks"], ["Voice notes", "voice notes", "VOICE NOTES"]) == ["Walks", "Voice notes"]


def test_merge_list_keeps_the_newest_entries_up_to_the_cap() -> None:
    current = [f"old {i}" for i in range(PROFILE_LIST_CAP)]
    merged = _merge_list(current, ["new 1", "new 2"])
    assert len(merged) == PROFILE_LIST_CAP
    assert merged[-2:] == ["new 1", "new 2"] and merged[0] == "old 2", "the oldest entries drop out"


def test_merge_list_never_caps_the_coachs_own_lines() -> None:
    """The coach may save 20 lines a list; the update job's cap of 8 applies to the lines sessions gave."""
    coachs = [f"coach {i}" for i in range(15)]
    merged = _merge_list(coachs, ["new 1", "new 2"], frozenset(line.casefold() for line in coachs))
    assert merged == [*coachs, "new 1", "new 2"]
    learnt = [f"learnt {i}" for i in range(PROFILE_LIST_CAP)]
    merged = _merge_list(["coach 0", *learnt], ["new 1"], frozenset({"coach 0"}))
    assert merged == ["coach 0", *learnt[1:], "new 1"]
    # the whole list stays within what the coach may save (the profile form sends it back whole)
    coachs = [f"coach {i}" for i in range(PROFILE_LIST_MAX - 2)]
    merged = _merge_list([*coachs, *learnt[:2]], ["new 1"], frozenset(line.casefold() for line in coachs))
    assert merged == [*coachs, learnt[1], "new 1"]
    full = [f"coach {i}" for i in range(PROFILE_LIST_MAX)]
    assert _merge_list(full, ["new 1"], frozenset(line.casefold() for line in full)) == full


# --- output schema and Structured Outputs on the wire ---------------------------------------------------


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("model", [SessionSummaryOutput, InsightExtraction, MatchDecision, ProfileOutput])
def test_output_schema_is_in_strict_form(model: type) -> None:
    """Every object lists all its properties as required and forbids others; no titles, defaults or string
    lengths anywhere (OpenAI strict mode rejects them); item counts and number ranges stay."""
    schema = output_schema(model)
    objects = [node for node in _walk(schema) if node.get("type") == "object"]
    assert objects
    for node in objects:
        assert node["required"] == list(node["properties"])
        assert node["additionalProperties"] is False
    for node in _walk(schema):
        assert not {"title", "default", "minLength", "maxLength"} & set(node), node
    assert output_schema(model) == schema, "deterministic"


def test_output_schema_keeps_enums_item_limits_and_ranges() -> None:
    schema = output_schema(InsightExtraction)
    assert schema["properties"]["insights"]["maxItems"] == 6
    insight = schema["$defs"]["ExtractedInsight"]["properties"]
    assert insight["kind"]["enum"] == list(InsightKind.ALL), "the schema's kinds are the stored kinds"
    assert insight["status"]["enum"] == ["active", "achieved", "dropped"]
    assert (insight["importance"]["minimum"], insight["importance"]["maximum"]) == (0, 10)
    assert insight["evidence"]["maxItems"] == 5


BASE_URL = "https://api.openai.test/v1"
API_KEY = "sk-proj-unit-test-0123456789abcdefWXYZ"
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "You keep a coach's notes. Summarise this chat session with the client Ana."},
    {"role": "user", "content": "[1] Ana (2026-11-20 09:14): I start my new job on Monday and I'm nervous."},
]
SUMMARY = {
    "summary": "Ana starts a new job on Monday and feels nervous about the first week.",
    "topics": ["new job"],
    "insights": ["Ana gets nervous before big changes"],
    "action_items": ["Plan the first morning"],
    "emotional_state": "nervous but hopeful",
}


@pytest.fixture
def openai_api() -> Iterator[respx.MockRouter]:
    with mock_openai() as router:
        yield router


def _provider() -> OpenAIChatProvider:
    return OpenAIChatProvider(model="gpt-4o-mini", api_key=API_KEY, base_url=BASE_URL, timeout=10, deadline=30)


async def test_structured_output_request_is_a_strict_json_schema_and_the_answer_is_validated(
    openai_api: respx.MockRouter,
) -> None:
    """One non-streamed Chat Completion with ``response_format: {"type": "json_schema", "json_schema": {name,
    schema, strict: true}}``; the schema is the strict form without string lengths; the recorded
    ``chat.completion`` answer comes back as the validated model."""
    route = openai_api.post(f"{BASE_URL}/chat/completions").mock(return_value=openai_completion(json.dumps(SUMMARY)))

    result = await generate_structured(_provider(), MESSAGES, SessionSummaryOutput, max_tokens=450)

    assert result == SessionSummaryOutput(**SUMMARY)
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = json.loads(request.content)
    assert not body.get("stream"), "structured output is not streamed"
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == MESSAGES
    assert body["max_tokens"] == 450
    assert body["temperature"] == RETRY_TEMPERATURES[0]
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    json_schema = response_format["json_schema"]
    assert json_schema["name"] == "SessionSummaryOutput"
    assert json_schema["strict"] is True
    sent = json_schema["schema"]
    assert sent == output_schema(SessionSummaryOutput)
    assert sent["additionalProperties"] is False
    assert sent["required"] == ["summary", "topics", "insights", "action_items", "emotional_state"]
    assert not any({"minLength", "maxLength"} & set(node) for node in _walk(sent))
    assert sent["properties"]["topics"]["maxItems"] == 6


async def test_invalid_answers_are_retried_at_higher_temperatures_then_rejected(openai_api: respx.MockRouter) -> None:
    """A cut-off answer (``finish_reason: "length"``), then two out-of-schema ones (too short a summary; too
    many topics — lengths the schema on the wire no longer carries): three samples, one per retry
    temperature, then ``InvalidModelOutput``."""
    cut_off = json.dumps(SUMMARY)[:60]
    too_short = json.dumps({**SUMMARY, "summary": "Nervous."})
    too_many = json.dumps({**SUMMARY, "topics": [f"topic {i}" for i in range(9)]})
    route = openai_api.post(f"{BASE_URL}/chat/completions").mock(
        side_effect=[
            openai_completion(cut_off, finish_reason="length"),
            openai_completion(too_short),
            openai_completion(too_many),
        ]
    )

    with pytest.raises(InvalidModelOutput, match=r"SessionSummaryOutput: 3 answers failed validation .*topics"):
        await generate_structured(_provider(), MESSAGES, SessionSummaryOutput, max_tokens=450)

    assert route.call_count == 3
    temperatures = [json.loads(call.request.content)["temperature"] for call in route.calls]
    assert temperatures == list(RETRY_TEMPERATURES)


async def test_a_refusal_is_a_provider_error_not_an_answer(openai_api: respx.MockRouter) -> None:
    route = openai_api.post(f"{BASE_URL}/chat/completions").mock(
        return_value=openai_completion(None, refusal="I'm sorry, I can't help with that request.")
    )
    with pytest.raises(ProviderError, match="can't help"):
        await generate_structured(_provider(), MESSAGES, SessionSummaryOutput, max_tokens=450)
    assert route.call_count == 1, "a refusal is not retried as invalid output"


async def test_an_api_error_is_a_provider_error(openai_api: respx.MockRouter) -> None:
    openai_api.post(f"{BASE_URL}/chat/completions").mock(
        return_value=openai_error(
            400,
            "Invalid schema for response_format 'SessionSummaryOutput': 'minLength' is not permitted.",
            "invalid_request_error",
            None,
        )
    )
    with pytest.raises(ProviderError, match="BadRequestError"):
        await generate_structured(_provider(), MESSAGES, MatchDecision, max_tokens=16)


# --- transcript windows ---------------------------------------------------------------------------------


def _cost(message: Message) -> int:
    return count_tokens(message.text) + LINE_PREFIX_TOKENS


def test_windows_are_consecutive_runs_within_the_token_limit() -> None:
    messages = [
        Message(
            sender_type=SenderType.CLIENT if i % 3 else SenderType.AI, text=f"message {i} " + "word " * (i * 7 % 40)
        )
        for i in range(30)
    ]
    limit = 150
    parts = windows(messages, limit)
    assert [msg for part in parts for msg in part] == messages, "every message once, in order"
    for part in parts:
        assert part and sum(_cost(msg) for msg in part) <= limit
    for part, following in zip(parts, parts[1:], strict=False):
        assert sum(_cost(msg) for msg in part) + _cost(following[0]) > limit, "a window is cut only when full"


def test_a_message_longer_than_the_limit_gets_a_window_of_its_own() -> None:
    short, long = (
        Message(sender_type=SenderType.CLIENT, text="hi"),
        Message(sender_type=SenderType.CLIENT, text="word " * 300),
    )
    assert windows([short, long, short], 100) == [[short], [long], [short]]
    assert windows([], 100) == []


def test_format_messages_numbers_and_labels_the_speakers() -> None:
    at = datetime(2026, 11, 20, 9, 14, tzinfo=UTC)
    messages = [
        Message(sender_type=SenderType.CLIENT, text="I start Monday.", created_at=at),
        Message(sender_type=SenderType.AI, text="How do you feel?", created_at=at),
        Message(sender_type=SenderType.HUMAN_COACH, text="Call me after.", created_at=at),
    ]
    assert format_messages(messages, "Ana", UTC).splitlines() == [
        "[1] Ana (Fri 2026-11-20 09:14 UTC): I start Monday.",
        "[2] Assistant (Fri 2026-11-20 09:14 UTC): How do you feel?",
        "[3] Coach (Fri 2026-11-20 09:14 UTC): Call me after.",
    ]


@pytest.mark.parametrize(
    ("zone", "line"),
    [
        ("Pacific/Kiritimati", "[1] Maria Lopez (Tue 2026-12-08 11:15 +14): I will swim tomorrow."),
        ("America/Los_Angeles", "[1] Maria Lopez (Mon 2026-12-07 13:15 PST): I will swim tomorrow."),
    ],
)
def test_the_memory_jobs_transcripts_are_dated_in_the_coachs_zone_and_say_which(zone: str, line: str) -> None:
    """The chat prompt dates a coach's memory in the coach's zone ("Today is Tuesday 2026-12-08" in Kiritimati),
    but the summary, extraction and profile requests read ``(2026-12-07 21:15)``, UTC, unmarked: a summary said
    "…(2026-12-07 21:13)…" under ``[session of 2026-12-08]``, and the model counted "tomorrow" from UTC's day.
    The transcript now dates each message in the coach's zone, with its weekday and the zone's abbreviation."""
    sent = Message(
        sender_type=SenderType.CLIENT,
        text="I will swim tomorrow.",
        created_at=datetime(2026, 12, 7, 21, 15, tzinfo=UTC),
    )
    assert format_messages([sent], "Maria Lopez", ZoneInfo(zone)) == line


@pytest.mark.parametrize(
    ("item", "grounded"),
    [
        ("learning to swim", True),  # "swim" starts "swimming": no stemmer needed
        ("fear of deep water", True),
        ("Practise with Luis on Saturdays", True),  # the reply's words count: next steps are often its own
        ("Soccer player", False),
        ("excited about the upcoming marathon", False),
        ("Maria wants to talk about it", False),  # the client's name and common words ground nothing
    ],
)
def test_a_summary_list_item_is_grounded_by_a_word_it_shares_with_the_session(item: str, grounded: bool) -> None:
    session = (
        "Maria: I want to learn swimming, 1 km by summer, but I am afraid of deep water. "
        "Assistant: Hi Maria! You could ask Luis to start in the shallow end on Saturdays."
    )
    assert shares_words(item, content_words(session, "Maria Lopez"), "Maria Lopez") is grounded


REPLY_TEXT = "I'm so sorry to hear that your brother was willing to help you. Start in the shallow end on Saturdays."
CLIENT_TEXT = "My brother Luis swims every day and offered to help me on Saturdays."


@pytest.mark.parametrize(
    ("sentence", "copied"),
    [
        ("I'm so sorry to hear that your brother was willing to help you.", True),  # the reply, as the client's
        ("Maria Lopez: so sorry to hear that your brother", True),
        ("The assistant suggested she start in the shallow end on Saturdays.", False),  # a note of the reply
        ("Maria said: My brother Luis swims every day and offered to help me.", False),  # the client's own words
        ("Her brother Luis offered to help her on Saturdays.", False),
    ],
)
def test_a_summary_sentence_speaking_the_replys_words_is_a_copy(sentence: str, copied: bool) -> None:
    assert copies(sentence, [REPLY_TEXT], [CLIENT_TEXT]) is copied


def test_a_statement_grounded_only_in_the_others_messages_counts_less() -> None:
    """Message 0 is the client's, 1 the Assistant's: a summary sentence grounded in the client's words counts 1, one
    grounded only in the reply a half, one grounded in nothing 0; without a client message all grounded count 1."""
    grounding = Grounding([], [[0, 1], [1], []])
    assert grounding.share({0}, 0.5) == pytest.approx(0.5)
    assert grounding.share(set(), 0.5) == pytest.approx(2 / 3)
    assert Grounding([], []).share({0}, 0.5) == 1.0


def test_a_coachs_own_model_gets_its_own_budget_and_memory_outlasts_the_weaker_passages() -> None:
    """The prompt budget is the local model's window only for the local model (it held every coach's prompt to
    about 1,400 tokens); within it, five passages of the coach's book no longer push the client's memory out."""
    settings = Settings(llm_context_tokens=2048, llm_remote_context_tokens=16384, llm_max_tokens=256)
    assert prompt_budget(settings, "local") == 2048 - 256
    assert prompt_budget(settings, "openai") == 16384 - 256
    passages = [_passage(i, words=170) for i in range(1, 6)]
    prompt = assemble_prompt(
        persona=PERSONA,
        passages=passages,
        memory=MemoryContext([], ITEMS[:1]),
        history=[],
        user_text=QUESTION,
        budget_tokens=prompt_budget(settings, "local"),
    )
    assert prompt.memory_items == ITEMS[:1] and KEEP_PASSAGES <= len(prompt.passages) < 5


def test_an_over_long_statement_is_clipped_to_its_last_whole_word_not_refused() -> None:
    """The schema the model follows cannot carry string lengths, so a model can write a 300-character topic:
    the whole summary failed validation on every try ("topics.0: String should have at most 200
    characters") and the session was marked failed."""
    long_topic = "planning the week around the new job and the commute " * 6
    summary = SessionSummaryOutput.model_validate(
        {
            "summary": "The client talked about planning the week.",
            "topics": [long_topic],
            "insights": [],
            "action_items": [],
            "emotional_state": "hopeful",
        }
    )
    [topic] = summary.topics
    assert len(topic) <= 200 and long_topic.startswith(topic) and topic.endswith(" the new job and")
    assert (
        ProfileOutput.model_validate(
            {
                "communication_preferences": [],
                "what_works": [],
                "what_doesnt_work": [],
                "tone": "warm " * 40,
                "sensitive_topics": [],
            }
        ).tone
        == ("warm " * 24).strip()
    )


@pytest.mark.parametrize(
    ("text", "echo"),
    [
        ("Sam's knee hurts after long runs.", True),  # the example's insight word for word
        ("Bruno's knee hurts after his long runs", True),  # the client's name, a word more
        ("Knee pain.", True),
        ("Nervous, but motivated!", True),
        ("Bruno is nervous because the knee hurts after long runs and will see a physiotherapist on Friday.", True),
        ("asking how Bruno feels", True),
        ("Bruno wants to run a marathon in June", False),  # the example's form, the client's own facts
        ("Bruno will see a physiotherapist on Monday", False),
        ("nervous and hopeful", False),
        ("knee hurts", False),
        ("😀🎉", False),
    ],
)
def test_a_near_copy_of_the_worked_examples_is_an_echo_the_clients_own_words_are_not(text: str, echo: bool) -> None:
    assert echoes(text, (*INSIGHT_ECHOES, *SUMMARY_ECHOES, *PROFILE_ECHOES), "Bruno") is echo


@pytest.mark.parametrize(
    ("text", "stamped"),
    [
        ("Maria Lopez (2026-12-07 21:13): I'm so sorry to hear that", True),
        ("Maria (Tue 2026-12-08 11:15 +14): a copied line", True),
        ("Check in after the presentation (Thu 2026-12-10 14:00)", False),
        ("Maria swam 1 km on Saturday (2026-12-12).", False),
    ],
)
def test_only_a_transcript_lines_speaker_stamp_refuses_a_summary(text: str, stamped: bool) -> None:
    """A good summary whose action item named an appointment, "(Thu 2026-12-10 14:00)", was refused as a copied
    transcript line (found by a run trying to break this stop's fixes): the stamp is a date and time in brackets
    followed by a colon, as a transcript line's speaker has it."""
    assert bool(TRANSCRIPT_STAMP.search(text)) is stamped
