"""The fetch stage: an async stream of deal IDs in, exactly one outcome per ID out.

    fetch_deals(ids, client, config) -> AsyncIterator[DealFetched | DealFailed]
    fetch_batches(ids, client, config) -> AsyncIterator[FetchedBatch]   (one per answer)

Shape of the machinery (all bounded):

    ids ─> dispatcher ─(slot: concurrency)─> batch task ─> bounded outcome queue ─> caller
               ^                                   │
               └── retry deque <── backoff sleep <─┘   (transient: after backoff;
                                                         limits, not executed: at once)

* The dispatcher takes a concurrency slot BEFORE spawning a batch task, fills the batch from the
  retry deque first, then from the input; it stops pulling input while `max_active` IDs are
  being worked on, so memory does not grow with the number of IDs. It also takes a credit per ID
  the answer may carry (PAYLOAD_CREDITS), given back when the consumer has taken that answer:
  payloads in flight and waiting are bounded, whatever the portal's speed or the consumer's.
  Once answers tell how wide deals are on the wire (`PortalClient.list_width`, `get_width`),
  the bound holds by bytes too: a list batch asks for LIST_ANSWER_BYTES of rows at most, and the
  credits' limit shrinks to PAYLOAD_BYTES of deals (wide deals: long comments, pasted e-mails),
  under either strategy.
* Outcomes are handed over one FetchedBatch per answered request (one queue operation per
  answer, not per ID).
* What happens to an ID after each answer is decided by the pure core `pipeline.fetch.decide`;
  this module drives it (queues, backoff sleeps, pacer signals, outcomes). Per ID: a success, a
  permanent error (`Not found`, ...) or a spent attempt budget (`RetryBudget`) ends it.
  Transient faults, and commands the portal did not execute, spend one attempt and come back
  after a jittered exponential backoff. Limit answers (503/429, top-level or per command) do
  not spend attempts: the shared pacer already waits, and the IDs are re-queued at once (at
  most `RetryBudget.limit_waits` times, so no loop is unbounded).
* Poison isolation: some failures answer the WHOLE request each time for the same set of
  commands (WRONG_ENCODING when one deal's text cannot be JSON-encoded, core `rest.php`
  `outputJson`; a request past the cloud's 60 s cap; a 500 that repeats). Such a batch is sent
  again as the same group, and split in halves (each half again a group) at once for
  WRONG_ENCODING, or on the second occurrence for a 500/timeout, down to the one ID that causes
  it. A 500/timeout is split only when the portal answered some request since the set was
  formed (a batch sent again whole, or a half of a split); when nothing was answered since, the
  engine sends one cheap health probe (the fields method, one attempt, through the pacer), so a
  lone batch (a `retry` of a few IDs, a small delta) is isolated too. A failed probe means an
  outage: an outage fails every batch, and splitting it would multiply the requests against a
  portal that is down; no further probe is sent until the portal answers another request, its
  IDs fall back to plain per-ID backoff and rejoin normal batches. The first sight of a
  500/timeout is a strike on the group, so splits spend no attempts (the other IDs are
  victims) and are bounded by the halving (at most 2 * ceil(log2(50)) = 12 extra requests per
  poison deal in a batch of 50, plus at most one probe per split level); they go through the
  pacer like any request. A culprit ends with the portal's code and message: WRONG_ENCODING
  permanently (the same data encodes the same way next time; an edit moves its DATE_MODIFY, so
  the next incremental run fetches it again), a repeating 500/timeout as retryable once its
  attempts are spent alone.
* A per-command ACCESS_DENIED or NOT_FOUND is that ID's outcome, however many commands of a
  batch answer it: only a refusal of a whole request is fatal at once. A run in which the user
  could read no deal is failed by the run's verdict at the end (`pipeline.summary`).
* A fatal answer raises FatalPortalError out of the iterator promptly; in-flight work is
  cancelled. Closing the iterator early (or cancelling its consumer) cancels everything too;
  use `contextlib.aclosing` when you may stop early.
* Strategy (`fetch.strategy`, `pipeline.fetch.strategy` decides): a batch is either up to
  `batch_size` `crm.<entity>.get` commands or up to `batch_size` `crm.<entity>.list` commands with
  an `@ID` filter of up to 50 IDs each (`pipeline.fetch.listing`), trimmed by measured cost to well
  inside the cloud's 60 s cap per request, and to the operating window when the pacer admits it (the
  client sends the commands admitted; the IDs left over go back first in line). IDs a list call does
  not return (deleted, hidden) are fetched again with `crm.<entity>.get`, so each ends with the
  portal's own reason; a list answer with rows that were not asked for makes `auto` fetch the rest
  with get and fails a `list` run. Poison isolation splits list batches the same way; an ID isolated
  alone goes on as a get, so it ends exactly as under the get strategy.
* Duplicates: an ID that arrives while the same ID is still being worked on, or among the last
  RECENT_WINDOW finished IDs, is dropped (one outcome serves both). Global de-duplication is the
  ID source's job: remembering every ID ever seen would make memory grow with the input.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from pipeline.config import FetchConfig
from pipeline.errors import (
    FatalPortalError,
    OperatingLimited,
    PipelineError,
    RateLimited,
    TransientError,
    UsageError,
)
from pipeline.fetch.batch import BatchReply, CommandError
from pipeline.fetch.classify import Action, fatal_hint, split_trigger
from pipeline.fetch.client import CommandFailed, PortalClient, answer_of
from pipeline.fetch.decide import (
    LIMIT_RETRIES_EXHAUSTED,
    NOT_EXECUTED,
    RETRIES_EXHAUSTED,
    AnswerClass,
    Decision,
    GroupView,
    IdState,
    Learn,
    Next,
    RetryBudget,
    decide,
    decide_group,
    needs_probe,
)
from pipeline.fetch.listing import (
    LIST_BATCH_COMMANDS,
    LIST_PAGE,
    ListReply,
    chunk_ids,
    list_select,
    select_query,
)
from pipeline.fetch.strategy import Chooser, Mode, Pick, strategy_line
from pipeline.outcomes import DealFailed, FetchedBatch, FetchOutcome

log = logging.getLogger(__name__)

#: The health probe: the call a run already makes for its schema (`Entity.fields_method`, REST
#: docs `crm-deal-fields.md`); it carries no record data, so no poison record can fail it.

#: How many finished IDs are remembered to collapse near duplicates in the input (constant memory).
RECENT_WINDOW = 10_000

#: Distinct error texts whose masked form is remembered (constant memory).
MASKED_TEXTS = 256

#: Payloads that may be alive at once between the portal and the consumer: a batch takes a credit
#: per ID it may answer before it is sent, and gives them back once the consumer has taken its
#: answer. A decoded deal costs ~7 kB of Python objects (simulator deals, 62 fields), so this
#: bounds answers in flight and waiting to ~15 MB, whatever the number of IDs.
PAYLOAD_CREDITS = 2_000

#: Wire bytes a list answer may carry, once deals' width is known (`RowWidth`): a list batch
#: then asks for at most this many bytes' worth of rows, in whole list calls. Deals are not all
#: alike: long COMMENTS or pasted e-mails make rows of 20 kB and more, and a full batch of them
#: (1,000 rows) is a 20 MB body plus its decoded objects. Simulator deals are ~2.2 kB a row on
#: the wire (a 1,000-row answer is ~2.2 MB, `pipeline.fetch.sections`), so 4 MiB affords ~1,900
#: of them: more than a batch carries (LIST_BATCH_COMMANDS calls of LIST_PAGE), and batches of
#: deals up to ~4 kB keep their size. With 20,000-byte comments (simulator --comment-bytes,
#: ~16 kB a row) 8 MiB here peaked at 202 MB and 4 MiB at 198 MB (20,000 IDs); with 4,000-byte
#: comments (~6 kB a row), at 165 and 159 MB.
LIST_ANSWER_BYTES = 4 * 1024 * 1024

#: Wire bytes of payloads alive at once, by the same width: two full list answers, as
#: PAYLOAD_CREDITS is two full list batches of usual deals (which it still bounds: 8 MiB of
#: ~2.2 kB rows is ~3,800 of them).
PAYLOAD_BYTES = 2 * LIST_ANSWER_BYTES


class _Credits:
    """A counting semaphore whose holders take and give back many units at once, under a limit
    that may move while units are out (`resize`). A holder gives back what `take` returned,
    never more; a lower limit holds new takers back until enough has come back."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a credit limit is at least 1")
        self.limit = limit
        self._out = 0
        self._changed = asyncio.Event()

    @property
    def free(self) -> int:
        """Units a taker may have now (0 while more are out than a lowered limit allows)."""
        return max(0, self.limit - self._out)

    async def take(self, count: int) -> int:
        """Wait for `count` units (at most the limit, so a batch larger than the limit goes
        once nothing else is out) and hold them; returns the units taken."""
        while True:
            # Re-read each time: the limit may have moved while this waited.
            want = min(count, self.limit)
            if self._out + want <= self.limit:
                break
            self._changed.clear()
            await self._changed.wait()
        self._out += want
        return want

    def give(self, count: int) -> None:
        if count:
            if not 0 < count <= self._out:
                raise ValueError(f"giving back {count} credits, {self._out} out")
            self._out -= count
            self._changed.set()

    def resize(self, limit: int) -> None:
        """A new limit for takes from now on; units already out stay out until given back."""
        if limit < 1:
            raise ValueError("a credit limit is at least 1")
        if limit != self.limit:
            self.limit = limit
            self._changed.set()


