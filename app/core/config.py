"""Settings, read from the environment (prefix-free names, documented in README.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from limits import parse_many
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.core.egress import OutboundAllowlist
from app.core.hosts import parse_allowed_hosts, served_hosts

MAX_WAIT_SECONDS = 86_400.0
"""The longest a seconds setting (a timeout, deadline, lease or window) may be: a day. Every float setting is
finite too: ``inf`` or ``1e308`` seconds overflow the socket, timer and resource-limit calls that take them."""
MAX_WAIT_MS = int(MAX_WAIT_SECONDS * 1000)
"""The same day in milliseconds: the longest PostgreSQL timeout (a larger one, past 2^31 - 1, fails every
connection)."""
MAX_UPLOAD_MB = 1024.0
"""The largest ``MAX_UPLOAD_MB``: uploads are read into memory, and twice it bounds a request's body."""
MAX_THREADS = 256
"""The most CPU threads (``LLM_THREADS``, ``EMBED_THREADS``) and concurrent jobs or turns of one process
(``WORKER_MAX_JOBS``, ``TURN_CONCURRENCY``, ``INGEST_JOBS_PER_COACH``): far past any machine's cores or
database pool, where more only slows every one of them."""
HEADER_TIMEOUT_SECONDS = 10.0
"""The default ``HEADER_TIMEOUT_SECONDS``: a browser sends a request's headers in one packet, a client on a slow
mobile link within a few seconds (for comparison: nginx's ``client_header_timeout`` is 60 s, Apache's
``mod_reqtimeout`` 20 s, raised to 40 s while data keeps coming, Go's ``ReadHeaderTimeout`` none unless set)."""
BODY_TIMEOUT_SECONDS = 20.0
BODY_MIN_BYTES_PER_SECOND = 500
"""The defaults of ``BODY_TIMEOUT_SECONDS`` and ``BODY_MIN_BYTES_PER_SECOND``: Apache ``mod_reqtimeout``'s default
``body=20,MinRate=500``. 500 bytes a second is 4 kbit/s, below any link a person uploads over (a 50 MB upload
may take 28 hours at it), while a slow-POST client must send that much on each connection it holds."""


