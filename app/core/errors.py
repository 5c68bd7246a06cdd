"""Domain errors raised by services; ``app.asgi`` maps them to HTTP responses with their message."""


class DomainError(Exception):
    """Base class; ``status_code`` is the HTTP status the API answers with."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """The request is well-formed but its content is not acceptable (400)."""


class NotFound(DomainError):
    """No such object for this tenant (404; another tenant's ids look exactly like missing ones)."""

    status_code = 404


class Conflict(DomainError):
    """The object already exists, e.g. an e-mail address that is taken (409)."""

    status_code = 409


class TooLarge(DomainError):
    """An upload over the size limit (413)."""

    status_code = 413


class EvalDataError(ValueError):
    """An evaluation data file (LoCoMo, C-SSRS, …) is missing, unreadable or not in its format; the message
    says what and where. The CLI prints it as one ``error:`` line and exits with code 2."""


class Forbidden(DomainError):
    """The caller is known but may not do this (e.g. a wrong password confirming an account deletion)."""

    status_code = 403
