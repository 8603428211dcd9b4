"""The REST methods of the simulated portal, free of HTTP: params in, (status, body) out.

`Api.call` runs one top-level method for one caller; `batch` runs its commands through the same
per-method path, so limits and errors behave identically inside and outside a batch (REST docs
`limits.md`, `settings/how-to-call-rest-api/batch.md`; rest module `rest_provider.php`,
`methodsBatch`). Deal JSON and list pages are spliced in as pre-encoded `orjson.Fragment`s: a
deal is encoded once when generated, a page of list rows once when built (`Portal.list_rows`
makes rows without decoding any deal).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.clock import ScaledClock
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.generate import with_file_auth
from pipeline.simulator.limits import OperatingMeter
from pipeline.simulator.listform import ListPlan
from pipeline.simulator.php import (
    PhpKey,
    as_list,
    parse_str,
    php_array,
    php_int,
    php_key,
    truthy,
)
from pipeline.simulator.portal import Portal
from pipeline.simulator.stats import Stats

BATCH_MAX_LENGTH = 50
PAGE_SIZE = 50


@dataclass(frozen=True)
class MethodError(Exception):
    """A REST error: HTTP status (400 when a method raises without one) and the envelope."""

    status: int
    error: str
    description: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(slots=True)
class Outcome:
    """A successful method result plus list paging (`next`, `total`) when it has them."""

    result: Any
    next: int | None = None
    total: int | None = None
    cost_s: float = 0.0
    deals: int = 0
    #: The encoded result when `result` is a pre-encoded `orjson.Fragment`.
    encoded: bytes | None = None
    #: Deals whose data (not only their ID) is in the answer: what a poison deal spoils.
    spoils: tuple[int, ...] = ()

    def value(self) -> Any:
        """The result as plain data (for `$result[...]` references inside a batch)."""
        return orjson.loads(self.encoded) if self.encoded is not None else self.result


METHOD_NOT_FOUND = MethodError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
OPERATION_LIMIT = MethodError(
    429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit"
)
INVALID_ID = MethodError(400, "", "ID is not defined or invalid.")
NOT_FOUND = MethodError(400, "", "Not found")
DENIED = MethodError(400, "", "Access denied.")
DENIED_NO_PERMISSION = MethodError(400, "", "Access denied")
BATCH_TOO_LONG = MethodError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
BATCH_NOT_ALLOWED = MethodError(
    405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
)
#: The whole answer when its JSON encoding fails, sent with no error status (core `rest.php`
#: `outputJson`): what one deal with text that is not valid UTF-8 does to any request.
WRONG_ENCODING = {"error": "WRONG_ENCODING", "error_description": "Wrong request encoding"}
SERVER_FAULT = {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}

_LIST_ID_FIELDS = ("ID",)
_GET_METHODS = frozenset({"crm.deal.get", "crm.lead.get"})
_LIST_METHODS = frozenset({"crm.deal.list", "crm.lead.list"})
_TIME_FIELDS = {"DATE_MODIFY", "DATE_CREATE"}
#: Select signatures whose plans are kept (a client sends one or two).
_PLANS_KEPT = 16


@functools.lru_cache(maxsize=256)
def method_name(raw: str) -> str:
    """Bitrix method names are case-insensitive; `.json` selects the (default) format."""
    name = raw.strip().lower()
    return name[:-5] if name.endswith(".json") else name


class Api:
    """The portal's REST surface for one simulator instance."""

    def __init__(self, config: SimulatorConfig, portal: Portal, clock: ScaledClock,
                 meter: OperatingMeter, stats: Stats) -> None:  # fmt: skip
        self.config = config
        self.portal = portal
        self.clock = clock
        self.meter = meter
        self.stats = stats
        self._get_cost = config.processing_ms / 1000.0
        list_ms = config.list_processing_ms
        self._list_cost = (config.processing_ms if list_ms is None else list_ms) / 1000.0
        self._list_row_cost = config.list_row_processing_ms / 1000.0
        # A stored empty array (`a:0:{}`) is what `empty_multiple="empty_list"` stands for;
        # otherwise an empty multiple file UF's `[]` is the crm converter's view of a NULL column.
        self._stored_empty_lists = config.empty_multiple == "empty_list"
        self._file_auth = ""
        #: The method a nested command's time is charged to instead of its own (`batch_billing`).
        self._billed_to: str | None = None
        self._plans: dict[tuple[str, ...], ListPlan] = {}
        #: Poison is a deal lever: a lead's get answer is never spoiled.
        self._gets_spoil = portal.kind == "deal"
        self._methods: dict[str, Callable[[dict[PhpKey, Any]], Outcome]] = {
            "crm.deal.get": self.deal_get,
            "crm.deal.fields": self.deal_fields,
            "crm.deal.list": self.deal_list,
        }
        #: The lead methods, once `serve_leads` gave them a portal of leads.
        self._leads: Api | None = None
        #: Set by the server: whether a deal's answer cannot be JSON-encoded (a poison deal);
        #: `unencodable` records that the current call returned one.
        self.poisoned: Callable[[int], bool] = _never
        self.unencodable = False
        code, status = config.denied_code, config.denied_status
        self._refusals = {
            DENIED: MethodError(status, code, DENIED.description),
            DENIED_NO_PERMISSION: MethodError(status, code, DENIED_NO_PERMISSION.description),
        }

    # -- envelopes --------------------------------------------------------------------------

    def time_block(
        self, start: float, operating: tuple[float, int] | None, charged: float = 0.0
    ) -> dict[str, Any]:
        """The `time` object. `processing` is the method's execution time, which is what
        `operating` accumulates: at least the charged time, though the simulator answers at
        once (so `processing` may exceed `duration`)."""
        finish = self.clock.now()
        zone = self.portal.zone
        duration = finish - start
        block: dict[str, Any] = {
            "start": start,
            "finish": finish,
            "duration": duration,
            "processing": max(duration, charged),
            "date_start": zone.datetime(start),
            "date_finish": zone.datetime(finish),
        }
        if operating is not None:
            block["operating_reset_at"] = operating[1]
            block["operating"] = operating[0]
        return block

    def _charge(self, caller: str, method: str, cost: float) -> tuple[float, int] | None:
        """Charge operating time; the counters exist only when a budget is configured (cloud
        portals), as on-premise responses lack them (REST docs `limits.md`: the limiter is off
        on-premise by default; b24jssdk `operating-limiter.ts`, `load_limiter_active`)."""
        if self.meter.budget_s is None:
            self.meter.charged_s += cost
            return None
        return self.meter.charge(caller, method, cost, self.clock.now())

    def call(self, method: str, params: dict[PhpKey, Any], caller: str) -> tuple[int, Any]:
        """Run one top-level method; returns (HTTP status, JSON-ready body)."""
        self._file_auth = file_auth(params, caller)
        start = self.clock.now()
        if method == "batch":
            return self._batch_call(params, caller, start)
        handler = self._methods.get(method)
        if handler is None:
            return METHOD_NOT_FOUND.status, METHOD_NOT_FOUND.body()
        try:
            outcome, operating = self._run(handler, method, params, caller)
        except MethodError as exc:
            if _handled(exc) is OPERATION_LIMIT:
                self.stats.operating_limited += 1
            return exc.status, exc.body()
        body: dict[str, Any] = {"result": outcome.result}
        if outcome.next is not None:
            body["next"] = outcome.next
        if outcome.total is not None:
            body["total"] = outcome.total
        body["time"] = self.time_block(start, operating, outcome.cost_s)
        return 200, body

    def _batch_call(self, params: dict[PhpKey, Any], caller: str, start: float) -> tuple[int, Any]:
        """A top-level `batch`. As the REST docs say (`limits.md`), the outer batch is not
        charged (its own counter stays at 0) and each command is charged to its own method.
        Under `batch_billing="batch"` (see `SimulatorConfig`) the request is refused whole once
        the method `batch` is over budget, its commands' time is charged to `batch`, and every
        command's `result_time` entry shows the counter the envelope shows."""
        billed = self.config.batch_billing == "batch"
        budgeted = self.meter.budget_s is not None
        if billed and budgeted and self.meter.blocked(caller, "batch", self.clock.now()):
            self.stats.operating_limited += 1
            return OPERATION_LIMIT.status, OPERATION_LIMIT.body()
        charged_before = self.meter.charged_s
        self._billed_to = "batch" if billed else None
        try:
            result = self.batch(params, caller)
        finally:
            self._billed_to = None
        operating = self._charge(caller, "batch", 0.0)
        nested = self.meter.charged_s - charged_before
        if billed and operating is not None:
            times = result["result_time"]
            for entry in times.values() if isinstance(times, dict) else times:
                entry["operating"], entry["operating_reset_at"] = operating
        return 200, {"result": result, "time": self.time_block(start, operating, nested)}

    def _run(self, handler: Callable[[dict[PhpKey, Any]], Outcome], method: str,
             params: dict[PhpKey, Any], caller: str
             ) -> tuple[Outcome, tuple[float, int] | None]:  # fmt: skip
        """Check the method's operating budget, run it, charge it; (outcome, operating)."""
        billed = self._billed_to or method
        # A billed batch was checked as a whole when it came in (`_billed_batch`).
        if (
            self._billed_to is None
            and self.meter.budget_s is not None
            and self.meter.blocked(caller, method, self.clock.now())
        ):
            raise OPERATION_LIMIT
        try:
            outcome = handler(params)
        except MethodError as exc:
            # The failed call still ran on the server, so it still costs operating time.
            if _handled(exc).status == 400:
                self._charge(caller, billed, self._cost(method))
            refusal = self._refusals.get(exc, exc)  # the configured code/status of a refusal
            if refusal is exc:
                raise
            raise refusal from None
        if outcome.spoils and any(map(self.poisoned, outcome.spoils)):
            self.unencodable = True
        operating = self._charge(caller, billed, outcome.cost_s)
        self.stats.deals_served += outcome.deals
        return outcome, operating

    def _cost(self, method: str) -> float:
        if method in _GET_METHODS:
            return self._get_cost
        if method in _LIST_METHODS:
            return self._list_cost
        return 0.0

    # -- crm.lead.* -------------------------------------------------------------------------

    def serve_leads(self, leads: Portal) -> None:
        """Answer `crm.lead.get/list/fields` from `leads`, with the same semantics, value forms
        and costs as the deal methods; each method has its own operating budget (REST docs
        `limits.md`: every method is counted on its own), as `_run` charges by method name.
        The list's `*` leaves out the multiple fields, PHONE and EMAIL included, which come only
        when named (REST docs `api-reference/crm/leads/crm-lead-list.md`, `select`), as the
        deal list does with multiple fields. Poison (`poison_ids`) is a deal-only lever."""
        view = Api(self.config, leads, self.clock, self.meter, self.stats)
        self._leads = view
        self._methods["crm.lead.get"] = self._on_leads(view.deal_get)
        self._methods["crm.lead.fields"] = self._on_leads(view.deal_fields)
        self._methods["crm.lead.list"] = self._on_leads(view.deal_list)

    def _on_leads(
        self, handler: Callable[[dict[PhpKey, Any]], Outcome]
    ) -> Callable[[dict[PhpKey, Any]], Outcome]:
        def run(params: dict[PhpKey, Any]) -> Outcome:
            assert self._leads is not None
            self._leads._file_auth = self._file_auth  # this call's token, for file URLs
            return handler(params)

        return run

    # -- batch ------------------------------------------------------------------------------

    def batch(self, params: dict[PhpKey, Any], caller: str) -> dict[str, Any]:
        cmd = params.get("cmd")
        if isinstance(cmd, list):
            commands: list[tuple[PhpKey, Any]] = list(enumerate(cmd))
        elif isinstance(cmd, dict):
            commands = [(php_key(k), v) for k, v in cmd.items()]
        else:
            commands = []
        halt = truthy(params.get("halt", False))
        results: list[tuple[PhpKey, Any]] = []
        errors: list[tuple[PhpKey, Any]] = []
        totals: list[tuple[PhpKey, Any]] = []
        nexts: list[tuple[PhpKey, Any]] = []
        times: list[tuple[PhpKey, Any]] = []
        done: dict[str, Outcome] = {}
        for index, (key, command) in enumerate(commands):
            self.stats.batch_commands += 1
            start = self.clock.now()
            try:
                if index >= BATCH_MAX_LENGTH:
                    raise BATCH_TOO_LONG
                method, sub_params = self._parse_command(command)
                if done and "result" in command:  # also "%24result%5B..." (URL-encoded)
                    sub_params = _substitute(sub_params, done)
                if method == "batch":
                    raise BATCH_NOT_ALLOWED
                handler = self._methods.get(method)
                if handler is None:
                    raise METHOD_NOT_FOUND
                outcome, operating = self._run(handler, method, sub_params, caller)
            except MethodError as exc:
                if _handled(exc) is OPERATION_LIMIT:
                    self.stats.operating_limited_commands += 1
                errors.append((key, exc.body()))
                if halt:
                    break
                continue
            results.append((key, outcome.result))
            done[str(key)] = outcome
            if outcome.total is not None:
                totals.append((key, outcome.total))
            if outcome.next is not None:
                nexts.append((key, outcome.next))
            times.append((key, self.time_block(start, operating, outcome.cost_s)))
        return {
            "result": php_array(results),
            "result_error": php_array(errors),
            "result_total": php_array(totals),
            "result_next": php_array(nexts),
            "result_time": php_array(times),
        }

    @staticmethod
    def _parse_command(command: Any) -> tuple[str, dict[PhpKey, Any]]:
        text = command if isinstance(command, str) else ""
        path, _, query = text.partition("?")
        return method_name(path), parse_str(query)

    # -- crm.deal.* -------------------------------------------------------------------------

    def deal_get(self, params: dict[PhpKey, Any]) -> Outcome:
        # CCrmRestHelper::resolveEntityID: `ID`, else `id`, through PHP (int).
        raw = params.get("ID")
        if raw is None:
            raw = params.get("id")
        deal_id = php_int(raw)
        self.stats.deal_gets += 1
        if deal_id <= 0:
            raise INVALID_ID
        status = self.portal.status(deal_id)
        if status in ("missing", "deleted"):
            raise NOT_FOUND if self.config.can_read_deals else DENIED_NO_PERMISSION
        if status == "hidden" or not self.config.can_read_deals:
            raise DENIED
        data = with_file_auth(self.portal.deal_json(deal_id), self._file_auth)
        spoils = (deal_id,) if self._gets_spoil else ()
        return Outcome(orjson.Fragment(data), cost_s=self._get_cost, deals=1, encoded=data,
                       spoils=spoils)  # fmt: skip

    def deal_fields(self, params: dict[PhpKey, Any]) -> Outcome:
        data = self.portal.fields_json()
        return Outcome(orjson.Fragment(data), encoded=data)

    def deal_list(self, params: dict[PhpKey, Any]) -> Outcome:
        if not self.config.can_read_deals:
            raise DENIED
        self.stats.deal_lists += 1
        flt = _array_param(params, "filter")
        order = _array_param(params, "order")
        if not isinstance(flt, dict | list | None) or not isinstance(order, dict | list | None):
            name = "filter" if not isinstance(flt, dict | list | None) else "order"
            raise MethodError(400, "", f"Parameter '{name}' must be array.")
        predicates, lower_id, only_ids = self._filters(flt if isinstance(flt, dict) else {})
        # No select means `*` + `UF_*` (REST docs `crm-deal-list.md`, parameter `select`).
        select = [str(s) for s in as_list(_array_param(params, "select"))] or ["*", "UF_*"]
        start = php_int(params.get("start", 0))
        order_keys = self._order_keys(order if isinstance(order, dict) else {})
        readable = self.portal.readable
        candidates: Iterable[int] = (
            self.portal.ids_after(lower_id)
            if only_ids is None
            else sorted(i for i in only_ids if i > lower_id)
        )
        # Deleted and hidden deals drop out silently: list methods filter by row permissions and
        # name no reason (crm `restservice.php` `innerGetList`; REST docs `crm-deal-list.md`).
        matches = (i for i in candidates if readable(i) and all(p(i) for p in predicates))
        if start < 0 and order_keys in ([], [("ID", False)]):
            # Without the count query the portal can stop at the first page: what makes `>ID` +
            # `start=-1` keyset paging cheap (REST docs `settings/performance/huge-data.md`).
            return self._list_page(list(itertools.islice(matches, PAGE_SIZE)), select, None, 0)
        ids = list(matches)
        self._sort(ids, order_keys)
        if start < 0:
            return self._list_page(ids[:PAGE_SIZE], select, None, 0)
        page = ids[start : start + PAGE_SIZE]
        nxt = start + PAGE_SIZE if start + PAGE_SIZE < len(ids) else None
        return self._list_page(page, select, nxt, len(ids))

    def _list_page(self, page: list[int], select: list[str], nxt: int | None,
                   total: int) -> Outcome:  # fmt: skip
        """One page of list rows, encoded once: the file token goes into the page's bytes
        (as `deal_get` puts it into a deal's). `start=-1` answers `"total": 0` and no `next`
        (REST docs `settings/performance/huge-data.md`, the example answer without the count
        query)."""
        plan = self._list_plan(select)
        data = with_file_auth(orjson.dumps(self.portal.list_rows(page, plan)), self._file_auth)
        spoils = tuple(page) if plan.full else ()
        cost = self._list_cost + (self._list_row_cost * len(page) if plan.full else 0.0)
        return Outcome(orjson.Fragment(data), next=nxt, total=total, cost_s=cost,
                       deals=len(page), encoded=data, spoils=spoils)  # fmt: skip

    def _filters(
        self, flt: dict[PhpKey, Any]
    ) -> tuple[list[Callable[[int], bool]], int, set[int] | None]:
        """(predicates, exclusive lower ID bound, the `@ID` set if any) of a list filter."""
        predicates: list[Callable[[int], bool]] = []
        lower_id = 0
        only_ids: set[int] | None = None
        for raw_key, value in flt.items():
            key = str(raw_key)
            op = key[: len(key) - len(key.lstrip("<>=@!"))]
            field = key[len(op) :]
            if field == "ID":
                if op == "@":
                    if self.config.list_ignores_id_filter:
                        continue
                    wanted = {php_int(v) for v in as_list(value)}
                    only_ids = wanted if only_ids is None else only_ids & wanted
                    continue
                bound = php_int(value)
                if op == ">":
                    lower_id = max(lower_id, bound)
                    continue
                if op == ">=":
                    lower_id = max(lower_id, bound - 1)
                    continue
                predicates.append(_compare(op, bound, lambda i: i))
            elif field in _TIME_FIELDS:
                bound_ts = self._parse_time(value)
                getter = (
                    self.portal.date_modify if field == "DATE_MODIFY" else self.portal.date_create
                )
                predicates.append(_compare(op, bound_ts, getter))
            # Other filter fields are accepted and ignored, as the portal ignores unknown ones.
        return predicates, lower_id, only_ids

    def _parse_time(self, value: Any) -> int:
        text = str(value).strip()
        try:
            parsed = dt.datetime.fromisoformat(text if "T" in text else text.replace(" ", "T", 1))
        except ValueError:
            try:
                parsed = dt.datetime.strptime(text, "%d.%m.%Y %H:%M:%S")
            except ValueError:
                raise MethodError(400, "", f"Invalid date value: {text}") from None
        if parsed.tzinfo is None:
            naive_ts = int(parsed.replace(tzinfo=dt.UTC).timestamp())
            return naive_ts - self.portal.zone.offset_at(naive_ts)
        return int(parsed.timestamp())

    @staticmethod
    def _order_keys(order: dict[PhpKey, Any]) -> list[tuple[str, bool]]:
        """[(FIELD, descending)] in priority order."""
        return [(str(k).upper(), str(v).strip().upper() == "DESC") for k, v in order.items()]

    def _sort(self, ids: list[int], keys: list[tuple[str, bool]]) -> None:
        for field, desc in reversed(keys or [("ID", False)]):
            if field == "ID":
                ids.sort(reverse=desc)
            elif field == "DATE_MODIFY":
                ids.sort(key=self.portal.date_modify, reverse=desc)
            elif field == "DATE_CREATE":
                ids.sort(key=self.portal.date_create, reverse=desc)
            else:
                ids.sort(key=self._value_key(field), reverse=desc)

    def _value_key(self, field: str) -> Callable[[int], str]:
        def key(deal_id: int) -> str:
            return str(self._data(deal_id).get(field) or "")

        return key

    def _data(self, deal_id: int) -> dict[str, Any]:
        return self.portal.deal_data(deal_id) or {}

    def _list_plan(self, select: list[str]) -> ListPlan:
        """The plan of a select (see `ListPlan`), made once per select signature."""
        key = tuple(select)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            meta = self.portal.fields_meta
            plan = self._plans[key] = ListPlan(meta, select, self._stored_empty_lists)
        return plan


