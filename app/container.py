"""Wiring shared by the web app and the worker: engine, services, providers, job queue."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.service import AccountService
from app.accounts.tone import ToneService
from app.chat.embeddings import EmbeddingService
from app.chat.turn import ChatService
from app.conversations.service import ConversationService
from app.core.config import Settings
from app.core.ratelimit import AuthThrottle, ConfirmationThrottle, IdThrottle
from app.core.security import SecretBox
from app.db.engine import RELAY_KEY, assert_unprivileged, make_engine, make_sessionmaker
from app.db.jobs import EMBED_WINDOW_KEY
from app.db.outbox import AfterCommitRelay, connect_redis
from app.handoff.actions import CoachActions
from app.handoff.alerts import AlertService
from app.handoff.drafts import DraftService
from app.handoff.live import LiveEvents
from app.handoff.queue import HandoffQueue
from app.handoff.service import HandoffService
from app.handoff.signals import coach_topics
from app.handoff.sla import SlaNotices
from app.learning.cache import ResponseCache
from app.learning.dashboard import LearningDashboard
from app.learning.experiments import ExperimentService
from app.learning.finetune import FineTuneService
from app.learning.interventions import InterventionService
from app.learning.rights import DataRightsService
from app.learning.training import TrainingDataService
from app.learning.versions import ModelVersionService
from app.llm.registry import ProviderRegistry
from app.memory.controls import MemoryControls
from app.memory.episodes import EpisodeService
from app.memory.insights import InsightService
from app.memory.profile import ProfileService
from app.memory.sessions import SessionService
from app.memory.summaries import SummaryService
from app.rag.passages import current_citations
from app.rag.service import DocumentService

OUTBOX_DRAIN_S = 10.0
"""Seconds :meth:`Container.close` waits for the after-commit relay's pending deletions."""


