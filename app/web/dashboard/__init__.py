"""Coach dashboard (server-rendered Jinja2 + htmx), one controller per resource: sign-up / log-in
(:mod:`.auth`), documents, clients and their memory, conversations, the handoff queue and drafts, learning,
live events, settings. Pages call the same services as the REST API; form parsing is in :mod:`.forms`.

Every page behind log-in subclasses :class:`app.web.dashboard.auth.CoachPage`; ``app/asgi.py`` mounts each
controller. Live updates reach the pages through ``GET /dashboard/events`` (:mod:`.events`)."""
