"""The Litestar application: routes, dependencies, error mapping, templates, static files, sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response
from litestar.channels import ChannelsPlugin
from litestar.config.csrf import CSRFConfig
from litestar.di import Provide
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.stores.redis import RedisStore
from litestar.template.config import TemplateConfig
from redis.asyncio import Redis

from app.channels.web.chat import ChatController, FeedbackController, WidgetConversationController, chat_socket
from app.channels.web.widget import WidgetController
from app.container import Container
from app.core.config import Settings
from app.core.errors import DomainError
from app.core.security import SecretBox
from app.deps import provide_container
from app.handoff.live import ReconnectingPubSubBackend
from app.llm.registry import ProviderRegistry
from app.web.api.accounts import AuthController, ClientController, SettingsController
from app.web.api.conversations import ConversationController
from app.web.api.documents import DocumentController
from app.web.api.experiments import ExperimentController
from app.web.api.handoff import HandoffController
from app.web.api.learning_dashboard import LearningDashboardController
from app.web.api.memory import MemoryController, SessionController, WidgetMemoryController
from app.web.api.training import ModelController, TrainingController
from app.web.dashboard.auth import DashboardController
from app.web.dashboard.clients import ClientPages
from app.web.dashboard.conversations import ConversationPages
from app.web.dashboard.documents import DocumentPages
from app.web.dashboard.events import EventPages
from app.web.dashboard.handoffs import HandoffPages
from app.web.dashboard.learning import LearningPages
from app.web.dashboard.settings import SettingsPages

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SESSION_MAX_AGE_S = 14 * 24 * 3600


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    """Map a service's ``DomainError`` to its HTTP status with the message as ``detail``."""
    return Response({"status_code": exc.status_code, "detail": exc.message}, status_code=exc.status_code)


def create_app(
    settings: Settings, database_url: str, redis_url: str, *, registry: ProviderRegistry | None = None
) -> Litestar:
    """Build the ASGI app. The container (DB pool, Redis, services) is created on start-up and closed on
    shutdown; ``registry`` lets tests share loaded local models."""

    async def startup(app: Litestar) -> None:
        container = await Container.create(settings, database_url, redis_url, registry=registry)
        app.state.container = container
        # load the offline models in the background; requests that need them first wait on the registry lock
        app.state.warm_up = asyncio.create_task(asyncio.to_thread(container.registry.warm_up))

    async def shutdown(app: Litestar) -> None:
        warm_up: asyncio.Task[None] | None = getattr(app.state, "warm_up", None)
        if warm_up is not None:
            await asyncio.gather(warm_up, return_exceptions=True)
        container: Container | None = getattr(app.state, "container", None)
        if container is not None:
            await container.close()

    max_body = int((settings.max_upload_mb * 2 + 1) * 1024 * 1024)
    return Litestar(
        route_handlers=[
            AuthController,
            ClientController,
            SettingsController,
            DocumentController,
            ChatController,
            FeedbackController,
            WidgetConversationController,
            ConversationController,
            HandoffController,
            TrainingController,
            ModelController,
            ExperimentController,
            LearningDashboardController,
            chat_socket,
            MemoryController,
            SessionController,
            WidgetMemoryController,
            DashboardController,
            DocumentPages,
            ClientPages,
            ConversationPages,
            HandoffPages,
            LearningPages,
            EventPages,
            SettingsPages,
            WidgetController,
            create_static_files_router(path="/static", directories=[PROJECT_ROOT / "static"]),
        ],
        dependencies={"container": Provide(provide_container, sync_to_thread=False)},
        exception_handlers={DomainError: domain_error_handler},
        on_startup=[startup],
        on_shutdown=[shutdown],
        template_config=TemplateConfig(directory=PROJECT_ROOT / "templates", engine=JinjaTemplateEngine),
        stores={"sessions": RedisStore.with_client(redis_url, namespace="opencoach_sessions")},
        middleware=[
            ServerSideSessionConfig(
                max_age=SESSION_MAX_AGE_S, samesite="lax", exclude=["/api", "/ws", "/static"]
            ).middleware
        ],
        csrf_config=CSRFConfig(
            secret=SecretBox.from_settings(settings).derive("csrf"),
            cookie_name="oc_csrf",
            header_name="x-csrftoken",
            exclude=["/api", "/ws", "/static", "/w/"],
        ),
        openapi_config=OpenAPIConfig(title="OpenCoach API", version="1.0.0", path="/schema"),
        request_max_body_size=max_body,
        # live events (app.handoff.live) from any process reach this process's subscribers through Redis
        plugins=[
            ChannelsPlugin(
                backend=ReconnectingPubSubBackend(redis=Redis.from_url(redis_url)), arbitrary_channels_allowed=True
            )
        ],
    )
