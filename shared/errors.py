"""One error tree for Hookflow. HTTP-facing errors carry their status code.

::

    HookflowError
    ├── ConfigurationError            a setting is missing or malformed (500 at the edge)
    ├── HttpError                     carries ``status`` and ``code``; mapped to JSON in one place
    │   ├── BadRequest            400 malformed JSON, bad parameter
    │   │   └── DefinitionInvalid 400 with one entry per problem (JSON path + reason)
    │   ├── Unauthorized          401 bad or missing callback signature
    │   ├── NotFound              404 unknown workflow or run
    │   ├── Conflict              409 state does not allow it (a wait already resumed, run over)
    │   ├── Gone                  410 the wait or the workflow has ended
    │   ├── PayloadTooLarge       413 body over HOOKFLOW_MAX_BODY_BYTES
    │   ├── TooManyRequests       429 a trigger's concurrency limit is full
    │   └── ServiceUnavailable    503 storage does not answer
    ├── StoreError                    persistence outcomes the engine decides on
    │   ├── ConcurrencyConflict   an ETag-conditional write lost: reload and decide again
    │   ├── AlreadyExists         an insert found the row there (carries nothing else)
    │   ├── TableMissing          the table is not there (a day of the due index already dropped)
    │   └── RunTooLarge           a run's state no longer fits one entity-group transaction
    └── ExpressionError               a WDL expression does not parse or cannot be evaluated

Lower-level errors (``azure.core`` exceptions, ``requests`` exceptions) are translated in the
adapter that meets them and raised ``from`` the original.
"""

from __future__ import annotations

from typing import Any


class HookflowError(Exception):
    """Base of every error Hookflow raises on purpose."""


class ConfigurationError(HookflowError):
    """A setting is missing or malformed; the message names it."""


class HttpError(HookflowError):
    """An error with an HTTP status, shown to the caller as ``{"error": {...}}``."""

    status = 500
    code = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class BadRequest(HttpError):
    status = 400
    code = "BadRequest"


class DefinitionInvalid(BadRequest):
    """An invalid workflow definition; ``details`` lists ``{"path", "message"}`` per problem."""

    code = "InvalidDefinition"


class Unauthorized(HttpError):
    status = 401
    code = "Unauthorized"


class NotFound(HttpError):
    status = 404
    code = "NotFound"


class Conflict(HttpError):
    status = 409
    code = "Conflict"


class Gone(HttpError):
    status = 410
    code = "Gone"


class PayloadTooLarge(HttpError):
    status = 413
    code = "PayloadTooLarge"


class TooManyRequests(HttpError):
    status = 429
    code = "TooManyRequests"


class ServiceUnavailable(HttpError):
    status = 503
    code = "ServiceUnavailable"


class StoreError(HookflowError):
    """A persistence outcome the engine must decide on."""


class ConcurrencyConflict(StoreError):
    """An ETag-conditional write lost the race: reload and decide again, never overwrite."""


class AlreadyExists(StoreError):
    """An insert found a row with the same key."""


class TableMissing(StoreError):
    """The table an operation named does not exist."""


class RunTooLarge(StoreError):
    """A run's state no longer fits in one entity-group transaction (4 MiB)."""


class ExpressionError(HookflowError):
    """A WDL expression that does not parse, or that fails when evaluated.

    ``position`` is the 0-based offset in the expression text when known.
    """

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