def _array_param(params: dict[PhpKey, Any], name: str) -> Any:
    """A list method's array parameter as crm `restservice.php`
    `CCrmRestHelper::resolveArrayParam` finds it: `FILTER`, `filter`, `Filter` or `arFilter`."""
    for key in (name.upper(), name, name.capitalize(), "ar" + name.capitalize()):
        if params.get(key) is not None:
            return params[key]
    return None


def file_auth(params: dict[PhpKey, Any], caller: str) -> str:
    """What the portal writes as `auth=` into file URLs: the request's own `auth` parameter
    (crm `restservice.php` `externalizeFile`), the access token of an OAuth caller, and the
    same for every command of a batch. Webhook calls carry none."""
    token = params.get("auth")
    return token if caller.startswith("app:") and isinstance(token, str) else ""


_REFERENCE = re.compile(r"\$result((?:\[[^\]]*\])+)")
_SEGMENT = re.compile(r"\[([^\]]*)\]")


def _resolve(path: str, done: dict[str, Outcome]) -> Any:
    """Value at `[key][field]...` among earlier results; None when any step is missing."""
    segments = _SEGMENT.findall(path)
    outcome = done.get(segments[0])
    if outcome is None:
        return None
    value = outcome.value()
    for seg in segments[1:]:
        if isinstance(value, dict):
            value = value.get(seg)
        elif isinstance(value, list) and seg.isdigit() and int(seg) < len(value):
            value = value[int(seg)]
        else:
            return None
    return value


