"""`PortalClient`: one portal, one run. Signs, paces, sends, decodes and classifies.

Every HTTP attempt goes through the same path: operating budget, rate-limit token, transport,
status and content-type checks, JSON decoding, classification. What it raises:

    FatalPortalError   stop the run (message says what to fix; URL masked)
    RateLimited        503 QUERY_LIMIT_EXCEEDED (the shared gate already backs off)
    OperatingLimited   429 OPERATION_TIME_LIMIT (the method is already paused)
    TransientError     anything else worth another attempt
    CommandFailed      a plain get (`Entity.get_method`) answered a per-ID error (not found, ...)

`expired_token` never escapes: the OAuth pair is refreshed (single flight) and the attempt is
repeated without counting. `call()` adds retries for single methods (the fields and list methods),
as the pure core `pipeline.fetch.decide` decides with the client's one `RetryBudget`; the batch
path is retried per ID by the engine (the same core).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

from pipeline.clock import Clock, ScaledClock
from pipeline.config import Auth, FetchConfig, LimitsConfig, TransportConfig
from pipeline.entity import DEAL, Entity
from pipeline.errors import FatalPortalError, OperatingLimited, RateLimited, TransientError
from pipeline.fetch.auth import Signer, TokensRotated, make_signer
from pipeline.fetch.batch import (
    BatchReply,
    batch_cost,
    batch_timings,
    build_batch,
    parse_batch,
)
from pipeline.fetch.classify import Action, Context, classify, fatal_hint
from pipeline.fetch.decide import (
    AnswerClass,
    IdState,
    Learn,
    Next,
    RetryBudget,
    decide_call,
    learn_for,
)
from pipeline.fetch.listing import ListReply, build_list_batch, parse_list_batch
from pipeline.fetch.pacing import Observation, Pacer, batch_envelope, observe
from pipeline.fetch.retry import RetryPolicy
from pipeline.fetch.sections import loads_batch
from pipeline.fetch.stats import FetchStats
from pipeline.fetch.strategy import Chooser
from pipeline.fetch.transport import Transport
from pipeline.fetch.width import RowWidth, result_size, rows_size
from pipeline.fetch.wire import HttpResponse, HttpTransport

_JSON_TYPES = ("application/json", "text/json", "text/javascript")


class WholeRequestError(TransientError):
    """A whole request answered an error envelope worth another attempt; keeps the portal's
    own text so that an ID isolated by splitting ends with the portal's code and message."""

    def __init__(self, message: str, *, code: str, description: str, http_status: int) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.description = description


