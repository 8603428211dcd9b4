"""What to do next with an error the portal (or the network) gave us: one pure function.

    classify(http_status, code, description, context) -> Action

Order of evidence, as bitrix24-api.md §7.2 advises: the `error` code first, the HTTP status
second, and the human `error_description` only for the four fixed English strings that
`crm.deal.get` raises with an empty code (§4.3; descriptions are otherwise localised).

    Action            meaning                                      caller's reaction
    PERMANENT         this deal will never come back (per ID)       DealFailed(retryable=False)
    TRANSIENT         a later attempt may succeed                   backoff, spend one attempt
    RATE_LIMIT        503 QUERY_LIMIT_EXCEEDED                      whole client backs off
    OPERATING_LIMIT   429 OPERATION_TIME_LIMIT                      pause the method until reset
    AUTH_REFRESH      401 expired_token                             refresh OAuth token once
    FATAL             the run cannot succeed until someone acts     raise FatalPortalError

`context` says where the error sat: "top" (the whole HTTP response) or "command" (one command
inside a batch, or the answer of a plain `crm.deal.get` about its one ID). An empty code with an
unknown description means a server-side exception raised without a code; for one command that is
about the deal (permanent), for the whole request it means our request is unusable (fatal).
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pipeline.outcomes import ErrorClass

Context = Literal["top", "command"]


class Action(Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    RATE_LIMIT = "rate_limit"
    OPERATING_LIMIT = "operating_limit"
    AUTH_REFRESH = "auth_refresh"
    FATAL = "fatal"

    @property
    def error_class(self) -> ErrorClass:
        """The sidecar's `error_class` column for this action."""
        if self is Action.PERMANENT:
            return "permanent"
        if self in (Action.RATE_LIMIT, Action.OPERATING_LIMIT):
            return "limit"
        if self is Action.FATAL:
            return "fatal"
        return "transient"


#: `crm.deal.get` per-record errors: empty code, fixed English text (CORE-CRM `innerGet`,
#: `CCrmRestProxyBase::get`). Matched with and without the trailing period, case-sensitively
#: apart from that, because docs and server code disagree on the period.
PERMANENT_DESCRIPTIONS = frozenset(
    {"Not found", "Access denied", "ID is not defined or invalid"},
)

#: Codes that stop the run, with the hint the operator needs (bitrix24-api.md §4.2, §4.4, §6).
FATAL_CODES: dict[str, str] = {
    "NO_AUTH_FOUND": "the webhook URL or token is wrong or was deleted: check the webhook URL",
    "INVALID_CREDENTIALS": "the credentials were rejected or the user lacks rights: "
    "check the webhook/app and its user's permissions",
    "invalid_token": "the OAuth token is unknown to the portal: re-authorise the application",
    "invalid_grant": "the refresh token was rejected (expired or revoked): "
    "re-authorise the application",
    "invalid_client": "the OAuth client id/secret were rejected: check client_id and client_secret",
    "invalid_request": "the OAuth server rejected the refresh request: check the OAuth settings",
    "insufficient_scope": "the webhook/app lacks a required scope: grant it the `crm` scope",
    "invalid_scope": "the webhook/app lacks a required scope: grant it the `crm` scope",
    "ACCESS_DENIED": "REST access was refused (REST needs a commercial plan, or the user may not "
    "use it): check the portal's plan and the webhook user",
    "user_access_error": "the user has no access to the application: check its access rights",
    "WRONG_AUTH_TYPE": "this method cannot be called with this kind of credentials",
    "PAYMENT_REQUIRED": "the portal's subscription has ended: renew it",
    "PORTAL_DELETED": "the portal was deleted or its public part is closed",
    "INVALID_REQUEST": "the portal refused the request (HTTPS required?): use the https:// URL",
    "OVERLOAD_LIMIT": "REST is blocked for this portal by Bitrix24 (a manual block): "
    "contact Bitrix24 support; retrying will not help",
    "ERROR_METHOD_NOT_FOUND": "the portal does not know the method: check the portal version "
    "and the webhook's scopes",
    "ERROR_BATCH_METHOD_NOT_ALLOWED": "the portal forbids this method inside batch: "
    "set fetch.batch_size = 1",
    "ERROR_BATCH_LENGTH_EXCEEDED": "more commands than the portal accepts in one batch: "
    "lower fetch.batch_size",
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": "the portal refused the request (manifest not available)",
    "METHOD_CONFIRM_WAITING": "an administrator must confirm the application's method access",
    "METHOD_CONFIRM_DENIED": "an administrator denied the application's method access",
    "authorization_error": "the webhook/app user is deactivated: use an active user",
    "APPLICATION_NOT_FOUND": "the application was deleted from the portal: reinstall it",
    "ERROR_OAUTH": "the application is not installed on the portal: install it",
    "ALLOWED_ONLY_INTRANET_USER": "the webhook/app user is an extranet user: use an intranet user",
    "ACCESS_ERROR": "access to REST was refused for this user: check the user's rights",
}

