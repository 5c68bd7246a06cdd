"""Domain errors raised by services; ``app.asgi`` maps them to HTTP responses with their message."""


class DomainError(Exception):
    """Base class; ``status_code`` is the HTTP status the API answers with. ``message`` is English; a refusal a
    client may read also has a stable ``code`` (``""``: none) and the values its text names (``fields``), which
    :func:`app.handoff.catalogue.refusal` says in the client's language (the catalogue's ``refused_<code>``)."""

    status_code = 400

    def __init__(self, message: str, *, code: str = "", fields: dict[str, str | int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.fields = fields or {}

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the status and message (none by default)."""
        return {}


class InvalidInput(DomainError):
    """The request is well-formed but its content is not acceptable (400)."""


class NotFound(DomainError):
    """No such object for this tenant (404; another tenant's ids look exactly like missing ones)."""

    status_code = 404


class Conflict(DomainError):
    """The object already exists, e.g. an e-mail address that is taken (409). ``location``: the path of the
    existing object, when the caller may have it (sent as the ``Location`` header)."""

    status_code = 409

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location

    def headers(self) -> dict[str, str]:
        """``Location`` of the existing object, when known."""
        return {"Location": self.location} if self.location else {}


class TooLarge(DomainError):
    """An upload over the size limit (413)."""

    status_code = 413


class Unavailable(DomainError):
    """The request was taken but cannot be completed now; what it stored is kept and finished later (503)."""

    status_code = 503


class TooManyAttempts(DomainError):
    """A rate limit was hit (429, "too many ``what``: …"); ``retry_after`` is the number of whole seconds until
    the next attempt may pass (sent as the ``Retry-After`` header, RFC 9110 §10.2.3)."""

    status_code = 429

    def __init__(self, retry_after: int, *, what: str = "attempts") -> None:
        super().__init__(
            f"too many {what}: try again in {retry_after} s", code="rate_limited", fields={"retry_after": retry_after}
        )
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds."""
        return {"Retry-After": str(self.retry_after)}


class EvalDataError(ValueError):
    """An evaluation data file (LoCoMo, C-SSRS, …) is missing, unreadable or not in its format; the message
    says what and where. The CLI prints it as one ``error:`` line and exits with code 2."""


class Forbidden(DomainError):
    """The caller is known but may not do this (e.g. a wrong password confirming an account deletion)."""

    status_code = 403