class CommandFailed(Exception):
    """A per-ID error answer to one command (a plain get). Not a PipelineError:
    it is data for the sidecar, never shown to the operator as a failure of the run."""

    def __init__(self, code: str, description: str, http_status: int | None, action: Action):
        super().__init__(f"{code or '(no code)'}: {description}")
        self.code = code
        self.description = description
        self.http_status = http_status
        self.action = action


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: the decoded body and its HTTP status."""

    body: dict[str, Any]
    status: int
    #: What its timings told the pacer (None: they carried none).
    observation: Observation | None = None
    #: Bytes of the HTTP body it was decoded from.
    size: int = 0


class _AuthExpired(Exception):
    def __init__(self, used: str) -> None:
        self.used = used


def _is_json(content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype in _JSON_TYPES or ctype.endswith("+json")


class PortalClient:
    """A client of one Bitrix24 portal. Use as `async with PortalClient(auth, ...) as c:`."""

    def __init__(
        self,
        auth: Auth,
        *,
        limits: LimitsConfig | None = None,
        transport: TransportConfig | None = None,
        fetch: FetchConfig | None = None,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
        on_tokens_rotated: TokensRotated | None = None,
        stats: FetchStats | None = None,
        http: HttpTransport | None = None,
        entity: Entity = DEAL,
    ) -> None:
        """`transport` configures the default aiohttp transport; `http` replaces it (a
        `pipeline.fetch.wire.MockTransport` in tests), and is told the credentials' secrets.
        `entity` says which CRM entity's methods the batch path and discovery call."""
        self.entity = entity
        self.limits = limits or LimitsConfig()
        self.fetch = fetch or FetchConfig()
        self.clock: Clock = clock or ScaledClock()
        self.stats = stats or FetchStats()
        self.signer: Signer = make_signer(auth, on_tokens_rotated)
        if http is None:
            http = Transport(
                transport, secrets=self.signer.secrets, pool_size=self.fetch.concurrency + 2
            )
        else:
            for secret in self.signer.secrets:
                http.add_secret(secret)
        self.transport: HttpTransport = http
        self.pacer = Pacer(self.limits, self.clock, self.stats, rand)
        self.retry = RetryPolicy.from_config(self.fetch, rand)
        #: Every bound on trying again (attempts, limit waits, OAuth refreshes), in one value.
        self.retry_budget = RetryBudget.from_config(self.fetch)
        #: Requests the portal answered with a usable answer: the engine's evidence that the
        #: portal is up, so that a repeating failure is one set's doing, not an outage.
        self.answered = 0
        #: Which method fetches deals, and why (`pipeline.fetch.strategy`); the engine drives it.
        self.strategy = Chooser(self.fetch.strategy)
        #: Wire bytes per deal of list answers and of get answers, apart: a list run's get
        #: batches are follow-ups whose one deal is often the meter, the same deal each time.
        #: The engine sizes list batches by the first and its payload credits by both.
        self.list_width = RowWidth()
        self.get_width = RowWidth()

    async def __aenter__(self) -> PortalClient:
        self.transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    @property
    def portal(self) -> str:
        """The portal address with secrets masked."""
        return self.signer.display

    def mask(self, text: str) -> str:
        return self.transport.mask(text)

    # -- one attempt -------------------------------------------------------------------------

    async def attempt(
        self,
        method: str,
        params: dict[str, Any] | Callable[[int], dict[str, Any]],
        *,
        budget_method: str | None = None,
        commands: int = 1,
        at_least: int | None = None,
        context: Context = "top",
        loads: Callable[[bytes], Any] = orjson.loads,
    ) -> Answer:
        """One logical attempt of `method` (OAuth refreshes repeat it without counting).
        `loads` decodes the body: `orjson.loads`, or a decoder that returns the same value
        and raises the same error (`pipeline.fetch.sections.loads_batch`).

        `params` may be a function of the number of commands the operating budget admitted
        (between `at_least` and `commands`, see `OperatingBudget.reserve`), called once per
        admission, right before sending: the request then carries only what fits."""
        for _ in range(self.retry_budget.auth_refreshes + 1):
            try:
                return await self._send(
                    method, params, budget_method or method, commands, at_least, context, loads
                )
            except _AuthExpired as exc:
                await self.signer.refresh(self.transport, exc.used)
                self.stats.token_refreshes = getattr(self.signer, "refreshes", 0)
        raise FatalPortalError(
            f"{self.portal}: {method} keeps answering expired_token right after a token "
            "refresh: re-authorise the application",
            code="expired_token",
            http_status=401,
        )

    async def _send(
        self,
        method: str,
        params: dict[str, Any] | Callable[[int], dict[str, Any]],
        budget_method: str,
        commands: int,
        at_least: int | None,
        context: Context,
        loads: Callable[[bytes], Any],
    ) -> Answer:
        reservation = await self.pacer.acquire(
            budget_method,
            commands,
            at_least if callable(params) else None,
            batch=method == "batch",
        )
        observation: Observation | None = None
        envelope: Observation | None = None
        try:
            if callable(params):
                params = params(reservation.commands)
            payload, used = self.signer.sign(params)
            self.stats.requests += 1
            self.stats.commands += reservation.commands
            redirects_before = self.transport.redirects_followed
            resp = await self.transport.post(self.signer.url_for(method), orjson.dumps(payload))
            self.stats.redirects += self.transport.redirects_followed - redirects_before
            answer = self._decode(
                method, resp, used, context, reservation.generation, budget_method, loads
            )
            if method == "batch":
                entries = batch_timings(answer.body.get("result"))
                observation = observe(entries) if entries else None
                envelope = batch_envelope(answer.body.get("time"), reservation.commands)
            else:
                observation = observe([answer.body["time"]])
            self.answered += 1
            self.pacer.rate.on_success()
            return Answer(answer.body, answer.status, observation, len(resp.body))
        except (RateLimited, OperatingLimited):
            raise
        except TransientError:
            self.stats.transient_errors += 1
            raise
        finally:
            self.pacer.release(budget_method, reservation, observation, envelope)

    def _decode(
        self,
        method: str,
        resp: HttpResponse,
        used: str,
        context: Context,
        generation: int,
        budget_method: str,
        loads: Callable[[bytes], Any],
    ) -> Answer:
        where = f"{self.portal}{method}"
        status = resp.status
        if not _is_json(resp.content_type):
            self.stats.http_errors += 1
            kind = resp.content_type.split(";", 1)[0].strip() or "no content type"
            if status in (401, 403, 404):
                raise FatalPortalError(
                    f"{where} answered HTTP {status} ({kind}), not the REST API: "
                    "check the portal/webhook URL",
                    code=f"HTTP_{status}",
                    http_status=status,
                )
            raise TransientError(
                f"{where} answered HTTP {status} with {kind} instead of JSON",
                code="NON_JSON",
                http_status=status,
            )
        try:
            body = loads(resp.body)
        except orjson.JSONDecodeError:
            self.stats.http_errors += 1
            raise TransientError(
                f"{where} answered HTTP {status} with truncated or malformed JSON "
                f"({len(resp.body)} bytes)",
                code="BAD_JSON",
                http_status=status,
            ) from None
        if not isinstance(body, dict):
            raise TransientError(
                f"{where} answered a JSON {type(body).__name__}, not an object",
                code="BAD_JSON",
                http_status=status,
            )
        error = body.get("error")
        if error is not None and "result" not in body:
            self.stats.http_errors += 1
            code = error if isinstance(error, str) else str(error)
            desc_raw = body.get("error_description")
            desc = self.mask(desc_raw if isinstance(desc_raw, str) else "")
            self._raise_for(method, code, desc, status, used, context, generation, budget_method)
        if status != 200:
            self.stats.http_errors += 1
            raise TransientError(
                f"{where} answered HTTP {status} without an error code",
                code=f"HTTP_{status}",
                http_status=status,
            )
        if "result" not in body:
            raise TransientError(f"{where} answered JSON without `result`", code="BAD_ANSWER")
        if not isinstance(body.get("time"), dict):
            # Docs `api-reference/data-types.md#time`: every success of these methods carries
            # `time`; a missing
            # block is a damaged answer, and retrying is cheap.
            raise TransientError(f"{where} answered without a `time` block", code="NO_TIME")
        return Answer(body=body, status=status)

    def _raise_for(
        self,
        method: str,
        code: str,
        desc: str,
        status: int,
        used: str,
        context: Context,
        generation: int,
        budget_method: str,
    ) -> None:
        action = classify(status, code, desc, context)
        where = f"{self.portal}{method}"
        self._learn(learn_for(action), budget_method, status, code, generation)
        if action is Action.AUTH_REFRESH:
            raise _AuthExpired(used)
        if action is Action.RATE_LIMIT:
            raise RateLimited(f"{where}: {code} (HTTP {status})", code=code, http_status=status)
        if action is Action.OPERATING_LIMIT:
            raise OperatingLimited(
                f"{where}: {code} (HTTP {status})", code=code, http_status=status
            )
        if action is Action.FATAL:
            raise FatalPortalError(
                f"{where} refused the run: {code or 'HTTP ' + str(status)}"
                f"{' (' + desc + ')' if desc else ''}: {fatal_hint(code, desc, self.entity.name)}",
                code=code,
                http_status=status,
            )
        if action is Action.PERMANENT:
            raise CommandFailed(code, desc, status, action)
        raise WholeRequestError(
            f"{where}: {code or 'error'} (HTTP {status}){': ' + desc if desc else ''}",
            code=code,
            description=desc,
            http_status=status,
        )

    def _learn(
        self, learn: Learn, budget_method: str, status: int, code: str, generation: int
    ) -> None:
        """Tell the pacer what a refused whole request taught (a batch pauses the method its
        commands call)."""
        if learn is Learn.RATE_LIMITED:
            self.stats.rate_limited += 1
            self.pacer.rate.on_rate_limited(generation, status=status, code=code)
        elif learn is Learn.OPERATING_LIMITED:
            self.stats.operating_limited += 1
            self.pacer.budget(budget_method).on_limited(status=status, code=code)

    # -- the batch path ------------------------------------------------------------------------

    async def batch_get(
        self,
        ids: Sequence[int],
        *,
        meter: int | None = None,
        at_least: int | None = None,
        trimmed: Callable[[int], None] | None = None,
    ) -> BatchReply:
        """One attempt of `batch` with one get command per ID (distinct, 1..50), and one for
        `meter` last if given. With `at_least`, the operating budget may admit fewer: only the
        first of `ids` are sent (`meter` always), and `trimmed(n)` is told, at once and before
        anything is sent, that only the first `n` of `ids` go (the caller puts the rest back in
        line); the answer covers the IDs sent."""
        entity = self.entity
        sent = list(ids)
        extra = [] if meter is None else [meter]

        def build(admitted: int) -> dict[str, Any]:
            keep = max(1, admitted - len(extra))
            if keep < len(sent):
                del sent[keep:]
                if trimmed is not None:
                    trimmed(keep)
            return build_batch([*sent, *extra], entity)

        answer = await self.attempt(
            "batch",
            build,
            budget_method=entity.get_method,
            commands=len(sent) + len(extra),
            at_least=None if at_least is None else at_least + len(extra),
        )
        result = answer.body.get("result")
        reply = parse_batch(result, [*sent, *extra], entity)
        reply.cost_s, reply.costed = _cost(result, answer.observation)
        if meter is None:
            # A batch with a meter is a list run's follow-up: its deal is mostly the meter,
            # the same one each time, and dropped by the engine, so it says nothing about
            # the payloads the credits bound.
            self.get_width.observe(rows_size(answer.size, answer.body), len(reply.deals))
        return reply

    async def batch_list(
        self,
        chunks: Sequence[Sequence[int]],
        select_part: str,
        *,
        at_least: int | None = None,
        trimmed: Callable[[int], None] | None = None,
    ) -> tuple[ListReply, float]:
        """One attempt of `batch` with one list command per chunk of at most 50 IDs;
        returns the split answer and the operating seconds its commands report. `at_least`
        and `trimmed` as for `batch_get`, counted in chunks."""
        sent = list(chunks)

        def build(admitted: int) -> dict[str, Any]:
            if admitted < len(sent):
                del sent[admitted:]
                if trimmed is not None:
                    trimmed(admitted)
            return build_list_batch(sent, select_part, self.entity.list_method)

        answer = await self.attempt(
            "batch",
            build,
            budget_method=self.entity.list_method,
            commands=len(sent),
            at_least=at_least,
            # A list answer carries up to 1,000 rows; decoded whole, its buffer sets the heap.
            loads=loads_batch,
        )
        result = answer.body.get("result")
        self.stats.list_commands += len(sent)
        self.stats.list_answer_bytes += answer.size
        cost, _ = _cost(result, answer.observation)
        reply = parse_list_batch(result, sent)
        self.list_width.observe(rows_size(answer.size, answer.body), len(reply.deals))
        return reply, cost

    async def get_deal(self, deal_id: int) -> dict[str, Any]:
        """One attempt of a plain get (portals that forbid batch).

        Raises CommandFailed for a per-ID error answer, and BAD_PAYLOAD transient errors for an
        answer that is not this record.
        """
        method, id_field = self.entity.get_method, self.entity.id_field
        answer = await self.attempt(method, {"ID": deal_id}, context="command")
        result = self.entity.unwrap(answer.body.get("result"))
        if not isinstance(result, dict):
            raise TransientError(f"{method} answered a non-object result", code="BAD_PAYLOAD")
        if id_field in result and str(result[id_field]) != str(deal_id):
            raise TransientError(
                f"{method} for {deal_id} answered ID {result[id_field]!r}", code="BAD_PAYLOAD"
            )
        # One deal an answer, never a meter: it bounds the payload credits as get batches do.
        self.get_width.observe(result_size(answer.size, answer.body), 1)
        return result

    # -- single calls with retries ---------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call `method` and return its `result`, retrying transient faults with backoff.

        Raises FatalPortalError, or the last TransientError once `fetch.max_attempts` are spent.
        Limit answers wait (shared pacing) and do not spend attempts.
        """
        state = IdState()
        while True:
            try:
                answer = await self.attempt(method, dict(params or {}))
                return answer.body["result"]
            except TransientError as exc:
                decision = decide_call(state, answer_of(exc), self.retry_budget)
                if decision.next is Next.FAIL:
                    raise
                state = decision.state
                if decision.next is Next.RETRY:
                    self.stats.retries += 1
                    await self.clock.sleep(self.retry.delay(state.attempts))
            except CommandFailed as exc:
                # A per-record text for a whole call (e.g. `Access denied.` from a list method:
                # the user cannot read the CRM at all): nothing to retry, nothing to skip.
                raise FatalPortalError(
                    f"{self.portal}{method} refused: {exc.code or '(no code)'}: "
                    f"{exc.description}: check the webhook user's CRM permissions",
                    code=exc.code,
                    http_status=exc.http_status,
                ) from None


def _cost(result: Any, observation: Observation | None) -> tuple[float, int]:
    """(operating seconds, commands) a batch answer reports, for the strategy: the pacer's
    per-command estimate (`pacing.observe`: the rise of `operating`, else `processing`) times
    the commands that reported timings, so that the strategy and the pacer count the same."""
    total, commands = batch_cost(result)
    if observation is not None and observation.per_command_s is not None and commands:
        return observation.per_command_s * commands, commands
    return total, commands


def answer_of(exc: TransientError) -> AnswerClass:
    """A failed whole request as an answer class for the decision core (the exception's type
    already says how it was classified); keeps the portal's own text if it had one."""
    if isinstance(exc, RateLimited):
        action = Action.RATE_LIMIT
    elif isinstance(exc, OperatingLimited):
        action = Action.OPERATING_LIMIT
    else:
        action = Action.TRANSIENT
    description = exc.description if isinstance(exc, WholeRequestError) else str(exc)
    return AnswerClass("top", exc.code, description, exc.http_status, str(exc), action)


__all__ = ["Answer", "CommandFailed", "PortalClient", "WholeRequestError", "answer_of"]
