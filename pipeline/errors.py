"""The exception tree of the pipeline, grouped by what the caller should do next.

    PipelineError                     base of everything we raise on purpose
    ├── UsageError                    bad config, flags or input files   -> exit code 2
    ├── FatalPortalError              stop the run and tell the operator what to fix -> exit 1
    │   (bad webhook, revoked credentials, missing scope, REST not on the plan,
    │    portal deleted, OVERLOAD_LIMIT, method not found)
    ├── OutputError                   the output root cannot be written or is locked -> exit 1
    └── TransientError                worth retrying: 5xx, non-JSON bodies, resets, timeouts,
        ├── RateLimited               503 QUERY_LIMIT_EXCEEDED: the whole client backs off
        └── OperatingLimited          429 OPERATION_TIME_LIMIT: pause that method until reset

Per-ID outcomes (Not found, Access denied, ...) are not exceptions: they are data, written to
the error sidecar. Messages never contain the webhook secret or tokens; build them from masked
URLs (see `pipeline.redact`).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the pipeline raises deliberately."""


class UsageError(PipelineError):
    """Bad configuration, command-line option or input: the operator must fix the call."""


class FatalPortalError(PipelineError):
    """The portal refuses the whole run; retrying will not help until someone fixes the cause."""

    def __init__(self, message: str, *, code: str = "", http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class OutputError(PipelineError):
    """The output root cannot be written, is locked by another run, or is inconsistent."""


class TransientError(PipelineError):
    """A fault that a later attempt may not meet again."""

    def __init__(self, message: str, *, code: str = "", http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class RateLimited(TransientError):
    """503 QUERY_LIMIT_EXCEEDED: the portal's leaky bucket is full."""


class OperatingLimited(TransientError):
    """429 OPERATION_TIME_LIMIT: the method's operating-time budget is spent."""


__all__ = [
    "FatalPortalError",
    "OperatingLimited",
    "OutputError",
    "PipelineError",
    "RateLimited",
    "TransientError",
    "UsageError",
]