class Settings(BaseSettings):
    """Process-wide settings.

    Every field maps to an upper-case environment variable of the same name, e.g. ``DATABASE_URL``.
    With ``DATABASE_URL`` / ``REDIS_URL`` unset the runtime starts embedded servers in ``DATA_DIR``.

    Secret keys: ``SECRET_KEY`` is the one primary Fernet key (encrypts; unset: ``DATA_DIR/secret.key``),
    ``SECRET_KEY_OLD`` a comma-separated list of retired keys that still decrypt (``MultiFernet``). Rotation:
    move the current key to ``SECRET_KEY_OLD``, set a new ``SECRET_KEY``, restart, run ``opencoach
    rotate-secret``, then drop the old key. A value that is not a Fernet key fails validation (``ValueError``
    naming the variable).
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", allow_inf_nan=False)

    data_dir: Path = Field(default=Path(".opencoach"), description="Embedded servers, uploads, secrets.")
    database_url: str | None = Field(
        default=None,
        description="URL the app connects with (a role that is neither superuser nor BYPASSRLS).",
    )
    migration_database_url: str | None = Field(
        default=None, description="URL of the role that owns the schema; defaults to DATABASE_URL."
    )
    redis_url: str | None = None
    database_statement_timeout_ms: int = Field(
        default=60_000,
        ge=0,
        le=MAX_WAIT_MS,
        description="PostgreSQL statement_timeout of the app's connections (0: none): a query stuck behind a "
        "failing server ends with an error instead of holding a request or a worker slot.",
    )
    database_lock_timeout_ms: int = Field(
        default=10_000, ge=0, le=MAX_WAIT_MS, description="PostgreSQL lock_timeout of the app's connections (0: none)."
    )
    redis_socket_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds a Redis command or connection attempt may take before Redis counts as unavailable "
        "(a hung or restarting server).",
    )
    worker_lease_seconds: float = Field(
        default=60.0,
        ge=3,
        le=MAX_WAIT_SECONDS,
        description="A running job's claim in Redis lasts this long unless its worker renews it: the jobs of a "
        "killed worker (and its coach's ingestion slot) are taken up again this long after it died; a conversation's "
        "insight extraction lease lasts half of it.",
    )

    secret_key: str | None = Field(
        default=None,
        description="The primary Fernet key (urlsafe base64 of 32 bytes): encrypts every secret stored from now "
        "on (provider API keys, widget tokens, webhook secrets) and derives the CSRF secret; generated into "
        "DATA_DIR/secret.key when unset.",
    )
    secret_key_old: str = Field(
        default="",
        description="Rotation: comma-separated retired Fernet keys, still accepted for decryption only. To "
        "rotate, put the current key here, a new one in SECRET_KEY, restart, run `opencoach rotate-secret` "
        "(re-encrypts every stored secret under SECRET_KEY), then empty this.",
    )
    public_url: str = Field(default="http://127.0.0.1:8000", description="Base URL used in widget snippets.")
    allowed_hosts: str = Field(
        default="",
        description="Host names a request's Host header may name besides PUBLIC_URL's host and the loopback names "
        "(localhost, 127.0.0.1, [::1]), comma-separated, any port: e.g. 'coach.example.com,*.coach.example.com' "
        "(every subdomain), '*' (any host: no check). A request naming another host gets a 400 (DNS rebinding, "
        "Host-header poisoning; app/core/hosts.py).",
    )

    max_upload_mb: float = Field(default=25.0, gt=0, le=MAX_UPLOAD_MB)
    extract_memory_mb: int = Field(
        default=512,
        ge=128,
        le=65_536,
        description="Address-space limit (RLIMIT_AS, MB) of the process reading one upload.",
    )
    extract_cpu_seconds: int = Field(
        default=30,
        ge=1,
        le=int(MAX_WAIT_SECONDS),
        description="CPU seconds (RLIMIT_CPU) for opening an upload; pages add to it.",
    )
    extract_cpu_seconds_per_page: float = Field(
        default=0.5, ge=0, le=MAX_WAIT_SECONDS, description="CPU seconds each PDF page adds to EXTRACT_CPU_SECONDS."
    )
    extract_timeout_seconds: float = Field(
        default=600.0, gt=0, le=MAX_WAIT_SECONDS, description="Wall-clock deadline of one extraction."
    )
    extract_max_pages: int = Field(
        default=2000, ge=1, le=100_000, description="A PDF with more pages fails with the reason."
    )
    extract_max_characters: int = Field(
        default=5_000_000,
        ge=1000,
        le=100_000_000,
        description="A file with more characters of text fails with the reason.",
    )
    ingest_timeout_seconds: int = Field(
        default=1800,
        ge=10,
        le=int(MAX_WAIT_SECONDS),
        description="Deadline of one ingestion job (extract, embed, store); a document still processing "
        "past it (its worker was killed) is failed by the worker's sweep.",
    )
    ingest_jobs_per_coach: int = Field(
        default=1,
        ge=1,
        le=MAX_THREADS,
        description="Ingestion jobs one coach may run at once across every worker; more wait their turn "
        "without holding a worker slot.",
    )
    memory_jobs_per_coach: int = Field(
        default=1,
        ge=1,
        le=MAX_THREADS,
        description="Model-bound memory jobs (session summaries, insight extraction, profile updates, intervention "
        "analyses) one coach may run at once across every worker; more wait their turn without holding a worker "
        "slot, so one coach with many clients takes at most this many of the worker's slots.",
    )
    worker_max_jobs: int = Field(
        default=2,
        ge=1,
        le=MAX_THREADS,
        description="Jobs one worker process runs at once on the main queue (handoff alerts have their own).",
    )
    max_connections: int = Field(
        default=2000,
        ge=2,
        le=1_000_000,
        description="Connections one `opencoach serve` process holds at once (uvicorn's limit_concurrency: open "
        "connections, the widget's WebSockets among them, and requests in progress); an HTTP request past it gets "
        "a 503 at once instead of the process taking connections until its memory runs out, and so does a WebSocket "
        "handshake (app.core.connections). uvicorn counts the asking connection too, so at least 2.",
    )
    header_timeout_seconds: float = Field(
        default=HEADER_TIMEOUT_SECONDS,
        ge=1,
        le=3600,
        description="Seconds an `opencoach serve` connection has to send a request's headers, from when it opened "
        "or from the end of its previous response; one that has not sent them by then is closed (slowloris: "
        "connections that send nothing, or their headers a byte at a time, would otherwise hold MAX_CONNECTIONS). "
        "A request already under way (an event stream) and an open WebSocket are not timed out.",
    )
    body_timeout_seconds: float = Field(
        default=BODY_TIMEOUT_SECONDS,
        ge=1,
        le=3600,
        description="Seconds a request's body has on an `opencoach serve` connection, from the end of its headers, "
        "besides one more for every BODY_MIN_BYTES_PER_SECOND bytes received (Apache mod_reqtimeout's "
        "body=20,MinRate=500); a body late by then is answered 408 and the connection closed (slow POST: a body "
        "sent a byte every few seconds would otherwise hold MAX_CONNECTIONS). Time the server does not read the "
        "body does not count; a request without a body, a WebSocket and a response in progress are not timed out.",
    )
    body_min_bytes_per_second: int = Field(
        default=BODY_MIN_BYTES_PER_SECOND,
        ge=1,
        le=1_000_000,
        description="Bytes a second a request's body must come at (on average, past BODY_TIMEOUT_SECONDS) on an "
        "`opencoach serve` connection: each such many bytes give the body one second more.",
    )
    turn_concurrency: int = Field(
        default=4,
        ge=1,
        le=MAX_THREADS,
        description="Chat turns one process answers at once; later ones wait for a slot, coaches served in turn "
        "and each coach's turns in arrival order "
        "(admission control: past the CPU and the database pool, more turns at once only make every turn slower, "
        "and a turn left waiting for a pooled connection past the pool's timeout fails, bench/load.py).",
    )
    turn_concurrency_per_coach: int | None = Field(
        default=None,
        ge=1,
        le=MAX_THREADS,
        description="Chat turns of one coach one process answers at once (unset: half of TURN_CONCURRENCY, at "
        "least 1); the coach's further turns wait their turn while other coaches' turns take the free slots. A turn "
        "holds its slot until the coach's model answers (up to LLM_TIMEOUT_SECONDS): without a cap, one coach's "
        "slow model or burst of clients took every slot and stalled every other coach's chat.",
    )
    episode_embed_window_seconds: float = Field(
        default=30.0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="The AI's and the coach's messages of one conversation sent within this window share one "
        "episodic embedding job, run when the window ends: one batch instead of a job and a model call per "
        "reply (0: a job per message, at once). A message is recalled only once it has left the L1 window, "
        "which takes longer than this at a person's pace.",
    )
    retrieval_top_k: int = Field(default=5, ge=1, le=50)
    vector_index_min_chunks: int = Field(
        default=2_000,
        ge=1,
        le=100_000_000,
        description="A coach with this many chunks gets an HNSW index of its own (built by the worker within "
        "ten minutes, dropped below half of it); smaller coaches are searched exactly (at 1M chunks a 2,000-chunk "
        "coach's exact search took about as long as the 150k-chunk coach's index scan, bench/scale.py).",
    )
    rerank_base_url: str = Field(
        default="",
        description="Base URL of a /rerank endpoint (Jina, Cohere v2, vLLM or TEI wire format) that reorders the "
        "retrieved passages; empty (default): no reranker. Checked by the egress guard like coach URLs.",
    )
    rerank_model: str = Field(default="", description="Model name sent to the reranker.")
    rerank_api_key: str | None = Field(default=None, description="Bearer key for the reranker, if it needs one.")
    llm_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds a model endpoint may take to connect, and between two reads.",
    )
    llm_deadline_seconds: float = Field(
        default=300.0,
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="Overall deadline of one call to a model endpoint (a whole streamed reply, a JSON "
        "completion, an embedding batch), however steadily it drip-feeds bytes.",
    )
    llm_max_tokens: int = Field(
        default=256,
        ge=16,
        le=16_384,
        description="Reply length limit; at most half of LLM_CONTEXT_TOKENS and of LLM_REMOTE_CONTEXT_TOKENS, "
        "so the prompt keeps the other half.",
    )
    llm_context_tokens: int = Field(default=2048, ge=512, le=131_072, description="Context window of the local model.")
    llm_remote_context_tokens: int = Field(
        default=16384,
        ge=2048,
        le=2_097_152,
        description="Context window the chat prompt may use on an OpenAI-compatible endpoint (the coach's own "
        "model): 16k fits every current OpenAI chat model and most served open models.",
    )
    llm_threads: int | None = Field(default=None, ge=1, le=MAX_THREADS, description="CPU threads for the local model.")
    embed_threads: int | None = Field(
        default=None,
        ge=1,
        le=MAX_THREADS,
        description="Intra-op CPU threads of the local embedder (ONNX Runtime; they sleep between parallel "
        "regions, never spin); unset: one per core. Set 1 where several embedding processes share each core.",
    )

    smtp_host: str | None = Field(default=None, description="SMTP server for coach alert e-mails; unset: no e-mail.")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = Field(default="OpenCoach <alerts@opencoach.local>", description="From: of alert e-mails.")
    smtp_starttls: bool = Field(default=True, description="Upgrade the SMTP connection with STARTTLS.")

    telegram_api_url: str = Field(
        default="https://api.telegram.org",
        description="Bot API server the Telegram channel calls (operator setting; a self-hosted Bot API server "
        "accepts http webhooks). A host that is not public must be in OUTBOUND_ALLOW.",
    )
    telegram_mode: Literal["auto", "webhook", "polling"] = Field(
        default="auto",
        description="How bots get updates: auto = webhook when PUBLIC_URL is https or TELEGRAM_API_URL is not "
        "Telegram's public server, otherwise getUpdates long polling.",
    )

    outbound_allow: str = Field(
        default="",
        description="Hosts and IP addresses/CIDR networks that coach-configured URLs (LLM base URL, alert "
        "webhook) may reach although they are not public, also over plain http (e.g. "
        "'localhost,127.0.0.1,::1' for Ollama or vLLM on this machine); comma-separated, empty by default. "
        "Cloud metadata addresses stay refused. See app/core/egress.py.",
    )

    @field_validator("secret_key", "secret_key_old")
    @classmethod
    def _valid_fernet_keys(cls, value: str | None, info: ValidationInfo) -> str | None:
        keys = _split(value or "") if info.field_name == "secret_key_old" else [value] if value else []
        for key in keys:
            try:
                Fernet(key)
            except ValueError:
                raise ValueError(
                    f"{(info.field_name or '').upper()} holds a value that is not a Fernet "
                    "key (32 url-safe base64-encoded bytes, e.g. from cryptography's Fernet.generate_key())"
                ) from None
        return value

    def turn_slots_per_coach(self) -> int:
        """The turn slots one coach may hold at once in a process: ``TURN_CONCURRENCY_PER_COACH``, or half of
        ``TURN_CONCURRENCY`` (at least 1) when unset, so that one coach's turns leave the other half free."""
        return self.turn_concurrency_per_coach or max(1, self.turn_concurrency // 2)

    def old_secret_keys(self) -> list[str]:
        """The retired keys of ``SECRET_KEY_OLD``, in the order given (empty list when unset)."""
        return _split(self.secret_key_old)

    auth_rate_limit_ip: str = Field(
        default="20/minute;100/hour",
        description="Log-in, sign-up and password-change attempts allowed per client IP address, in the "
        "`limits` package's notation ('N/second|minute|hour|day', several separated by ';'). Counted in Redis.",
    )
    auth_rate_limit_account: str = Field(
        default="5/minute;30/hour",
        description="Log-in, sign-up and password-change attempts allowed per account (e-mail address), "
        "whatever IP addresses they come from; same notation as AUTH_RATE_LIMIT_IP.",
    )

    chat_rate_limit: str = Field(
        default="30/minute;300/hour",
        description="Messages a client may send, on every channel (widget, API, Telegram), in the `limits` "
        "package's notation; a message over it is refused and not stored (429 on the API, an error event on the "
        "widget's socket, a reply in Telegram). Counted in Redis.",
    )

    telegram_enrollment_limit: str = Field(
        default="20/hour;100/day",
        description="Strangers who may become a coach's clients by writing to the coach's Telegram bot with open "
        "enrolment on, per coach (same notation); one over it is asked to try later or ask for an invite link, "
        "and no client is made. Counted in Redis.",
    )

    alert_email_confirm_limit: str = Field(
        default="5/hour;20/day",
        description="Confirmation e-mails a coach may have sent to new alert addresses (a new alert_email or "
        '"Resend the link"), per coach (same notation); one over it is refused (429) and nothing is changed. '
        "Counted in Redis.",
    )

    alert_email_address_limit: str = Field(
        default="3/hour;10/day",
        description="Confirmation e-mails one address may be sent, from every coach together (same notation; the "
        "address lower-cased, without a +tag): many accounts cannot mail-bomb one address. One over it is refused "
        "(429) and nothing is changed. Counted in Redis.",
    )

    @field_validator("database_url", "migration_database_url")
    @classmethod
    def _asyncpg_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A PostgreSQL URL for SQLAlchemy's asyncpg dialect: ``postgres://`` and ``postgresql://`` (what managed
        providers hand out) get the ``+asyncpg`` driver, and libpq's ``sslmode`` is passed as asyncpg's ``ssl``
        (which takes the same modes). Raises ``ValueError`` naming the variable for any other URL."""
        if not value:
            return value
        name = (info.field_name or "").upper()
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"{name} is not a URL (postgresql://user:password@host:5432/database)") from None
        if url.drivername not in ("postgres", "postgresql", "postgresql+asyncpg"):
            raise ValueError(
                f"{name} must be a PostgreSQL URL used with asyncpg (postgresql://… or postgresql+asyncpg://…), "
                f"not {url.drivername}://…"
            )
        query = dict(url.query)
        if "sslmode" in query:
            query.setdefault("ssl", query.pop("sslmode"))
        return url.set(drivername="postgresql+asyncpg", query=query).render_as_string(hide_password=False)

    @field_validator(
        "auth_rate_limit_ip",
        "auth_rate_limit_account",
        "chat_rate_limit",
        "telegram_enrollment_limit",
        "alert_email_confirm_limit",
        "alert_email_address_limit",
    )
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        parse_many(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _valid_allowed_hosts(cls, value: str) -> str:
        parse_allowed_hosts(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _valid_outbound_allow(cls, value: str) -> str:
        OutboundAllowlist.parse(value)  # raises ValueError naming the bad entry
        return value

    @model_validator(mode="after")
    def _public_url_has_a_host(self) -> Settings:
        """``PUBLIC_URL`` is an absolute http(s) URL whose host is one the app answers
        (:func:`app.core.hosts.served_hosts`): one without a scheme or host, or whose host is no host name or IP
        address, is refused, naming it."""
        served_hosts(self.public_url, self.allowed_hosts)
        return self

    @model_validator(mode="after")
    def _reply_fits_the_windows(self) -> Settings:
        """``LLM_MAX_TOKENS`` leaves the prompt at least half of each context window (a larger one left the
        prompt a budget of nothing, or less than nothing)."""
        window = min(self.llm_context_tokens, self.llm_remote_context_tokens)
        if self.llm_max_tokens > window // 2:
            raise ValueError(
                f"LLM_MAX_TOKENS ({self.llm_max_tokens}) must be at most half of LLM_CONTEXT_TOKENS and of "
                f"LLM_REMOTE_CONTEXT_TOKENS ({window // 2})"
            )
        return self


def _split(value: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated setting."""
    return [item.strip() for item in value.split(",") if item.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the cached process settings (call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