@dataclass
class Container:
    """Everything a process needs, built once at start-up and closed at shutdown."""

    settings: Settings
    database_url: str
    redis_url: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    outbox: AfterCommitRelay
    registry: ProviderRegistry
    accounts: AccountService
    documents: DocumentService
    memory: MemoryControls
    sessions: SessionService
    summaries: SummaryService
    insights: InsightService
    episodes: EpisodeService
    embeddings: EmbeddingService
    profiles: ProfileService
    handoffs: HandoffService
    handoff_queue: HandoffQueue
    coach_actions: CoachActions
    drafts: DraftService
    sla_notices: SlaNotices
    alerts: AlertService
    live: LiveEvents
    interventions: InterventionService
    training: TrainingDataService
    fine_tunes: FineTuneService
    model_versions: ModelVersionService
    cache: ResponseCache
    experiments: ExperimentService
    learning_dashboard: LearningDashboard
    chat: ChatService
    conversations: ConversationService
    rights: DataRightsService
    tone: ToneService
    auth_throttle: AuthThrottle
    message_throttle: IdThrottle
    enrollment_throttle: IdThrottle
    confirmation_throttle: ConfirmationThrottle

    @classmethod
    async def create(
        cls, settings: Settings, database_url: str, redis_url: str, *, registry: ProviderRegistry | None = None
    ) -> Container:
        """Connect to PostgreSQL (refusing a role that bypasses RLS) and Redis and build the services.

        ``registry`` lets tests and benchmarks share already-loaded local models between containers.
        """
        engine, sessionmaker, redis, outbox = await _connect(settings, database_url, redis_url)
        secrets = SecretBox.from_settings(settings)
        registry = registry or ProviderRegistry(settings, secrets)
        mails = ConfirmationThrottle(redis_url, settings.alert_email_confirm_limit, settings.alert_email_address_limit)
        accounts = AccountService(sessionmaker, secrets, registry.egress, mails)
        memory = MemoryControls(sessionmaker, registry, accounts)
        live = LiveEvents(redis)
        interventions = InterventionService(sessionmaker, registry, accounts, memory, coach_topics)
        handoffs = HandoffService(memory, live)
        accounts.widget_access_ended.append(live.end_widget_sockets)
        training = TrainingDataService(sessionmaker, accounts)
        fine_tunes = FineTuneService(sessionmaker, settings, registry, accounts, training)
        model_versions = ModelVersionService(sessionmaker, settings, registry, accounts, training)
        cache = ResponseCache(redis)
        experiments = ExperimentService(sessionmaker, accounts)
        message_throttle = IdThrottle(redis_url, "opencoach_chat", settings.chat_rate_limit, "messages")
        return cls(
            settings=settings,
            database_url=database_url,
            redis_url=redis_url,
            engine=engine,
            sessionmaker=sessionmaker,
            redis=redis,
            outbox=outbox,
            registry=registry,
            accounts=accounts,
            documents=DocumentService(sessionmaker, settings, registry, accounts),
            memory=memory,
            sessions=SessionService(sessionmaker, accounts),
            summaries=SummaryService(sessionmaker, settings, registry, accounts),
            insights=InsightService(sessionmaker, settings, registry, accounts, redis),
            episodes=EpisodeService(sessionmaker, registry),
            embeddings=EmbeddingService(sessionmaker, registry, accounts, secrets),
            profiles=ProfileService(sessionmaker, settings, registry, accounts),
            handoffs=handoffs,
            handoff_queue=HandoffQueue(sessionmaker, accounts),
            coach_actions=CoachActions(sessionmaker, accounts, handoffs, interventions),
            drafts=DraftService(sessionmaker, accounts, handoffs, interventions),
            sla_notices=SlaNotices(sessionmaker, accounts, handoffs),
            alerts=AlertService(sessionmaker, settings, secrets),
            live=live,
            interventions=interventions,
            training=training,
            fine_tunes=fine_tunes,
            model_versions=model_versions,
            cache=cache,
            experiments=experiments,
            learning_dashboard=LearningDashboard(
                sessionmaker, accounts, training, fine_tunes, model_versions, cache, experiments, registry, redis
            ),
            chat=ChatService(
                sessionmaker,
                settings,
                registry,
                handoffs,
                throttle=message_throttle,
                interventions=interventions,
                model_versions=model_versions,
                cache=cache,
                experiments=experiments,
            ),
            conversations=ConversationService(sessionmaker, current_citations, cache.reject),
            rights=DataRightsService(sessionmaker, accounts, interventions, fine_tunes, cache, redis),
            tone=ToneService(),
            auth_throttle=AuthThrottle(redis_url, settings.auth_rate_limit_ip, settings.auth_rate_limit_account),
            message_throttle=message_throttle,
            enrollment_throttle=IdThrottle(
                redis_url, "opencoach_enrol", settings.telegram_enrollment_limit, "new clients"
            ),
            confirmation_throttle=mails,
        )

    async def close(self) -> None:
        """Finish deleting the sent outbox rows (for :data:`OUTBOX_DRAIN_S` at most: rows left are sent again by
        the relay cron, and arq refuses them), close Redis and dispose of the connection pool."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OUTBOX_DRAIN_S):
                await self.outbox.drain()
        await self.auth_throttle.close()
        await self.message_throttle.close()
        await self.enrollment_throttle.close()
        await self.confirmation_throttle.close()
        await self.redis.aclose()
        await self.engine.dispose()


async def _connect(
    settings: Settings, database_url: str, redis_url: str
) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession], ArqRedis, AfterCommitRelay]:
    """The engine (after checking its role cannot bypass row-level security; with the statement and lock
    timeouts of ``settings``), its sessionmaker (whose every committed unit of work sends the jobs it queued,
    see :mod:`app.db.outbox`), the arq Redis client (with its socket timeout) and the relay the
    sessionmaker's units of work call after commit. The sessionmaker's sessions also carry the episodic
    embedding window (:data:`app.db.jobs.EMBED_WINDOW_KEY`)."""
    engine = make_engine(
        database_url,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        lock_timeout_ms=settings.database_lock_timeout_ms,
    )
    await assert_unprivileged(engine)
    sessionmaker = make_sessionmaker(engine)
    redis = connect_redis(redis_url, socket_timeout_s=settings.redis_socket_timeout_seconds)
    outbox = AfterCommitRelay(sessionmaker, redis)
    sessionmaker.configure(info={RELAY_KEY: outbox, EMBED_WINDOW_KEY: settings.episode_embed_window_seconds})
    return engine, sessionmaker, redis, outbox
