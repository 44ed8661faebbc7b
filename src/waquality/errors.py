"""One error tree for the whole package.

::

    WaqualityError
    ├── ConfigError            settings that cannot be used; start-up stops with its message
    ├── StoreUnavailable       the database cannot commit right now (the webhook answers 503)
    │   └── StoreConflict      a deadlock or serialisation failure: retry the transaction
    ├── PayloadError           an authentic payload that cannot be parsed (it is quarantined)
    ├── GraphError             a Graph API call failed; carries its class (rate limit, auth...)
    └── ApiError               an HTTP-facing error; carries its status and a stable code
        ├── BadRequest         400
        ├── Unauthorized       401
        ├── NotFound           404
        └── Conflict           409
"""

from __future__ import annotations


class WaqualityError(Exception):
    """Base of every error raised on purpose by waquality."""


class ConfigError(WaqualityError):
    """A setting is missing, malformed or contradictory."""


class StoreUnavailable(WaqualityError):
    """The store could not durably commit (database down, disk full, file locked)."""


class StoreConflict(StoreUnavailable):
    """Concurrent transactions collided (deadlock, serialisation failure); retrying succeeds."""


class PayloadError(WaqualityError):
    """A webhook payload, or one part of it, that cannot be understood."""


class GraphError(WaqualityError):
    """A Graph API call that failed. ``kind`` is a :class:`waquality.graph.client.ErrorKind`
    value; ``retry_after`` is Meta's own estimate in seconds, when it gave one."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind, self.message, self.code, self.status = kind, message, code, status
        self.retry_after = retry_after


class ApiError(WaqualityError):
    status: int = 500
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"