def _substitute(params: Any, done: dict[str, Outcome]) -> Any:
    """Replace `$result[cmd][field]...` in command parameters with earlier results
    (REST docs `settings/how-to-call-rest-api/batch.md`): a whole-value reference takes the value
    itself (arrays too); a reference inside text is replaced by the scalar's text."""
    if isinstance(params, dict):
        return {k: _substitute(v, done) for k, v in params.items()}
    if not isinstance(params, str) or "$result" not in params:
        return params
    whole = _REFERENCE.fullmatch(params)
    if whole:
        return _resolve(whole.group(1), done)

    def text(m: re.Match[str]) -> str:
        value = _resolve(m.group(1), done)
        return "" if value is None or isinstance(value, dict | list) else str(value)

    return _REFERENCE.sub(text, params)


def _compare(op: str, bound: int, getter: Callable[[int], int]) -> Callable[[int], bool]:
    if op == ">":
        return lambda i: getter(i) > bound
    if op == ">=":
        return lambda i: getter(i) >= bound
    if op == "<":
        return lambda i: getter(i) < bound
    if op == "<=":
        return lambda i: getter(i) <= bound
    if op in ("!", "!="):
        return lambda i: getter(i) != bound
    return lambda i: getter(i) == bound


def _handled(exc: MethodError) -> MethodError:
    """`exc` without its traceback. The errors are module-level instances raised again and
    again, and raising an instance extends the traceback it already has: kept, every failed
    command would keep its frames (and their answers) alive for the life of the process."""
    return exc.with_traceback(None)


def _never(deal_id: int) -> bool:
    return False


__all__ = ["BATCH_MAX_LENGTH", "PAGE_SIZE", "Api", "MethodError", "Outcome", "method_name"]