_FRESH = IdState()


@dataclass(slots=True)
class _Item:
    """One requested ID on its way to its single outcome."""

    id: int
    #: Frozen, so every new ID can share the one fresh state.
    state: IdState = _FRESH
    #: Asked for by a list call and not returned: fetched with `crm.<entity>.get` for its reason.
    via_get: bool = False

    @property
    def attempts(self) -> int:
        return self.state.attempts


@dataclass(slots=True)
class _Group:
    """IDs that failed together as one whole request and are sent together again, so that a
    failure recurring for this very set can be told apart from a one-off one, and split.

    `strikes`: recurring-kind failures this set (or the set it was split from) already met.
    `mark`: the client's count of answered requests when the set was formed (its first failure,
    or the split it is a half of): each split level needs its own evidence that the portal is
    up, or an outage starting inside a split would be split down to single IDs.
    """

    items: list[_Item]
    strikes: int = 0
    mark: int = 0
    mode: Mode = "get"


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None


class _Engine:
    def __init__(
        self,
        ids: AsyncIterable[int] | Iterable[int],
        client: PortalClient,
        config: FetchConfig,
        out: asyncio.Queue[tuple[FetchedBatch, int] | _End],
    ) -> None:
        self._ids = ids
        self._client = client
        self._config = config
        self._out = out
        self._stats = client.stats
        self._budget = RetryBudget.from_config(config)
        self._retry: deque[_Item] = deque()
        #: IDs a list call did not return, for `crm.<entity>.get` (in full batches, see _dispatch).
        self._followup: deque[_Item] = deque()
        self._groups: deque[_Group] = deque()
        self._active: set[int] = set()
        self._recent: deque[int] = deque()
        self._recent_set: set[int] = set()
        self._wake = asyncio.Event()
        self._chooser = _chooser(client, config)
        self._list_capacity = min(config.batch_size, LIST_BATCH_COMMANDS) * LIST_PAGE
        self._max_active = config.batch_size * config.concurrency * 4
        if self._chooser.strategy != "get":
            self._max_active = max(self._max_active, self._list_capacity * config.concurrency * 2)
        self.credits = _Credits(max(PAYLOAD_CREDITS, self._largest()))
        # A client that fetched before knows its list rows' width already.
        self._fit_credits()
        #: The list commands' `select` part (from crm.<entity>.fields).
        self._list_setup: str | None = None
        self._list_setup_lock = asyncio.Lock()
        #: A deal this run fetched by list: the meter of follow-up batches (see `_meter_for`).
        self._meter_id: int | None = None
        #: `client.answered` when the last health probe failed (None: none failed yet). While
        #: the client has answered nothing since, the portal is taken as down.
        self._probe_failed_at: int | None = None
        #: One probe at a time: groups that need one at once share its result.
        self._probe_lock = asyncio.Lock()
        self._masked: dict[str, str] = {}

    # -- dispatcher --------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                await self._dispatch(tg)
        except BaseExceptionGroup as group:
            raise _first_pipeline_error(group) from None

    async def _dispatch(self, tg: asyncio.TaskGroup) -> None:
        slot = asyncio.Semaphore(self._config.concurrency)
        # A plain iterable costs a `next()` per ID instead of an await.
        ids = self._ids
        plain: Iterator[Any] | None = None
        source: AsyncIterator[Any] | None = None
        if isinstance(ids, AsyncIterable):
            source = aiter(ids)
        else:
            plain = iter(ids)
        input_done = False
        size = self._config.batch_size
        credits = self.credits
        while True:
            await slot.acquire()
            if self._groups:
                group = self._groups.popleft()
                if group.mode == "list" and self._chooser.list_off:
                    group.mode = "get"
                await self._spawn(tg, slot, group.items, group.mode, group)
                continue
            if len(self._followup) >= size:
                # Follow-ups go in full batches: a request is what the rate limit counts.
                await self._spawn(tg, slot, self._followups(size), "get")
                continue
            pick = self._chooser.next_batch(self._client.clock.now())
            capacity = self._capacity(pick)
            batch: list[_Item] = []
            try:
                # Credits before IDs: an ID taken from the input is an ID in flight.
                meter = int(pick.mode == "get")
                taken = await credits.take(capacity + meter)
                # A list answer may have told wider rows while this waited.
                capacity = min(capacity, self._capacity(pick))
                while len(batch) < capacity:
                    if self._retry:
                        batch.append(self._retry.popleft())
                        continue
                    if input_done or len(self._active) >= self._max_active:
                        break
                    if plain is not None:
                        input_done = await self._take_plain(plain, batch, capacity)
                        continue
                    assert source is not None
                    try:
                        deal_id = await anext(source)
                    except StopAsyncIteration:
                        input_done = True
                        break
                    if deal_id in self._active or deal_id in self._recent_set:
                        continue
                    if isinstance(deal_id, bool) or not isinstance(deal_id, int) or deal_id <= 0:
                        await self._out.put((FetchedBatch(failed=[self._invalid(deal_id)]), 0))
                        continue
                    self._active.add(deal_id)
                    batch.append(_Item(deal_id))
            except BaseException:
                slot.release()
                raise
            # One credit per ID the answer may carry (and one for a get batch's meter).
            keep = min(taken, len(batch) + meter)
            credits.give(taken - keep)
            if batch:
                task = self._run_batch(batch, slot, pick.mode, probe=pick.probe, credits=keep)
                tg.create_task(task)
                continue
            credits.give(keep)
            self._chooser.cancel(pick)
            if self._followup:
                # Nothing else to send: the last follow-ups go in a batch of their own.
                await self._spawn(tg, slot, self._followups(size), "get")
                continue
            slot.release()
            if input_done and not self._active:
                log.info("%s", strategy_line(self._chooser.report(), self._client.entity))
                return
            self._wake.clear()
            if (
                self._retry
                or self._groups
                or self._followup
                or (not input_done and len(self._active) < self._max_active)
            ):
                continue
            await self._wake.wait()

    async def _take_plain(self, plain: Iterator[Any], batch: list[_Item], capacity: int) -> bool:
        """Fill `batch` from a plain ID source in one slice (what the retry deque and the
        in-flight bound leave room for); True when the source is exhausted."""
        room = min(capacity - len(batch), self._max_active - len(self._active))
        taken = list(islice(plain, room))
        active, recent = self._active, self._recent_set
        if taken and set(map(type, taken)) == {int} and min(taken) > 0:
            # The usual slice: valid IDs only, so no outcome to emit on the way; set operations
            # and `map` instead of a Python step per ID (order kept, repeats dropped).
            fresh = [i for i in dict.fromkeys(taken) if i not in active and i not in recent]
            active.update(fresh)
            batch.extend(map(_Item, fresh))
            return len(taken) < room
        for deal_id in taken:
            if deal_id in active or deal_id in recent:
                continue
            # `type() is int` first: the common case, and no bool passes it.
            if (type(deal_id) is not int or deal_id <= 0) and _invalid_id(deal_id):
                await self._out.put((FetchedBatch(failed=[self._invalid(deal_id)]), 0))
                continue
            active.add(deal_id)
            batch.append(_Item(deal_id))
        return len(taken) < room

    async def _spawn(
        self,
        tg: asyncio.TaskGroup,
        slot: asyncio.Semaphore,
        items: list[_Item],
        mode: Mode,
        group: _Group | None = None,
    ) -> None:
        """Start a batch of IDs already in flight, once the credits for its answer are free."""
        try:
            credits = await self.credits.take(len(items) + int(mode == "get"))
        except BaseException:
            slot.release()
            raise
        tg.create_task(self._run_batch(items, slot, mode, group, credits=credits))

    def _capacity(self, pick: Pick) -> int:
        """IDs in the next batch: one per get command, up to LIST_PAGE per list command; a
        probe of list carries one command."""
        if pick.mode == "get":
            return self._config.batch_size
        return LIST_PAGE if pick.probe else self._list_rows()

    def _list_rows(self) -> int:
        """IDs a list batch may ask for: LIST_ANSWER_BYTES of rows as wide as measured, in
        whole list calls (one at least), at most a full batch; a full batch while no list
        answer has been measured (the first list request is one call anyway: the 60 s cap's
        FIRST_BATCH_COMMANDS, see `_fit_list`)."""
        width = self._client.list_width.per_row
        if width is None:
            return self._list_capacity
        calls = int(LIST_ANSWER_BYTES // (width * LIST_PAGE))
        return max(LIST_PAGE, min(self._list_capacity, calls * LIST_PAGE))

    def _largest(self) -> int:
        """Credits of the largest batch the dispatcher may form now, its meter included."""
        largest = self._config.batch_size + 1
        if self._chooser.strategy != "get":
            largest = max(largest, self._list_rows())
        return largest

    def _fit_credits(self) -> None:
        """The credits' limit for deals as wide as measured (the wider of list rows and get
        results): PAYLOAD_BYTES of them, at most PAYLOAD_CREDITS. Room for the largest batch
        and its meter always, or the dispatcher would wait forever."""
        client = self._client
        width = max(client.list_width.per_row or 0.0, client.get_width.per_row or 0.0)
        if not width:
            return
        by_bytes = min(PAYLOAD_CREDITS, int(PAYLOAD_BYTES // width))
        self.credits.resize(max(by_bytes, self._largest()))

    def _followups(self, size: int) -> list[_Item]:
        return [self._followup.popleft() for _ in range(min(size, len(self._followup)))]

    def _requeue(self, items: list[_Item], *, front: bool = False) -> None:
        """Back in line at once: follow-ups among follow-ups, the rest among primary batches."""
        for item in reversed(items) if front else items:
            queue = self._followup if item.via_get else self._retry
            if front:
                queue.appendleft(item)
            else:
                queue.append(item)
        self._wake.set()

    def _invalid(self, value: Any) -> DealFailed:
        # The ID source validates; this guards the portal from PHP's (int) cast of junk.
        self._stats.deals_failed += 1
        return DealFailed(
            id=value if isinstance(value, int) and not isinstance(value, bool) else 0,
            code="INVALID_ID",
            message=f"not a positive integer {self._client.entity.id_noun}: {value!r}",
            http_status=None,
            attempts=0,
            retryable=False,
            error_class="permanent",
        )

    # -- one batch ---------------------------------------------------------------------------

    async def _run_batch(
        self,
        items: list[_Item],
        slot: asyncio.Semaphore,
        mode: Mode,
        group: _Group | None = None,
        *,
        probe: bool = False,
        credits: int = 0,
    ) -> None:
        backoff: list[_Item] = []
        regroup: list[_Group] = []
        got = FetchedBatch()
        try:
            if mode == "list":
                await self._attempt_list(items, backoff, group, regroup, probe, got)
            else:
                await self._attempt(items, backoff, group, regroup, got)
            if got.failed:
                # Before the slot is free: the dispatcher ends when nothing is in flight.
                self._settle([failure.id for failure in got.failed])
        except BaseException:
            self.credits.give(credits)
            raise
        finally:
            slot.release()
            self._wake.set()
        if got.ids or got.failed:
            # The consumer gives the credits back once it has taken the answer.
            await self._out.put((got, credits))
        else:
            self.credits.give(credits)
        if backoff or regroup:
            waiting = backoff + [item for g in regroup for item in g.items]
            # A strike spends no attempt, yet the same set must not be sent again at once.
            attempt = max(1, *(item.attempts for item in waiting))
            self._stats.retries += len(waiting)
            await self._client.clock.sleep(self._client.retry.delay(attempt))
            self._requeue(backoff)
            self._groups.extend(regroup)
            self._wake.set()

    async def _attempt(
        self,
        items: list[_Item],
        backoff: list[_Item],
        group: _Group | None,
        regroup: list[_Group],
        got: FetchedBatch,
    ) -> None:
        client = self._client
        if len(items) > 1:
            budget = client.pacer.budget(client.entity.get_method)
            # No more than fits well inside the cloud's 60 s per request by measured cost
            # (REST docs `limits.md`); a get is cheap until measured otherwise, so the first
            # batch goes whole. The rest goes back first in line (no attempt spent).
            fits = budget.within_request_cap(len(items), unmeasured=len(items))
            if fits < len(items):
                self._requeue(items[fits:], front=True)
                del items[fits:]
        meter = self._meter_for(items)
        ids = [item.id for item in items]
        try:
            if self._config.batch_size == 1:
                reply = await self._single(ids[0])
            else:
                # What is left of the operating window is spent now: the budget may admit
                # fewer commands than asked, and the trimmer puts the rest back first in line.
                reply = await client.batch_get(
                    ids, meter=meter, at_least=1, trimmed=self._trimmer(items)
                )
                if meter is not None:
                    _drop(reply, meter)
        except (RateLimited, OperatingLimited) as exc:
            # The client already told the pacer; each ID waits without spending an attempt.
            answer = answer_of(exc)
            for item in items:
                self._apply(item, decide(item.state, answer, self._budget), backoff, got)
            return
        except TransientError as exc:
            await self._whole_fault(items, answer_of(exc), group, backoff, regroup, got)
            if self._config.batch_size > 1:
                self._chooser.settled("get", measured=False)
            return
        if self._config.batch_size > 1:
            self._chooser.observed("get", reply.cost_s, reply.costed)
        self._fit_credits()
        self._masked.clear()
        by_id = {item.id: item for item in items}
        self._fetched(reply.deals, by_id, got)
        fatal: FatalPortalError | None = None
        # One answer is one signal: per-command refusals pause the method (or the client)
        # once, or 50 refused commands would count as 50 strikes and log 50 warnings.
        learnt: set[Learn] = set()
        # The follow-ups of a list run are whole batches of `Not found`: one decision serves
        # every ID with the same error and the same state (the core is pure, both are frozen).
        decided: dict[tuple[CommandError, IdState], tuple[AnswerClass, Decision]] = {}
        for deal_id, err in reply.errors.items():
            key = (err, by_id[deal_id].state)
            known = decided.get(key)
            if known is None:
                answer = self._command_answer(err)
                known = decided[key] = (answer, decide(key[1], answer, self._budget))
            answer, decision = known
            if decision.learn is Learn.OPERATING_LIMITED:
                self._stats.operating_limited_commands += 1
            if decision.learn not in learnt:
                learnt.add(decision.learn)
                self._learn(decision.learn, err.code, client.entity.get_method)
            if decision.next is Next.ABORT:
                hint = fatal_hint(err.code, err.description, client.entity.name)
                fatal = fatal or FatalPortalError(
                    f"{client.portal}batch: {client.entity.get_method} refused: "
                    f"{answer.message}: {hint}",
                    code=err.code,
                )
                continue
            self._apply(by_id[deal_id], decision, backoff, got)
        if fatal is not None:
            raise fatal
        for deal_id in reply.missing:
            # Sent but neither answered nor refused: not executed. Counted as an attempt so a
            # portal that keeps skipping it cannot loop us forever.
            self._stats.missing_commands += 1
            item = by_id[deal_id]
            self._apply(item, decide(item.state, _MISSING, self._budget), backoff, got)

    # -- the list strategy -------------------------------------------------------------------

    async def _attempt_list(
        self,
        items: list[_Item],
        backoff: list[_Item],
        group: _Group | None,
        regroup: list[_Group],
        probe: bool,
        got: FetchedBatch,
    ) -> None:
        """One batch of `crm.<entity>.list` calls for `items` (at most LIST_PAGE IDs per call)."""
        select_part = await self._ensure_list_setup()
        self._fit_list(items)
        chunks = chunk_ids([item.id for item in items])
        trim = self._trimmer(items)
        try:
            reply, cost = await self._client.batch_list(
                chunks, select_part, at_least=1, trimmed=lambda n: trim(n * LIST_PAGE)
            )
        except (RateLimited, OperatingLimited) as exc:
            self._chooser.settled("list", measured=False)
            answer = answer_of(exc)
            for item in items:
                self._apply(item, decide(item.state, answer, self._budget), backoff, got)
            return
        except TransientError as exc:
            # A poison deal spoils the whole answer: the same isolation as for get, with the
            # halves' IDs as the @ID filters of their list calls. An ID isolated alone goes on
            # as a get of its own (same strikes, no attempt spent), so it ends exactly as under
            # the get strategy, and a list answer that is not about it cannot end it.
            self._chooser.settled("list", measured=False)
            answer = answer_of(exc)
            if len(items) == 1 and split_trigger(answer.code, answer.status) is not None:
                (item,) = items
                item.via_get = True
                strikes = group.strikes if group else 0
                mark = group.mark if group else self._client.answered
                self._groups.append(_Group(items, strikes, mark, "get"))
                self._wake.set()
                return
            await self._whole_fault(items, answer, group, backoff, regroup, got, "list")
            return
        self._fit_credits()
        if reply.stray:
            self._disagreement(items, reply.stray)
            return
        answered = len(reply.deals) + len(reply.absent)
        self._chooser.observed("list", cost, answered, len(reply.absent))
        await self._take_list_reply(items, reply, backoff, got)

    async def _take_list_reply(
        self, items: list[_Item], reply: ListReply, backoff: list[_Item], got: FetchedBatch
    ) -> None:
        self._masked.clear()
        by_id = {item.id: item for item in items}
        stats = self._stats
        stats.list_rows += len(reply.deals)
        if reply.deals:
            self._meter_id = max(reply.deals)
        self._fetched(reply.deals, by_id, got)
        # Silently absent (deleted, hidden, never existed): a get names the reason. A list call
        # refused for a reason that would end the ID or the run is asked again the same way:
        # get answers per ID (`Not found`, `Access denied`) or refuses the run itself.
        followups = [by_id[i] for i in reply.absent]
        learnt: set[Learn] = set()
        for deal_id, err in reply.errors.items():
            item = by_id[deal_id]
            answer = self._command_answer(err)
            if answer.classified() in (Action.PERMANENT, Action.FATAL):
                followups.append(item)
                continue
            decision = decide(item.state, answer, self._budget)
            if decision.learn is Learn.OPERATING_LIMITED:
                stats.operating_limited_commands += 1
            if decision.learn not in learnt:
                learnt.add(decision.learn)
                self._learn(decision.learn, err.code, self._client.entity.list_method)
            self._apply(item, decision, backoff, got)
        for item in followups:
            item.via_get = True
        stats.list_followups += len(followups)
        self._requeue(followups)
        for deal_id in reply.missing:
            stats.missing_commands += 1
            item = by_id[deal_id]
            self._apply(item, decide(item.state, _MISSING, self._budget), backoff, got)

    def _fit_list(self, items: list[_Item]) -> None:
        """Trim a list batch (in place) to what fits the cloud's 60 s cap per request by
        measured cost, and to LIST_ANSWER_BYTES of rows as wide as measured (a batch formed
        before a list answer told that width); the rest goes back first in line. What the
        operating window affords is decided when the request is admitted (`_trimmer`)."""
        budget = self._client.pacer.budget(self._client.entity.list_method)
        commands = -(-len(items) // LIST_PAGE)
        fits = min(budget.within_request_cap(commands), self._list_rows() // LIST_PAGE)
        if fits < commands:
            self._requeue(items[fits * LIST_PAGE :], front=True)
            del items[fits * LIST_PAGE :]

    def _trimmer(self, items: list[_Item]) -> Callable[[int], None]:
        """For the client: the operating budget admitted the first `n` of `items` only. The
        others go back first in line at that moment, once (nothing was sent for them, so no
        attempt is spent), and leave `items`, so that the answer, a failure or a cancellation
        of the request concerns only the IDs sent."""

        def trim(n: int) -> None:
            if n < len(items):
                log.debug("operating budget admits %d of %d IDs of this batch", n, len(items))
                self._requeue(items[n:], front=True)
                del items[n:]

        return trim

    def _disagreement(self, items: list[_Item], stray: list[str]) -> None:
        """A list answer carried deals that were not asked for: the portal did not apply the
        @ID filter, so no list answer of this run can be trusted."""
        shown = ", ".join(stray[:3])
        entity = self._client.entity
        why = (
            f"{entity.list_method} answered {entity.plural} that were not asked for (ID {shown}): "
        )
        why += "the portal "
        why += "does not apply the @ID filter"
        if self._chooser.strategy == "list":
            raise FatalPortalError(
                f"{self._client.portal}{why}; use --strategy get", code="LIST_DISAGREES"
            )
        if not self._chooser.list_off:
            log.warning("%s; fetching with %s for the rest of the run", why, entity.get_method)
            self._chooser.fall_back(why)
        self._requeue(items)

    async def _ensure_list_setup(self) -> str:
        """The `select` naming every described field (once)."""
        async with self._list_setup_lock:
            if self._list_setup is None:
                fields = await self._client.call(self._client.entity.fields_method)
                if not isinstance(fields, dict) or not fields:
                    raise FatalPortalError(
                        f"{self._client.portal}{self._client.entity.fields_method} returned no "
                        "field descriptions; "
                        "cannot name the fields of a list call",
                        code="BAD_FIELDS",
                    )
                self._list_setup = select_query(list_select(fields))
            return self._list_setup

    def _meter_for(self, items: list[_Item]) -> int | None:
        """A deal known to exist, fetched last in a batch of follow-ups. Follow-ups are absent
        deals, their commands all fail, and a failed command reports no `operating` though the
        portal charges it (it ran): without one answered get the pacer would send them blind
        into crm.<entity>.get's budget. Its answer, last in the batch, carries the method's total
        after every follow-up before it, and its cost per command."""
        if self._meter_id is None or not items or not all(item.via_get for item in items):
            return None
        if len(items) >= self._config.batch_size:
            self._requeue(items[self._config.batch_size - 1 :], front=True)
            del items[self._config.batch_size - 1 :]
        return self._meter_id

    def _mask(self, text: str) -> str:
        """The client's masking, remembered for one answer (its per-ID errors repeat the same
        few texts); each answer starts afresh, since a token rotated meanwhile is a new secret."""
        masked = self._masked.get(text)
        if masked is None:
            masked = self._client.mask(text)
            if len(self._masked) < MASKED_TEXTS:
                self._masked[text] = masked
        return masked

    def _command_answer(self, err: CommandError) -> AnswerClass:
        message = self._mask(f"{err.code or '(no code)'}: {err.description}")
        return AnswerClass("command", err.code, err.description, err.http_status, message)

    def _learn(self, learn: Learn, code: str, method: str) -> None:
        """Tell the pacer what a per-command refusal taught (once per answer)."""
        pacer = self._client.pacer
        if learn is Learn.OPERATING_LIMITED:
            pacer.budget(method).on_limited(status=None, code=code)
        elif learn is Learn.RATE_LIMITED:
            pacer.rate.on_rate_limited(None, status=None, code=code)

    async def _whole_fault(
        self,
        items: list[_Item],
        answer: AnswerClass,
        group: _Group | None,
        backoff: list[_Item],
        regroup: list[_Group],
        got: FetchedBatch,
        mode: Mode = "get",
    ) -> None:
        """A whole request failed with a fault: retry each ID, or (when one command may be the
        cause) send the same set again or split it, as the core decides."""
        group = group or _Group(items, mark=self._client.answered, mode=mode)
        view = await self._view(group, len(items), answer)
        self._masked.clear()
        states = [item.state for item in items]
        verdict, decisions, strikes = decide_group(states, answer, self._budget, view)
        if verdict is Next.SPLIT:
            self._stats.batch_splits += 1
            mid = (len(items) + 1) // 2
            for item, decision in zip(items, decisions, strict=True):
                item.state = decision.state
            mark = self._client.answered
            for part in (items[:mid], items[mid:]):
                self._groups.append(_Group(part, strikes, mark, mode))
            self._wake.set()
            return
        survivors: list[_Item] = []
        for item, decision in zip(items, decisions, strict=True):
            self._apply(item, decision, survivors, got)
        if verdict is Next.REGROUP and survivors:
            regroup.append(_Group(survivors, strikes, group.mark, group.mode))
        else:
            backoff.extend(survivors)

    async def _view(self, group: _Group, size: int, answer: AnswerClass) -> GroupView:
        """What the core needs to know about `group` (`size` IDs sent); probes the portal's
        health first when the core would split but has no evidence either way."""
        view = self._facts(group)
        if needs_probe(size, answer, view):
            async with self._probe_lock:
                # Another group's probe may have settled it while this one waited.
                view = self._facts(group)
                if needs_probe(size, answer, view):
                    await self._probe()
                    view = self._facts(group)
        return view

    def _facts(self, group: _Group) -> GroupView:
        answered = self._client.answered
        return GroupView(
            strikes=group.strikes,
            healthy=answered > group.mark,
            outage=self._probe_failed_at == answered,
        )

    async def _probe(self) -> None:
        """One attempt of a cheap call, no retries: an answer counts in `client.answered`; a
        failure marks the portal down until it answers another request. A fatal answer
        propagates like any other."""
        self._stats.health_probes += 1
        try:
            await self._client.attempt(self._client.entity.fields_method, {})
        except (TransientError, CommandFailed):
            self._probe_failed_at = self._client.answered

    async def _single(self, deal_id: int) -> BatchReply:
        reply = BatchReply()
        try:
            reply.deals[deal_id] = await self._client.get_deal(deal_id)
        except CommandFailed as exc:
            reply.errors[deal_id] = CommandError(exc.code, exc.description, exc.http_status)
        return reply

    # -- per-ID bookkeeping ------------------------------------------------------------------

    def _fetched(
        self, deals: dict[int, dict[str, Any]], by_id: dict[int, _Item], got: FetchedBatch
    ) -> None:
        """An answer's deals end their IDs: handed over in one go, in request order."""
        if not deals:
            return
        ids = list(deals)
        got.ids.extend(ids)
        got.payloads.extend(deals.values())
        got.attempts.extend([by_id[i].state.attempts + 1 for i in ids])
        self._stats.deals_fetched += len(ids)
        self._settle(ids)

    def _settle(self, ids: list[int]) -> None:
        """`ids` have their outcome: no longer in flight, remembered for a while."""
        self._active.difference_update(ids)
        recent, recent_set = self._recent, self._recent_set
        recent.extend(ids)
        recent_set.update(ids)
        excess = len(recent) - RECENT_WINDOW
        if excess > 0:
            popleft = recent.popleft
            recent_set.difference_update([popleft() for _ in range(excess)])

    def _apply(
        self, item: _Item, decision: Decision, backoff: list[_Item], got: FetchedBatch
    ) -> None:
        """Carry out the core's decision for one ID (ABORT and SPLIT are the caller's)."""
        item.state = decision.state
        if decision.next in (Next.RETRY, Next.REGROUP):
            backoff.append(item)
        elif decision.next is Next.REQUEUE:
            self._requeue([item])
        elif decision.next is Next.FAIL:
            assert decision.failure is not None
            failure = decision.failure
            self._stats.deals_failed += 1
            got.failed.append(
                DealFailed(
                    id=item.id,
                    code=failure.code,
                    message=self._mask(failure.message),
                    http_status=failure.status,
                    attempts=item.attempts,
                    retryable=failure.retryable,
                    error_class=failure.error_class,
                )
            )


def _invalid_id(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value <= 0


def _chooser(client: PortalClient, config: FetchConfig) -> Chooser:
    """The run's strategy state, kept on the client so the run can report it. A portal used
    with `fetch.batch_size = 1` forbids batch: plain gets, whatever the strategy."""
    strategy = config.strategy if config.batch_size > 1 else "get"
    if client.strategy.strategy != strategy:
        client.strategy = Chooser(strategy)
        if strategy != config.strategy:
            client.strategy.reason = (
                f"fetch.batch_size = 1: one {client.entity.get_method} per request"
            )
    return client.strategy


def _drop(reply: BatchReply, deal_id: int) -> None:
    """Forget the meter's own answer: its deal was already emitted by the list call."""
    reply.deals.pop(deal_id, None)
    reply.errors.pop(deal_id, None)
    if deal_id in reply.missing:
        reply.missing.remove(deal_id)


_MISSING = AnswerClass("missing", NOT_EXECUTED, message="command missing from the batch answer")


def _first_pipeline_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to show for a failed task group: a fatal portal error wins."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        else:
            leaves.append(exc)

    walk(group)
    for kinds in ((FatalPortalError,), (PipelineError,)):
        for leaf in leaves:
            if isinstance(leaf, kinds):
                return leaf
    return leaves[0] if len(leaves) == 1 else group


async def fetch_deals(
    ids: AsyncIterable[int],
    client: PortalClient,
    config: FetchConfig | None = None,
    *,
    buffer: int | None = None,
) -> AsyncIterator[FetchOutcome]:
    """Fetch every ID in `ids`; yield exactly one DealFetched or DealFailed per distinct ID.

    `client` must be open (`async with client:`). `buffer` bounds the answers waiting for the
    consumer (default: two per concurrency slot). Raises FatalPortalError when the portal
    refuses the run, UsageError for bad configuration. `fetch_batches` hands the same outcomes
    over an answer at a time, which costs less per ID.
    """
    async with aclosing(fetch_batches(ids, client, config, buffer=buffer)) as batches:
        async for got in batches:
            for outcome in got.outcomes():
                yield outcome


async def fetch_batches(
    ids: AsyncIterable[int] | Iterable[int],
    client: PortalClient,
    config: FetchConfig | None = None,
    *,
    buffer: int | None = None,
) -> AsyncGenerator[FetchedBatch, None]:
    """Fetch every ID in `ids` (an async or a plain iterable); yield one FetchedBatch per
    answered request, so that every distinct ID has exactly one outcome in exactly one of them.

    The payloads of a batch count against the engine's PAYLOAD_CREDITS until the consumer asks
    for the next one: take (convert, copy) what you need from a batch before that.
    """
    config = config or client.fetch
    queue: asyncio.Queue[tuple[FetchedBatch, int] | _End] = asyncio.Queue(
        maxsize=buffer or 2 * config.concurrency
    )
    engine = _Engine(ids, client, config, queue)

    async def produce() -> None:
        try:
            await engine.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, re-raised there
            await queue.put(_End(exc))
            return
        await queue.put(_End(None))

    runner = asyncio.create_task(produce(), name="fetch_deals")
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            got, credits = item
            yield got
            engine.credits.give(credits)
    finally:
        if not runner.done():
            runner.cancel()
        await asyncio.wait([runner])


async def discover_modified_ids(
    client: PortalClient,
    since: datetime,
    overlap: timedelta = timedelta(minutes=5),
) -> AsyncIterator[int]:
    """IDs of records modified at or after `since - overlap`, ascending, via the client's
    entity's list method (`Entity.list_method`, filtered on `Entity.modified_field`).

    Keyset paging (`>ID` the last seen, `order ID asc`, `start=-1` so the portal skips its
    count query; docs `settings/performance/huge-data.md`): stable while records change
    underneath, cheap on huge portals. The timestamp is sent as ISO 8601 with its explicit
    offset, which the portal converts into its own time zone; `since` must therefore be
    time-zone aware.
    """
    if since.tzinfo is None or since.utcoffset() is None:
        raise UsageError("the modified-since time needs a time zone (e.g. 2024-08-30T00:00:00Z)")
    start = (since - overlap).isoformat(timespec="seconds")
    entity = client.entity
    method, id_field, plural = entity.list_method, entity.id_field, entity.plural
    last = 0
    while True:
        result = await client.call(
            method,
            {
                "select": [id_field],
                "filter": {f">={entity.modified_field}": start, f">{id_field}": last},
                "order": {id_field: "ASC"},
                "start": -1,
            },
        )
        if isinstance(result, dict) and not result:
            result = []  # PHP's empty array
        if not isinstance(result, list):
            # Stopping here would silently truncate the export: say so instead.
            raise FatalPortalError(
                f"{client.portal}{method} answered a {type(result).__name__}, not a list "
                f"of {plural}; cannot discover modified {plural}",
                code="BAD_LIST",
            )
        progressed = False
        for row in result:
            raw = row.get(id_field) if isinstance(row, dict) else None
            try:
                deal_id = int(str(raw))
            except ValueError:
                raise FatalPortalError(
                    f"{client.portal}{method} answered a {entity.name} without a usable ID "
                    f"({client.mask(str(raw))[:40]!r}); cannot discover modified {plural}",
                    code="BAD_LIST",
                ) from None
            if deal_id > last:
                last = deal_id
                progressed = True
                yield deal_id
        if len(result) < 50:
            return
        if not progressed:
            raise FatalPortalError(
                f"{client.portal}{method} ignored the >ID paging filter (a full page "
                f"without new IDs); cannot discover modified {plural} reliably",
                code="BAD_LIST",
            )


__all__ = [
    "LIMIT_RETRIES_EXHAUSTED",
    "RETRIES_EXHAUSTED",
    "discover_modified_ids",
    "fetch_batches",
    "fetch_deals",
]
