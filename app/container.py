"""Wiring shared by the web app and the worker: engine, services, providers, job queue."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.service import AccountService
from app.chat.service import ChatService
from app.core.config import Settings
from app.core.security import SecretBox
from app.db.engine import RELAY_KEY, assert_unprivileged, make_engine, make_sessionmaker, tenant_session
from app.db.outbox import relay
from app.handoff.alerts import AlertService
from app.handoff.live import LiveEvents
from app.handoff.service import HandoffService
from app.learning.cache import ResponseCache
from app.learning.dashboard import LearningDashboard
from app.learning.experiments import ExperimentService
from app.learning.finetune import FineTuneService
from app.learning.interventions import InterventionService
from app.learning.training import TrainingDataService
from app.learning.versions import ModelVersionService
from app.llm.registry import ProviderRegistry
from app.memory.service import MemoryService
from app.rag.service import DocumentService


@dataclass
class Container:
    """Everything a process needs, built once at start-up and closed at shutdown."""

    settings: Settings
    database_url: str
    redis_url: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    registry: ProviderRegistry
    accounts: AccountService
    documents: DocumentService
    memory: MemoryService
    handoffs: HandoffService
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

    @classmethod
    async def create(
        cls, settings: Settings, database_url: str, redis_url: str, *, registry: ProviderRegistry | None = None
    ) -> Container:
        """Connect to PostgreSQL (refusing a role that bypasses RLS) and Redis and build the services.

        ``registry`` lets tests and benchmarks share already-loaded local models between containers.
        """
        engine = make_engine(database_url)
        await assert_unprivileged(engine)
        sessionmaker = make_sessionmaker(engine)
        secrets = SecretBox.from_settings(settings)
        registry = registry or ProviderRegistry(settings, secrets)
        redis = await create_pool(RedisSettings.from_dsn(redis_url))
        # every committed unit of work sends the jobs it queued (app.db.outbox)
        sessionmaker.configure(info={RELAY_KEY: functools.partial(relay, sessionmaker, redis)})
        accounts = AccountService(sessionmaker, secrets, registry.egress)
        documents = DocumentService(sessionmaker, settings, registry, accounts)
        memory = MemoryService(sessionmaker, settings, registry, accounts, redis)
        live = LiveEvents(redis)
        interventions = InterventionService(sessionmaker, registry, accounts, memory)
        handoffs = HandoffService(sessionmaker, accounts, memory, live, interventions)
        alerts = AlertService(sessionmaker, settings, secrets)
        training = TrainingDataService(sessionmaker, accounts)
        fine_tunes = FineTuneService(sessionmaker, settings, registry, accounts, training)
        model_versions = ModelVersionService(sessionmaker, settings, registry, accounts, training)
        cache = ResponseCache(redis)
        experiments = ExperimentService(sessionmaker, accounts)
        learning_dashboard = LearningDashboard(
            sessionmaker, accounts, training, fine_tunes, model_versions, cache, experiments, registry, redis
        )
        chat = ChatService(
            sessionmaker,
            settings,
            registry,
            accounts,
            memory,
            handoffs,
            interventions=interventions,
            model_versions=model_versions,
            cache=cache,
            experiments=experiments,
        )
        return cls(
            settings,
            database_url,
            redis_url,
            engine,
            sessionmaker,
            redis,
            registry,
            accounts,
            documents,
            memory,
            handoffs,
            alerts,
            live,
            interventions,
            training,
            fine_tunes,
            model_versions,
            cache,
            experiments,
            learning_dashboard,
            chat,
        )

    @asynccontextmanager
    async def tenant(self, coach_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
        """One transaction scoped to ``coach_id`` (see :func:`app.db.engine.tenant_session`)."""
        async with tenant_session(self.sessionmaker, coach_id) as session:
            yield session

    async def close(self) -> None:
        """Close Redis and dispose of the connection pool."""
        await self.redis.aclose()
        await self.engine.dispose()
