"""One exception tree.  Each error carries its data, an HTTP status and a CLI exit code.

The API renders every ``LadderError`` as ``{"code", "message", "errors"}`` with
``http_status``; the CLI prints ``str(error)`` and exits with ``exit_code``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class LadderError(Exception):
    code = "error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, errors: Any = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "errors": self.errors}


# ---------------------------------------------------------------- rule files
@dataclass
class RuleFileProblem:
    """One problem in a rule file, printed as ``path:line:col: message``."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class RuleFileError(LadderError):
    """A programme that does not validate; ``problems`` lists every problem found."""

    code = "invalid_programme"
    http_status = 422
    exit_code = 1

    def __init__(self, problems: list[RuleFileProblem]):
        self.problems = problems
        super().__init__(
            "\n".join(str(p) for p in problems) or "invalid programme",
            {"problems": [str(p) for p in problems]},
        )


# ---------------------------------------------------------------- settings
class ConfigError(LadderError):
    code = "invalid_config"
    http_status = 500
    exit_code = 2


# ---------------------------------------------------------------- requests
class BadRequest(LadderError):
    code = "bad_request"
    http_status = 400


class Unauthorized(LadderError):
    code = "unauthorized"
    http_status = 401


class NotFound(LadderError):
    code = "not_found"
    http_status = 404
    exit_code = 3


class Conflict(LadderError):
    code = "conflict"
    http_status = 409


class EngineError(LadderError):
    """durable_rules misbehaved (an action raised, a result went missing)."""

    code = "engine_error"
    http_status = 500


# ---------------------------------------------------------------- delivery (adapters)
class SignatureError(Unauthorized):
    code = "bad_signature"


class DeliveryError(LadderError):
    code = "delivery_failed"
    http_status = 502


class RateLimited(DeliveryError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(DeliveryError):
    """The shop refused the request permanently (4xx, GraphQL userErrors)."""

    code = "rejected"


class Unavailable(DeliveryError):
    """The shop could not be reached or failed (5xx, timeout); retry later."""

    code = "unavailable"


class NotSupported(DeliveryError):
    """The platform cannot carry this reward (yet): the award needs a person, never a retry."""

    code = "needs_manual_action"