#: Server-side faults worth another attempt (bitrix24-api.md §4.4).
TRANSIENT_CODES = frozenset(
    {"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER", "ERROR_CORE", "WRONG_ENCODING"},
)


def is_permanent_description(description: str) -> bool:
    """True for the fixed English per-record texts of `crm.deal.get`, period or not."""
    text = description.strip()
    if text.endswith("."):
        text = text[:-1]
    return text in PERMANENT_DESCRIPTIONS


def classify(
    http_status: int | None,
    code: str,
    description: str = "",
    context: Context = "top",
) -> Action:
    """Map one error to what to do next. Pure; see the module docstring for the table.

    `http_status` is None for a per-command error inside a batch (those sit under a 200) and
    for transport failures that never produced a status.
    """
    if code == "QUERY_LIMIT_EXCEEDED":
        return Action.RATE_LIMIT
    if code == "OPERATION_TIME_LIMIT":
        return Action.OPERATING_LIMIT
    if code == "expired_token":
        return Action.AUTH_REFRESH
    if code in FATAL_CODES:
        return Action.FATAL
    if code in TRANSIENT_CODES:
        return Action.TRANSIENT
    if code == "":
        # Per-deal texts are per-deal only inside a command (or a plain crm.deal.get); as the
        # answer to a whole batch or list call they mean the run itself is refused.
        if is_permanent_description(description) and context == "command":
            return Action.PERMANENT
        if http_status is not None and (http_status >= 500 or http_status == 429):
            return _by_status(http_status)
        return Action.PERMANENT if context == "command" else Action.FATAL
    if code == "NOT_FOUND" and context == "command":
        # crm.item.get-style per-record code (bitrix24-api.md §4.3); harmless to recognise.
        return Action.PERMANENT
    # An unknown code: the status decides. Unknown codes inside a batch (no status) may be new
    # server-side faults; retrying is bounded by max_attempts, so prefer that to aborting.
    if http_status is None:
        return Action.TRANSIENT
    return _by_status(http_status)


def _by_status(http_status: int) -> Action:
    if http_status == 429:
        # QUERY_LIMIT_EXCEEDED was documented as 429 until Dec 2024 (bitrix24-api.md §1).
        return Action.RATE_LIMIT
    if http_status >= 500 or http_status == 408:
        return Action.TRANSIENT
    if http_status in (401, 403):
        return Action.FATAL
    if 400 <= http_status < 500:
        return Action.FATAL
    return Action.TRANSIENT


def fatal_hint(code: str) -> str:
    """The operator-facing hint for a fatal code (a generic one for unknown codes)."""
    return FATAL_CODES.get(code, "the portal refused the request; check the credentials and URL")


__all__ = [
    "FATAL_CODES",
    "PERMANENT_DESCRIPTIONS",
    "TRANSIENT_CODES",
    "Action",
    "Context",
    "classify",
    "fatal_hint",
    "is_permanent_description",
]
