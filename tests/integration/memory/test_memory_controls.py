"""Memory controls: the coach reads and corrects a client's memory (API and dashboard page), the client sees
and deletes what is remembered (widget API and page), sessions end on request, memory settings.

Memory rows are seeded straight into the tenant's tables (no LLM jobs run here); seeded vectors are unit
vectors tagged with a model name of their own, so :func:`app.memory.retrieval.recall` can be asked for
exactly one item.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.core.errors import NotFound
from app.db.engine import tenant_session
from app.llm.base import EMBEDDING_DIMENSIONS
from app.memory.models import ChatSession, ClientProfile, Insight, SessionStatus
from app.memory.retrieval import recall
from tests.conftest import Coach, make_client, widget_page

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')
TEST_MODEL = "test-unit-vectors"
HTMX = {"hx-request": "true"}

INSIGHT_KEYS = {
    "id",
    "kind",
    "text",
    "importance",
    "status",
    "effectiveness",
    "mentions",
    "source_message_ids",
    "first_seen_at",
    "last_seen_at",
    "edited_by_coach",
}
PROFILE_KEYS = {
    "communication_preferences",
    "what_works",
    "what_doesnt_work",
    "tone",
    "sensitive_topics",
    "updated_at",
    "coach_edited_at",
}


def unit(i: int) -> list[float]:
    """The i-th basis vector of the embedding space (cosine 1 with itself, 0 with every other)."""
    return [1.0 if j == i else 0.0 for j in range(EMBEDDING_DIMENSIONS)]


@dataclass
class Seeded:
    """One client's seeded memory."""

    coach: Coach
    client_id: str
    widget_token: str
    conversation_id: str
    message_id: str
    goal_id: str
    blocker_id: str
    dropped_id: str
    summarized_id: str
    failed_id: str

    @property
    def memory_url(self) -> str:
        return f"/api/v1/clients/{self.client_id}/memory"


async def seed(container: Container, http: httpx.AsyncClient, coach: Coach, name: str = "Maya") -> Seeded:
    """A client of ``coach`` with a conversation, three insights (one dropped), a summarised and a failed
    session, and a profile."""
    client = await make_client(http, coach, name)
    coach_id, client_id = uuid.UUID(coach.coach_id), uuid.UUID(client["id"])
    now = datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel="api")
        session.add(conversation)
        await session.flush()
        message = Message(
            coach_id=coach_id,
            conversation_id=conversation.id,
            sender_type=SenderType.CLIENT,
            text="I signed up for the Berlin marathon in May, but my knee hurts after long runs.",
        )
        session.add(message)
        await session.flush()

        def insight(kind: str, text: str, importance: int, vector: int, status: str = "active") -> Insight:
            row = Insight(
                coach_id=coach_id,
                client_id=client_id,
                kind=kind,
                text=text,
                importance=importance,
                status=status,
                mentions=2,
                source_message_ids=[message.id],
                first_seen_at=now - timedelta(days=3),
                last_seen_at=now - timedelta(days=1),
                edited_by_coach=False,
                embedding=unit(vector),
                embedding_model=TEST_MODEL,
            )
            session.add(row)
            return row

        goal = insight("goal", f"{name} wants to run the Berlin marathon in May", 8, 0)
        blocker = insight("blocker", f"{name}'s knee hurts after long runs", 6, 1)
        dropped = insight("goal", f"{name} wanted to learn the cello", 3, 2, status="dropped")
        summarized = ChatSession(
            coach_id=coach_id,
            client_id=client_id,
            conversation_id=conversation.id,
            status=SessionStatus.SUMMARIZED,
            started_at=now - timedelta(days=2, minutes=20),
            last_message_at=now - timedelta(days=2),
            ended_at=now - timedelta(days=2),
            message_count=6,
            summary={
                "summary": f"{name} signed up for the Berlin marathon and worries about her knee.",
                "topics": ["marathon training", "knee pain"],
                "insights": ["wants to finish under four hours"],
                "action_items": ["see a physiotherapist this week"],
                "emotional_state": "hopeful but anxious",
                "message_count": 6,
                "started_at": (now - timedelta(days=2, minutes=20)).isoformat(),
                "ended_at": (now - timedelta(days=2)).isoformat(),
                "profile_updated": True,
            },
            source_message_ids=[message.id],
            embedding=unit(3),
            embedding_model=TEST_MODEL,
        )
        failed = ChatSession(
            coach_id=coach_id,
            client_id=client_id,
            conversation_id=conversation.id,
            status=SessionStatus.FAILED,
            started_at=now - timedelta(days=1, minutes=10),
            last_message_at=now - timedelta(days=1),
            ended_at=now - timedelta(days=1),
            message_count=2,
            summary_error="invalid model output: summary is too short",
            source_message_ids=[],
        )
        session.add_all([summarized, failed])
        session.add(
            ClientProfile(
                coach_id=coach_id,
                client_id=client_id,
                communication_preferences=["short messages"],
                what_works=["weekly plans"],
                what_doesnt_work=["long lectures"],
                tone="upbeat",
                sensitive_topics=["her father's illness"],
                updated_at=now - timedelta(days=2),
            )
        )
        await session.flush()
        ids = [str(x.id) for x in (conversation, message, goal, blocker, dropped, summarized, failed)]
    return Seeded(coach, client["id"], client["widget_token"], *ids)


