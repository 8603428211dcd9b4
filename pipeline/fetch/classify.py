"""What to do next with an error the portal (or the network) gave us: one pure function.

    classify(http_status, code, description, context) -> Action

Order of evidence: the `error` code first (statuses have moved: the official docs, repository
bitrix-tools/b24-rest-docs `_includes/system-errors.md`, listed QUERY_LIMIT_EXCEEDED as 429 until
2024-12 and as 503 since), the HTTP status second, and the human `error_description` only for
the fixed English strings that the get methods raise with an empty code (docs
`api-reference/crm/deals/crm-deal-get.md`, `api-reference/crm/leads/crm-lead-get.md`; server
code: crm module `restservice.php` `CCrmDealRestProxy::innerGet`; descriptions are otherwise
localised).

    Action            meaning                                      caller's reaction
    PERMANENT         this deal will never come back (per ID)       DealFailed(retryable=False)
    TRANSIENT         a later attempt may succeed                   backoff, spend one attempt
    RATE_LIMIT        503 QUERY_LIMIT_EXCEEDED                      whole client backs off
    OPERATING_LIMIT   429 OPERATION_TIME_LIMIT (or 429, no known code)  pause the method until reset
    AUTH_REFRESH      401 expired_token                             refresh OAuth token once
    FATAL             the run cannot succeed until someone acts     raise FatalPortalError

`context` says where the error sat: "top" (the whole HTTP response) or "command" (one command
inside a batch, or the answer of a plain get about its one ID). An empty code with an
unknown description means a server-side exception raised without a code; for one command that is
about the deal (permanent), for the whole request it means our request is unusable (fatal).
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pipeline.outcomes import ErrorClass

Context = Literal["top", "command"]
#: How a failure of a whole request relates to the commands it carried (see `split_trigger`).
SplitTrigger = Literal["now", "repeat"]


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


#: Get-method per-record errors: empty code, fixed English text (CORE-CRM `innerGet`,
#: `CCrmRestProxyBase::get`). Matched with and without the trailing period, case-sensitively
#: apart from that, because docs and server code disagree on the period.
PERMANENT_DESCRIPTIONS = frozenset(
    {"Not found", "Access denied", "ID is not defined or invalid"},
)

#: Codes that stop the run, with the hint the operator needs (docs `_includes/system-errors.md`,
#: `settings/oauth/error-codes.md`; official Python SDK b24pysdk `errors/__init__.py`).
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
    "ACCESS_DENIED": "access was refused for the webhook/app user (it may lack CRM read "
    "permission, or REST is not available on the portal's plan): check the user's CRM "
    "permissions and the portal's plan",
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

#: Codes that name one record when they answer one command (crm.item.get documents both as
#: per-record errors; some portals send ACCESS_DENIED per command of the legacy get methods
#: too). At the top level ACCESS_DENIED still refuses the run (it is in FATAL_CODES).
RECORD_CODES = frozenset({"ACCESS_DENIED", "NOT_FOUND"})

#: Texts of a top-level ACCESS_DENIED, mapped to what the operator must fix. The core REST
#: module raises ACCESS_DENIED with "REST API is available only on commercial plans" when the
#: plan lacks REST; other texts ("Access denied!", "Current user can't be authorized in this
#: context") come from rights checks (official Python SDK `errors/__init__.py` docstrings).
_PLAN_HINT = (
    "REST is not available on the portal's plan (it needs a commercial plan): upgrade the "
    "plan or use a portal that has REST"
)
_CONTEXT_HINT = (
    "the webhook/app user cannot be authorised for this call: use a webhook of an active "
    "intranet user with CRM access"
)
#: `{noun}`: the entity read (`Entity.name`).
_PERMISSION_HINT = (
    "the webhook/app user may not read the CRM: give it {noun} read permission (CRM access "
    "rights) or use a webhook of a user who has it"
)
#: Every requested deal refused with ACCESS_DENIED: not the plan (REST itself answered).
ALL_DENIED_HINT = (
    "the webhook/app user may read none of these deals: check its CRM permissions "
    "(deal read access)"
)

#: Server-side faults worth another attempt (docs `_includes/system-errors.md`; ERROR_CORE and
#: WRONG_ENCODING: core `rest` module `restexception.php`, `rest.php` `outputJson`).
TRANSIENT_CODES = frozenset(
    {"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER", "ERROR_CORE", "WRONG_ENCODING"},
)


#: The code of a failed OAuth token refresh worth another attempt (the OAuth server answered
#: 5xx/429): its own code, so that its HTTP 500 is never mistaken for a poison deal's.
OAUTH_UNAVAILABLE = "OAUTH_UNAVAILABLE"


def is_permanent_description(description: str) -> bool:
    """True for the fixed English per-record texts of the get methods, period or not."""
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
    if code in RECORD_CODES and context == "command":
        # One command's refusal names its record: that ID's outcome, not the run's, however
        # many commands answer it (the run's verdict judges a run that could read nothing).
        return Action.PERMANENT
    if code in FATAL_CODES:
        return Action.FATAL
    if code in TRANSIENT_CODES:
        return Action.TRANSIENT
    if code == "":
        # Per-record texts are per-record only inside a command (or a plain get); as the
        # answer to a whole batch or list call they mean the run itself is refused.
        if is_permanent_description(description) and context == "command":
            return Action.PERMANENT
        if http_status is not None and (http_status >= 500 or http_status == 429):
            return _by_status(http_status)
        return Action.PERMANENT if context == "command" else Action.FATAL
    # An unknown code: the status decides. Unknown codes inside a batch (no status) may be new
    # server-side faults; retrying is bounded by max_attempts, so prefer that to aborting.
    if http_status is None:
        return Action.TRANSIENT
    return _by_status(http_status)


def _by_status(http_status: int) -> Action:
    if http_status == 429:
        # The current docs use 429 for OPERATION_TIME_LIMIT (one method blocked for this app
        # or webhook; docs `limits.md`, RU `_includes/system-errors.md`) and 503 for the rate
        # limit. A 429 with an empty or unknown code therefore pauses only the method called;
        # a real rate-limit answer carries its code and is caught above.
        return Action.OPERATING_LIMIT
    if http_status >= 500 or http_status == 408:
        return Action.TRANSIENT
    if http_status in (401, 403):
        return Action.FATAL
    if 400 <= http_status < 500:
        return Action.FATAL
    return Action.TRANSIENT


def fatal_hint(code: str, description: str = "", noun: str = "deal") -> str:
    """The operator-facing hint for a fatal code (a generic one for unknown codes); `noun` is
    the entity whose read permission the user may lack (`Entity.name`).

    For ACCESS_DENIED the portal's text tells the plan apart from the user's rights.
    """
    permission = _PERMISSION_HINT.format(noun=noun)
    if code == "" and description.strip().rstrip(".") == "Access denied":
        # The legacy CRM methods raise it without a code when the user may not read the CRM at
        # all (crm `restservice.php` `onRestServiceMethod`): the rights, not the plan or URL.
        return permission
    if code == "ACCESS_DENIED" and description:
        text = description.lower()
        if "commercial" in text or "tariff" in text or "plan" in text:
            return _PLAN_HINT
        if "authorized" in text or "authorised" in text:
            return _CONTEXT_HINT
        return permission
    return FATAL_CODES.get(code, "the portal refused the request; check the credentials and URL")


def split_trigger(code: str, http_status: int | None) -> SplitTrigger | None:
    """Whether a failure of a WHOLE request may be caused by one of the commands it carried.

    "now": the failure is a property of the answer's content and recurs for the same set of
    commands (WRONG_ENCODING: the server could not JSON-encode the answer, core `rest.php`
    `outputJson`); split the batch at once. "repeat": it may recur (an HTTP 500, a gateway
    timeout or our own read timeout, as a request past the cloud's 60 s cap would give); split
    on its second occurrence for the same set. None: a one-off transient (502, 503 page,
    connection reset, truncated body), retried as usual; so is a failure of the OAuth token
    refresh (`OAUTH_UNAVAILABLE`), which no command of the request caused. Pure.
    """
    if code == OAUTH_UNAVAILABLE:
        return None
    if code == "WRONG_ENCODING":
        return "now"
    if code == "TIMEOUT" or http_status in (500, 504):
        return "repeat"
    if code in ("INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER", "ERROR_CORE"):
        return "repeat"
    return None


__all__ = [
    "ALL_DENIED_HINT",
    "FATAL_CODES",
    "OAUTH_UNAVAILABLE",
    "PERMANENT_DESCRIPTIONS",
    "RECORD_CODES",
    "TRANSIENT_CODES",
    "Action",
    "Context",
    "SplitTrigger",
    "classify",
    "fatal_hint",
    "is_permanent_description",
    "split_trigger",
]