@pytest.fixture
async def coach(make_coach: Callable[..., Awaitable[Coach]]) -> Coach:
    return await make_coach("Memory Coach")


@pytest.fixture
async def maya(container: Container, http: httpx.AsyncClient, coach: Coach) -> Seeded:
    return await seed(container, http, coach)


async def insight_row(container: Container, seeded: Seeded, insight_id: str) -> Insight:
    async with tenant_session(container.sessionmaker, uuid.UUID(seeded.coach.coach_id)) as session:
        return await session.get_one(Insight, uuid.UUID(insight_id))


async def recalled_ids(container: Container, seeded: Seeded, vector: int) -> set[str]:
    coach_id = uuid.UUID(seeded.coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        items = await recall(
            session,
            coach_id,
            uuid.UUID(seeded.client_id),
            query="",
            query_embedding=unit(vector),
            embedding_model=TEST_MODEL,
            now=datetime.now(UTC),
            limit=10,
        )
    return {str(item.id) for item in items}


# ---------------------------------------------------------------- coach API


async def test_get_memory_shape(http: httpx.AsyncClient, maya: Seeded) -> None:
    response = await http.get(maya.memory_url, headers=maya.coach.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"profile", "insights", "summaries"}

    profile = body["profile"]
    assert set(profile) == PROFILE_KEYS
    assert profile["tone"] == "upbeat" and profile["what_works"] == ["weekly plans"]
    assert profile["coach_edited_at"] is None and profile["updated_at"]

    insights = body["insights"]
    assert [i["id"] for i in insights] == [maya.goal_id, maya.blocker_id, maya.dropped_id], (
        "active first by importance, then the dropped one"
    )
    assert all(set(i) == INSIGHT_KEYS for i in insights)
    goal = insights[0]
    assert goal["kind"] == "goal" and goal["importance"] == 8 and goal["status"] == "active"
    assert goal["mentions"] == 2 and goal["effectiveness"] is None and goal["edited_by_coach"] is False
    assert goal["source_message_ids"] == [maya.message_id]

    summaries = body["summaries"]
    assert [s["id"] for s in summaries] == [maya.failed_id, maya.summarized_id], "newest first"
    failed, done = summaries
    assert failed["status"] == "failed" and failed["summary"] is None
    assert "too short" in failed["error"]
    assert done["status"] == "summarized" and done["error"] is None
    assert done["conversation_id"] == maya.conversation_id and done["message_count"] == 6
    assert set(done["summary"]) == {
        "summary",
        "topics",
        "insights",
        "action_items",
        "emotional_state",
        "message_count",
        "started_at",
        "ended_at",
    }, "bookkeeping keys of the jobs are not part of the contract"
    assert done["summary"]["action_items"] == ["see a physiotherapist this week"]


async def test_the_digest_reads_the_top_active_insights_and_the_last_summary(
    container: Container, maya: Seeded, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """What the handoff brief and an intervention's context read: at most n active insights, most important
    first, and the newest *summarised* session's summary (a newer failed session has none)."""
    coach_id, client_id = uuid.UUID(maya.coach.coach_id), uuid.UUID(maya.client_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        one = await container.memory.digest(session, coach_id, client_id, insights=1)
        every = await container.memory.digest(session, coach_id, client_id, insights=10)
    assert [str(i.id) for i in one.insights] == [maya.goal_id]
    assert [str(i.id) for i in every.insights] == [maya.goal_id, maya.blocker_id], "the dropped goal is left out"
    assert every.last_summary is not None and every.last_summary["summary"].startswith("Maya signed up")
    assert every.profile is not None and every.profile.what_works == ["weekly plans"]

    other = await make_coach("Other Memory Coach")
    async with tenant_session(container.sessionmaker, uuid.UUID(other.coach_id)) as session:
        with pytest.raises(NotFound):
            await container.memory.digest(session, uuid.UUID(other.coach_id), client_id, insights=10)


async def test_client_without_memory_has_the_empty_shape(http: httpx.AsyncClient, coach: Coach) -> None:
    client = await make_client(http, coach, "New")
    body = (await http.get(f"/api/v1/clients/{client['id']}/memory", headers=coach.headers)).json()
    assert body == {
        "profile": {
            "communication_preferences": [],
            "what_works": [],
            "what_doesnt_work": [],
            "tone": "",
            "sensitive_topics": [],
            "updated_at": None,
            "coach_edited_at": None,
        },
        "insights": [],
        "summaries": [],
    }


async def test_patch_insight_changes_fields_and_marks_the_coach_edit(
    http: httpx.AsyncClient, container: Container, maya: Seeded
) -> None:
    url = f"{maya.memory_url}/insights/{maya.blocker_id}"
    response = await http.patch(
        url,
        headers=maya.coach.headers,
        json={"text": "  Maya's left knee hurts after runs over 15 km ", "importance": 9, "kind": "pattern"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "Maya's left knee hurts after runs over 15 km"
    assert (body["importance"], body["kind"], body["status"]) == (9, "pattern", "active")
    assert body["edited_by_coach"] is True

    goal_url = f"{maya.memory_url}/insights/{maya.goal_id}"
    unchanged = await http.patch(goal_url, headers=maya.coach.headers, json={"importance": 8, "status": "active"})
    assert unchanged.json()["edited_by_coach"] is False, "only a field that changes marks the coach's edit"
    reranked = await http.patch(goal_url, headers=maya.coach.headers, json={"importance": 3})
    assert reranked.json()["edited_by_coach"] is True, "a changed importance is the coach's edit too"

    status_only = await http.patch(url, headers=maya.coach.headers, json={"status": "achieved"})
    assert status_only.status_code == 200 and status_only.json()["status"] == "achieved"
    assert status_only.json()["text"] == body["text"], "omitted fields are kept"

    listed = {i["id"]: i for i in (await http.get(maya.memory_url, headers=maya.coach.headers)).json()["insights"]}
    assert listed[maya.blocker_id]["text"] == body["text"] and listed[maya.blocker_id]["status"] == "achieved"
    row = await insight_row(container, maya, maya.blocker_id)
    assert row.embedding_model != TEST_MODEL, "the new text was embedded again, by the coach's embedder"


async def test_delete_insight_forgets_it_for_good(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, container: Container, maya: Seeded
) -> None:
    assert maya.goal_id in await recalled_ids(container, maya, 0)
    url = f"{maya.memory_url}/insights/{maya.goal_id}"
    response = await http.delete(url, headers=maya.coach.headers)
    assert response.status_code == 204

    # the coach sees which messages were forgotten (they stay in the transcript, out of every prompt): the API's
    # forgotten_at and a badge on the dashboard; before, nothing told the coach
    transcript = await http.get(f"/api/v1/conversations/{maya.conversation_id}", headers=maya.coach.headers)
    forgotten = {m["id"]: m["forgotten_at"] for m in transcript.json()["messages"]}
    assert forgotten == {maya.message_id: forgotten[maya.message_id]} and forgotten[maya.message_id], forgotten
    await log_in(browser, maya.coach)
    page = await browser.get(f"/dashboard/conversations/{maya.conversation_id}")
    assert page.status_code == 200 and page.text.count('">forgotten</span>') == 1, page.text

    listed = (await http.get(maya.memory_url, headers=maya.coach.headers)).json()["insights"]
    assert maya.goal_id not in {i["id"] for i in listed}
    recalled = await recalled_ids(container, maya, 0)
    assert maya.goal_id not in recalled and maya.blocker_id in recalled, "never again in a prompt"
    row = await insight_row(container, maya, maya.goal_id)
    assert (row.status, row.text) == ("deleted", ""), "a tombstone is left, without the text"
    assert row.source_message_ids == [uuid.UUID(maya.message_id)], "its message ids stay out of summaries"

    again = await http.delete(url, headers=maya.coach.headers)
    assert again.status_code == 404 and "insight not found" in again.json()["detail"]
    revived = await http.patch(url, headers=maya.coach.headers, json={"status": "active"})
    assert revived.status_code == 404, "a deleted insight cannot be edited back to life"
    assert (await insight_row(container, maya, maya.goal_id)).status == "deleted"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("PATCH", "/insights/{blocker}", {"kind": "wish"}, 400, "kind must be one of"),
        ("PATCH", "/insights/{blocker}", {"importance": 11}, 400, "importance must be between 0 and 10"),
        ("PATCH", "/insights/{blocker}", {"importance": -1}, 400, "importance must be between 0 and 10"),
        ("PATCH", "/insights/{blocker}", {"importance": "high"}, 400, "Expected `int | null`"),
        ("PATCH", "/insights/{blocker}", {"text": "   "}, 400, "text must not be empty"),
        ("PATCH", "/insights/{blocker}", {"text": "x" * 501}, 400, "longer than 500"),
        ("PATCH", "/insights/{blocker}", {"status": "deleted"}, 400, "status must be one of"),
        ("PATCH", "/insights/{blocker}", {"colour": "red"}, 400, "unknown field `colour`"),
        ("PATCH", "/insights/not-a-uuid", {"status": "active"}, 400, "not a UUID"),
        ("PATCH", "/insights/{random}", {"status": "active"}, 404, "insight not found"),
        ("DELETE", "/insights/not-a-uuid", None, 400, "not a UUID"),
        ("DELETE", "/insights/{random}", None, 404, "insight not found"),
        ("PATCH", "/profile", {"mood": "x"}, 400, "unknown profile field 'mood'"),
        ("PATCH", "/profile", {"what_works": "naps"}, 400, "what_works must be a list of strings"),
        ("PATCH", "/profile", {"tone": 5}, 400, "tone must be a string"),
        # the dashboard's form is one entry a line: saving it unchanged split such an entry in two
        ("PATCH", "/profile", {"what_works": ["Line one\nstill line one?"]}, 400, "each entry must be one line"),
        ("PATCH", "/profile", {}, 400, "at least one profile field"),
        ("PATCH", "/profile", ["tone"], 400, "Validation failed"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    http: httpx.AsyncClient,
    container: Container,
    maya: Seeded,
    method: str,
    path: str,
    body: object,
    status: int,
    message: str,
) -> None:
    before = (await http.get(maya.memory_url, headers=maya.coach.headers)).json()
    url = maya.memory_url + path.format(blocker=maya.blocker_id, random=uuid.uuid4())
    response = await http.request(method, url, headers=maya.coach.headers, json=body)
    assert response.status_code == status, response.text
    assert message in response.text
    assert (await http.get(maya.memory_url, headers=maya.coach.headers)).json() == before


async def test_malformed_client_id_and_missing_key(http: httpx.AsyncClient, coach: Coach) -> None:
    malformed = await http.get("/api/v1/clients/123/memory", headers=coach.headers)
    assert malformed.status_code == 400 and "not a UUID" in malformed.text
    missing = await http.get(f"/api/v1/clients/{uuid.uuid4()}/memory", headers=coach.headers)
    assert missing.status_code == 404 and "client not found" in missing.json()["detail"]
    anonymous = await http.get(f"/api/v1/clients/{uuid.uuid4()}/memory")
    assert anonymous.status_code == 401


async def test_other_coach_gets_404_and_changes_nothing(
    http: httpx.AsyncClient, container: Container, make_coach: Callable[..., Awaitable[Coach]], maya: Seeded
) -> None:
    intruder = await make_coach("Coach B")
    own = await make_client(http, intruder, "B's client")
    before = (await http.get(maya.memory_url, headers=maya.coach.headers)).json()

    read = await http.get(maya.memory_url, headers=intruder.headers)
    assert read.status_code == 404 and "client not found" in read.json()["detail"]
    for client_id in (maya.client_id, own["id"]):
        url = f"/api/v1/clients/{client_id}/memory/insights/{maya.goal_id}"
        patched = await http.patch(url, headers=intruder.headers, json={"text": "hijacked"})
        assert patched.status_code == 404, patched.text
        deleted = await http.delete(url, headers=intruder.headers)
        assert deleted.status_code == 404, deleted.text
    profile = await http.patch(f"{maya.memory_url}/profile", headers=intruder.headers, json={"tone": "cold"})
    assert profile.status_code == 404
    ended = await http.post(f"/api/v1/conversations/{maya.conversation_id}/end-session", headers=intruder.headers)
    assert ended.status_code == 404 and "conversation not found" in ended.json()["detail"]

    assert (await http.get(maya.memory_url, headers=maya.coach.headers)).json() == before
    assert (await insight_row(container, maya, maya.goal_id)).text.endswith("marathon in May")


async def test_profile_edit(http: httpx.AsyncClient, coach: Coach, maya: Seeded) -> None:
    response = await http.patch(
        f"{maya.memory_url}/profile",
        headers=coach.headers,
        json={"tone": " warm and direct ", "what_works": ["short weekly plans", "  ", "voice notes"]},
    )
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["tone"] == "warm and direct"
    assert profile["what_works"] == ["short weekly plans", "voice notes"], "entries trimmed, blanks dropped"
    assert profile["communication_preferences"] == ["short messages"], "fields not sent are kept"
    assert profile["coach_edited_at"]
    assert (await http.get(maya.memory_url, headers=coach.headers)).json()["profile"] == profile

    fresh = await make_client(http, coach, "Fresh")
    created = await http.patch(
        f"/api/v1/clients/{fresh['id']}/memory/profile", headers=coach.headers, json={"sensitive_topics": ["debt"]}
    )
    assert created.status_code == 200 and created.json()["sensitive_topics"] == ["debt"]


async def test_a_forgotten_summary_takes_the_profile_lines_only_its_session_gave(
    http: httpx.AsyncClient, container: Container, coach: Coach, maya: Seeded
) -> None:
    """Profile lines record the sessions they were learnt from (``entry_sessions``). Forgetting a session's
    summary removes the lines that session alone gave (the learnt tone too), a line the coach kept through an edit
    included; a line another session also gave stays, as do the coach's own lines and lines with no recorded
    source."""
    coach_id, client_id = uuid.UUID(coach.coach_id), uuid.UUID(maya.client_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
        assert profile is not None
        profile.entry_sessions = {
            "sensitive_topics": {"her father's illness": [maya.summarized_id]},
            "what_works": {"weekly plans": [maya.summarized_id, maya.failed_id]},
            "what_doesnt_work": {"long lectures": [maya.summarized_id]},
            "tone": {"upbeat": [maya.summarized_id]},
        }
    edited = await http.patch(
        f"{maya.memory_url}/profile", headers=coach.headers, json={"what_doesnt_work": ["Long lectures", "homework"]}
    )
    assert edited.status_code == 200, edited.text
    forgotten = await http.delete(f"{maya.memory_url}/summaries/{maya.summarized_id}", headers=coach.headers)
    assert forgotten.status_code == 204, forgotten.text
    profile_out = (await http.get(maya.memory_url, headers=coach.headers)).json()["profile"]
    assert profile_out["sensitive_topics"] == [], "that session alone gave it"
    assert profile_out["what_doesnt_work"] == ["homework"], "kept by the coach's edit, still that session's"
    assert profile_out["what_works"] == ["weekly plans"], "another session gave it too"
    assert profile_out["communication_preferences"] == ["short messages"], "no recorded source"
    assert profile_out["tone"] == "", "the learnt tone that session alone gave goes too (it stayed before)"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    assert profile is not None and profile.entry_sessions["what_works"] == {"weekly plans": [maya.failed_id]}


# ---------------------------------------------------------------- sessions


async def open_session(container: Container, seeded: Seeded) -> str:
    """Insert an open chat session into the seeded conversation (as a chat turn would)."""
    coach_id = uuid.UUID(seeded.coach.coach_id)
    now = datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        chat_session = ChatSession(
            coach_id=coach_id,
            client_id=uuid.UUID(seeded.client_id),
            conversation_id=uuid.UUID(seeded.conversation_id),
            status=SessionStatus.OPEN,
            started_at=now - timedelta(minutes=5),
            last_message_at=now - timedelta(minutes=1),
            message_count=0,
            source_message_ids=[],
        )
        session.add(chat_session)
        await session.flush()
        return str(chat_session.id)


async def session_status(container: Container, seeded: Seeded, session_id: str) -> str:
    async with tenant_session(container.sessionmaker, uuid.UUID(seeded.coach.coach_id)) as session:
        return (await session.get_one(ChatSession, uuid.UUID(session_id))).status


async def test_coach_ends_the_open_session(http: httpx.AsyncClient, container: Container, maya: Seeded) -> None:
    url = f"/api/v1/conversations/{maya.conversation_id}/end-session"
    session_id = await open_session(container, maya)
    ended = await http.post(url, headers=maya.coach.headers)
    assert ended.status_code == 200 and ended.json() == {"session_id": session_id}
    assert await session_status(container, maya, session_id) == "ended"
    again = await http.post(url, headers=maya.coach.headers)
    assert again.status_code == 200 and again.json() == {"session_id": None}, "nothing open any more"
    malformed = await http.post("/api/v1/conversations/nope/end-session", headers=maya.coach.headers)
    assert malformed.status_code == 400 and "not a UUID" in malformed.text


async def test_a_session_whose_summary_is_pending_can_be_forgotten_but_not_an_open_one(
    http: httpx.AsyncClient, container: Container, maya: Seeded
) -> None:
    """An ended session waiting for its summary is listed, and "forget" on it answered 404; it is forgotten now
    (its summary, when the job writes it, is not stored). An open session has nothing to forget yet."""
    session_id = await open_session(container, maya)
    url = f"{maya.memory_url}/summaries/{session_id}"
    assert (await http.delete(url, headers=maya.coach.headers)).status_code == 404
    ended = await http.post(f"/api/v1/conversations/{maya.conversation_id}/end-session", headers=maya.coach.headers)
    assert ended.json() == {"session_id": session_id}
    assert (await http.delete(url, headers=maya.coach.headers)).status_code == 204
    assert await session_status(container, maya, session_id) == "deleted"


async def test_client_ends_own_session_only(http: httpx.AsyncClient, container: Container, coach: Coach) -> None:
    maya = await seed(container, http, coach, "Maya")
    ben = await seed(container, http, coach, "Ben")
    bens_session = await open_session(container, ben)
    as_maya = {"Authorization": f"Bearer {maya.widget_token}"}
    other = await http.post(f"/api/v1/widget/conversations/{ben.conversation_id}/end-session", headers=as_maya)
    assert other.status_code == 404 and "conversation not found" in other.json()["detail"]
    assert await session_status(container, ben, bens_session) == "open"

    mayas_session = await open_session(container, maya)
    own = await http.post(f"/api/v1/widget/conversations/{maya.conversation_id}/end-session", headers=as_maya)
    assert own.status_code == 200 and own.json() == {"session_id": mayas_session}
    assert await session_status(container, maya, mayas_session) == "ended"
    anonymous = await http.post(f"/api/v1/widget/conversations/{maya.conversation_id}/end-session")
    assert anonymous.status_code == 401


# ---------------------------------------------------------------- the client's view (widget)


async def test_client_sees_and_deletes_own_memory(
    http: httpx.AsyncClient, base_url: str, container: Container, coach: Coach
) -> None:
    maya = await seed(container, http, coach, "Maya")
    ben = await seed(container, http, coach, "Ben")
    as_maya = {"Authorization": f"Bearer {maya.widget_token}"}

    shown = await http.get("/api/v1/widget/memory", headers=as_maya)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert {i["id"] for i in body["insights"]} == {maya.goal_id, maya.blocker_id, maya.dropped_id}
    assert all(set(i) == {"id", "kind", "text", "status"} for i in body["insights"]), "no internal fields"
    assert not any("Ben" in i["text"] for i in body["insights"])
    [summary] = body["summaries"]
    assert summary["id"] == maya.summarized_id, "failed sessions are the coach's business"
    assert set(summary) == {"id", "started_at", "summary", "topics", "action_items", "emotional_state"}
    assert "too short" not in shown.text and maya.message_id not in shown.text

    page = await widget_page(http.base_url, maya.widget_token, "/memory")
    assert page.status_code == 200 and "What my coach&#39;s assistant remembers" in page.text
    assert "Berlin marathon in May" in page.text and "see a physiotherapist" in page.text
    assert "/static/memory.js" in page.text and f'data-delete="insights/{maya.goal_id}"' in page.text
    assert f'data-delete="summaries/{maya.summarized_id}"' in page.text
    assert (await http.get("/w/ocw_not-a-token/memory")).status_code == 404
    chat_page = (await widget_page(http.base_url, maya.widget_token)).text
    assert 'href="/w/memory?lang=en"' in chat_page and 'id="end-session"' in chat_page
    assert maya.widget_token not in chat_page and maya.widget_token not in page.text, "the token left the page"
    assert (await http.get("/static/memory.js")).status_code == 200

    deleted = await http.delete(f"/api/v1/widget/memory/insights/{maya.goal_id}", headers=as_maya)
    assert deleted.status_code == 204
    remaining = {i["id"] for i in (await http.get("/api/v1/widget/memory", headers=as_maya)).json()["insights"]}
    assert remaining == {maya.blocker_id, maya.dropped_id}
    coach_view = (await http.get(maya.memory_url, headers=coach.headers)).json()["insights"]
    assert maya.goal_id not in {i["id"] for i in coach_view}, "gone for the coach too"
    assert maya.goal_id not in await recalled_ids(container, maya, 0)
    assert "Berlin marathon in May" not in (await widget_page(http.base_url, maya.widget_token, "/memory")).text

    forgotten = await http.delete(f"/api/v1/widget/memory/summaries/{maya.summarized_id}", headers=as_maya)
    assert forgotten.status_code == 204
    assert (await http.get("/api/v1/widget/memory", headers=as_maya)).json()["summaries"] == []
    coach_sessions = (await http.get(maya.memory_url, headers=coach.headers)).json()["summaries"]
    assert maya.summarized_id not in {s["id"] for s in coach_sessions}, "the summary is gone for the coach too"
    assert maya.summarized_id not in await recalled_ids(container, maya, 0), "and never recalled"
    again = await http.delete(f"/api/v1/widget/memory/summaries/{maya.summarized_id}", headers=as_maya)
    assert again.status_code == 404 and "session summary not found" in again.json()["detail"]
    foreign_summary = await http.delete(f"/api/v1/widget/memory/summaries/{ben.summarized_id}", headers=as_maya)
    assert foreign_summary.status_code == 404

    foreign = await http.delete(f"/api/v1/widget/memory/insights/{ben.goal_id}", headers=as_maya)
    assert foreign.status_code == 404 and "insight not found" in foreign.json()["detail"]
    assert (await insight_row(container, ben, ben.goal_id)).status == "active"
    malformed = await http.delete("/api/v1/widget/memory/insights/xyz", headers=as_maya)
    assert malformed.status_code == 400 and "not a UUID" in malformed.text
    assert (await http.get("/api/v1/widget/memory")).status_code == 401
    assert (await http.get("/api/v1/widget/memory", headers=coach.headers)).status_code == 401, (
        "a coach key is not a widget token"
    )


# ---------------------------------------------------------------- settings


async def test_memory_settings(http: httpx.AsyncClient, coach: Coach) -> None:
    defaults = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert (defaults["recent_messages"], defaults["session_idle_minutes"]) == (10, 30)
    patched = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"recent_messages": 0, "session_idle_minutes": 1440}
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["recent_messages"], patched.json()["session_idle_minutes"]) == (0, 1440)

    for body, message in (
        ({"recent_messages": 101}, "recent_messages must be a whole number from 0 to 100"),
        ({"recent_messages": -1}, "recent_messages must be a whole number from 0 to 100"),
        ({"session_idle_minutes": 0}, "session_idle_minutes must be a whole number from 1 to 1440"),
        ({"recent_messages": 5, "session_idle_minutes": 2000}, "session_idle_minutes must be a whole number"),
        ({"recent_messages": "ten"}, "Expected `int`, got `str`"),
    ):
        refused = await http.patch("/api/v1/settings", headers=coach.headers, json=body)
        assert refused.status_code == 400 and message in refused.text, (body, refused.text)
    now = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert (now["recent_messages"], now["session_idle_minutes"]) == (0, 1440), "nothing changed"


# ---------------------------------------------------------------- dashboard


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        yield client


async def log_in(browser: httpx.AsyncClient, coach: Coach) -> str:
    """Log ``coach`` into the dashboard; returns a CSRF token for forms."""
    page = await browser.get("/login")
    token = CSRF.search(page.text)
    assert token
    response = await browser.post(
        "/login", data={"email": coach.email, "password": PASSWORD, "_csrf_token": token.group(1)}
    )
    assert response.status_code in (302, 303), response.text
    return token.group(1)


async def test_dashboard_client_page(
    browser: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    maya: Seeded,
) -> None:
    csrf = await log_in(browser, maya.coach)
    page_url = f"/dashboard/clients/{maya.client_id}"
    clients = await browser.get("/dashboard/clients")
    assert f'href="{page_url}"' in clients.text, "the clients list links to the client page"

    page = await browser.get(page_url)
    assert page.status_code == 200, page.text
    for shown in (
        "Maya wants to run the Berlin marathon in May",
        "Maya&#39;s knee hurts after long runs",
        "signed up for the Berlin marathon and worries about her knee",
        "marathon training; knee pain",
        "see a physiotherapist this week",
        "hopeful but anxious",
        "Summary failed: invalid model output: summary is too short",
        "weekly plans",
        'value="upbeat"',
        f'hx-post="{page_url}/insights/{maya.goal_id}"',
    ):
        assert shown in page.text, shown

    edit_url = f"{page_url}/insights/{maya.goal_id}"
    form = {"_csrf_token": csrf, "kind": "goal", "status": "achieved", "importance": "9", "text": "Ran Berlin"}
    edited = await browser.post(edit_url, data=form, headers=HTMX)
    assert edited.status_code == 200 and 'value="Ran Berlin"' in edited.text and "edited by you" in edited.text
    assert "<html" not in edited.text, "htmx gets the item only"
    bad = await browser.post(edit_url, data={**form, "importance": "11"}, headers=HTMX)
    assert bad.status_code == 400 and "importance must be between 0 and 10" in bad.text
    assert 'value="9"' in bad.text, "the stored values are shown again"
    not_a_number = await browser.post(edit_url, data={**form, "importance": "lots"}, headers=HTMX)
    assert not_a_number.status_code == 400 and "importance must be a whole number" in not_a_number.text
    plain_bad = await browser.post(edit_url, data={**form, "importance": "11"})
    assert plain_bad.status_code == 400 and "<html" in plain_bad.text, "without htmx: the whole page"
    assert plain_bad.text.count("importance must be between 0 and 10") == 1
    plain = await browser.post(edit_url, data={**form, "text": "Ran Berlin in 3:58"})
    assert plain.status_code in (302, 303) and plain.headers["location"] == page_url, "without htmx: redirect"

    removed = await browser.post(f"{page_url}/insights/{maya.blocker_id}/delete", data=form, headers=HTMX)
    assert removed.status_code == 200 and removed.text == ""
    saved = await browser.post(
        f"{page_url}/profile",
        data={
            "_csrf_token": csrf,
            "communication_preferences": "short messages\n\nemoji are fine",
            "what_works": "weekly plans",
            "what_doesnt_work": "",
            "sensitive_topics": "her father's illness",
            "tone": "playful",
        },
        headers=HTMX,
    )
    assert saved.status_code == 200 and "Saved." in saved.text and 'value="playful"' in saved.text

    memory = (await http.get(maya.memory_url, headers=maya.coach.headers)).json()
    insights = {i["id"]: i for i in memory["insights"]}
    assert maya.blocker_id not in insights
    assert insights[maya.goal_id]["text"] == "Ran Berlin in 3:58" and insights[maya.goal_id]["importance"] == 9
    assert memory["profile"]["communication_preferences"] == ["short messages", "emoji are fine"]
    assert memory["profile"]["what_doesnt_work"] == [] and memory["profile"]["tone"] == "playful"

    stranger = await make_client(http, await make_coach("Coach B"), "B's client")
    for url in (f"/dashboard/clients/{stranger['id']}", f"/dashboard/clients/{uuid.uuid4()}"):
        assert (await browser.get(url)).status_code == 404, url
    foreign = await browser.post(
        f"/dashboard/clients/{stranger['id']}/insights/{maya.goal_id}/delete", data=form, headers=HTMX
    )
    assert foreign.status_code == 404


async def test_dashboard_deletes_a_session_summary_of_its_own_clients_only(
    browser: httpx.AsyncClient,
    http: httpx.AsyncClient,
    container: Container,
    make_coach: Callable[..., Awaitable[Coach]],
    maya: Seeded,
) -> None:
    """The client page deleted insights but not session summaries (the API could); each summary now has a
    Delete button. Another coach's summary is a 404 and stays, whichever client it is asked under."""
    other = await seed(container, http, await make_coach("Coach B"), "Bo")
    csrf = await log_in(browser, maya.coach)
    page_url = f"/dashboard/clients/{maya.client_id}"
    delete_url = f"{page_url}/sessions/{maya.summarized_id}/delete"
    page = await browser.get(page_url)
    assert f'hx-post="{delete_url}"' in page.text and page.text.count("Delete summary") == 2

    form = {"_csrf_token": csrf}
    for foreign in (
        f"/dashboard/clients/{other.client_id}/sessions/{other.summarized_id}/delete",
        f"{page_url}/sessions/{other.summarized_id}/delete",
    ):
        refused = await browser.post(foreign, data=form, headers=HTMX)
        assert refused.status_code == 404, foreign
    theirs = (await http.get(other.memory_url, headers=other.coach.headers)).json()
    assert other.summarized_id in {s["id"] for s in theirs["summaries"]}, "another coach's summary stays"

    removed = await browser.post(delete_url, data=form, headers=HTMX)
    assert removed.status_code == 200 and removed.text == ""
    plain = await browser.post(f"{page_url}/sessions/{maya.failed_id}/delete", data=form)
    assert plain.status_code in (302, 303) and plain.headers["location"] == f"{page_url}#sessions"
    mine = (await http.get(maya.memory_url, headers=maya.coach.headers)).json()
    assert not {maya.summarized_id, maya.failed_id} & {s["id"] for s in mine["summaries"]}
    assert (await browser.post(delete_url, data=form, headers=HTMX)).status_code == 404, "already gone"


async def test_dashboard_settings_memory_fields(browser: httpx.AsyncClient, coach: Coach) -> None:
    csrf = await log_in(browser, coach)
    page = await browser.get("/dashboard/settings")
    assert 'name="recent_messages"' in page.text and 'name="session_idle_minutes"' in page.text
    form = {"_csrf_token": csrf, "name": "Memory Coach", "persona": "Be kind.", "llm_provider": "local"}
    saved = await browser.post(
        "/dashboard/settings", data={**form, "recent_messages": "6", "session_idle_minutes": "45"}
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert 'value="6"' in saved.text and 'value="45"' in saved.text
    bad = await browser.post("/dashboard/settings", data={**form, "recent_messages": "6", "session_idle_minutes": "0"})
    assert bad.status_code == 400 and "session_idle_minutes must be a whole number from 1 to 1440" in bad.text
    junk = await browser.post("/dashboard/settings", data={**form, "recent_messages": "many"})
    assert junk.status_code == 400 and "recent_messages must be a whole number" in junk.text
    kept = await browser.get("/dashboard/settings")
    assert 'value="6"' in kept.text and 'value="45"' in kept.text


async def test_openapi_lists_the_memory_api(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/schema/openapi.json")).json()["paths"]
    for path, methods in (
        ("/api/v1/clients/{client_id}/memory", {"get"}),
        ("/api/v1/clients/{client_id}/memory/insights/{insight_id}", {"patch", "delete"}),
        ("/api/v1/clients/{client_id}/memory/profile", {"patch"}),
        ("/api/v1/conversations/{conversation_id}/end-session", {"post"}),
        ("/api/v1/widget/memory", {"get"}),
        ("/api/v1/widget/memory/insights/{insight_id}", {"delete"}),
        ("/api/v1/widget/conversations/{conversation_id}/end-session", {"post"}),
    ):
        assert path in paths and methods <= set(paths[path]), path


async def add_older_sessions(container: Container, seeded: Seeded, texts: list[str]) -> list[str]:
    """Summarised sessions of ``seeded``'s conversation older than the seeded ones (five days ago and before,
    in ``texts`` order, newest first); returns their ids."""
    coach_id, now = uuid.UUID(seeded.coach.coach_id), datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        rows = [
            ChatSession(
                coach_id=coach_id,
                client_id=uuid.UUID(seeded.client_id),
                conversation_id=uuid.UUID(seeded.conversation_id),
                status=SessionStatus.SUMMARIZED,
                started_at=now - timedelta(days=5 + n),
                last_message_at=now - timedelta(days=5 + n),
                ended_at=now - timedelta(days=5 + n),
                message_count=4,
                summary={"summary": text, "topics": [], "action_items": [], "emotional_state": "calm"},
                source_message_ids=[],
            )
            for n, text in enumerate(texts)
        ]
        session.add_all(rows)
        await session.flush()
        return [str(row.id) for row in rows]


async def test_session_summaries_come_a_page_at_a_time_in_every_view(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, container: Container, maya: Seeded
) -> None:
    """A client of years has thousands of sessions: the coach's memory API, the client's, the dashboard's client
    page and the widget's memory page show a page of them, newest first, and lead to the older ones."""
    older = await add_older_sessions(container, maya, ["Older talk about shoes", "Oldest talk about running"])

    pages: list[dict] = []
    next_url: str | None = f"{maya.memory_url}?limit=2"
    while next_url is not None:
        response = await http.get(next_url, headers=maya.coach.headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = response.links.get("next", {}).get("url")
    assert [[s["id"] for s in page["summaries"]] for page in pages] == [[maya.failed_id, maya.summarized_id], older]
    assert all(len(page["insights"]) == 3 for page in pages), "every visible insight on each page"
    bad = await http.get(f"{maya.memory_url}?cursor=nope", headers=maya.coach.headers)
    assert bad.status_code == 400 and bad.json()["detail"].startswith("cursor is not a valid cursor")

    as_maya = {"Authorization": f"Bearer {maya.widget_token}"}
    first = await http.get("/api/v1/widget/memory?limit=2", headers=as_maya)
    assert [s["id"] for s in first.json()["summaries"]] == [maya.summarized_id], "the failed one is not the client's"
    rest = await http.get(first.links["next"]["url"], headers=as_maya)
    assert [s["id"] for s in rest.json()["summaries"]] == older and "next" not in rest.links

    await log_in(browser, maya.coach)
    newest = await browser.get(f"/dashboard/clients/{maya.client_id}?limit=2")
    assert newest.status_code == 200 and "Older talk about shoes" not in newest.text
    earlier = re.search(r'href="([^"]+)">Earlier sessions</a>', newest.text)
    assert earlier is not None and "Newest sessions" not in newest.text
    older_page = await browser.get(earlier.group(1).replace("&amp;", "&"))
    assert "Older talk about shoes" in older_page.text and "Oldest talk about running" in older_page.text
    assert "worries about her knee" not in older_page.text and "Earlier sessions" not in older_page.text
    assert "Newest sessions" in older_page.text

    async with httpx.AsyncClient(base_url=http.base_url, follow_redirects=True, timeout=60) as tab:
        assert (await tab.get(f"/w/{maya.widget_token}/memory")).status_code == 200  # the widget session's cookie
        widget_newest = await tab.get("/w/memory?limit=2")
        assert "worries about her knee" in widget_newest.text and "Older talk about shoes" not in widget_newest.text
        widget_earlier = re.search(r'href="([^"]+)">Earlier sessions</a>', widget_newest.text)
        assert widget_earlier is not None
        widget_older = await tab.get(widget_earlier.group(1).replace("&amp;", "&"))
        assert "Oldest talk about running" in widget_older.text and "Newest sessions" in widget_older.text
        assert (await tab.get("/w/memory?cursor=nope")).status_code == 400
    refused = await browser.get(f"/dashboard/clients/{maya.client_id}?cursor=nope")
    assert refused.status_code == 400 and "cursor is not a valid cursor" in refused.text
