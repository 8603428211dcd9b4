"""Pacing against the portal's two limits, shared by every task of one client.

Rate limit (docs `limits.md`: a leaky bucket per portal and IP, burst X, drain Y/s). We model it
with one `LeakyBucket(X, Y)`, acquired for EVERY HTTP attempt, retries included, so retries
cannot stampede. Our X and Y keep `headroom` for other integrations on the same IP. The bucket,
like every other wait here, reads and sleeps on the injected clock (`pipeline.clock`), so a
virtual clock drives the whole pacer. A 503 `QUERY_LIMIT_EXCEEDED` means the portal's
bucket is fuller than ours thinks: every task stops (a shared gate), waits 1/Y s plus jitter,
growing by 1.5x on repeated 503s, and our bucket restarts full so that we resume at the drain
rate instead of with a burst. Repeated refusals of requests our own model admitted mean the
bucket is shared: our rate and burst come down, and grow back slowly (see RateGate).

Operating budget (§2): per method, the portal accumulates execution time over a sliding 10-minute
window and blocks the method's next call once it passed the budget. Each answer tells us `operating`
(seconds used) and `operating_reset_at` (when the oldest minute drops out). We admit a request only
while `operating + in-flight reservations + its own cost` stays under `budget * (1 -
operating_headroom)`; otherwise we wait for answers in flight, or until `operating_reset_at` (+
margin). A batch may be admitted in part: once no answer in flight can change the picture, it gets
as many commands as fit (`reserve(commands, at_least)`), decided at admission rather than when it
was put together; requests are served in arrival order. The cost of a command is what `operating`
grows by (see `observe`). A `batch` request also draws on a budget of the method `batch`, fed from
the envelope's own `time` (see `Pacer.acquire`): the docs say a batch is not counted, a portal
measured by the official JS SDK charges the whole request to it. After a reset, or before the
first answer, exactly one request probes the new value. Answers without these fields (on-premise)
switch pacing off for that method. A 429 `OPERATION_TIME_LIMIT` (or a 429 without a known code)
pauses the method until the last known reset (at least 10 s when unknown), as the docs advise; the
refusals of requests in flight when a pause begins belong to that pause (one log line, no longer
pause).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.clock import Clock, wait_event
from pipeline.config import LimitsConfig
from pipeline.fetch.stats import FetchStats

log = logging.getLogger(__name__)

#: Slack after `operating_reset_at` before probing again: the portal's clock and ours differ by
#: network latency and rounding of the integer timestamp.
RESET_MARGIN_S = 1.0
#: JSSDK waits at least this long on OPERATION_TIME_LIMIT when no reset time is known.
MIN_OPERATING_PAUSE_S = 10.0
MAX_OPERATING_PAUSE_S = 120.0
MAX_RATE_BACKOFF_S = 60.0
#: Rate adaptation to a shared bucket (see RateGate): the JS SDK's 20 % step; a refusal this
#: long after the previous one opens a new episode (the JS SDK counts errors within 60 s).
REDUCE_BY = 0.2
EPISODE_QUIET_S = 60.0
MIN_RATE_FRACTION = 0.1
RECOVER_AFTER_S = 300.0
RECOVER_STEP_S = 60.0
RECOVER_FACTOR = 1.1
#: How often a task waiting for answers in flight re-checks the budget anyway (clock seconds):
#: a pause set meanwhile, or a clock jump, must not leave it waiting for an event.
RECHECK_S = 5.0
#: The cloud cuts one request after 60 s, nested batch calls included (REST docs `limits.md`,
#: "Request Execution Time Limit"); a batch is sized by measured cost to a share of that, as a
#: portal's costs vary from one moment to the next.
REQUEST_CAP_S = 60.0
REQUEST_CAP_SHARE = 0.5
#: Commands of a batch of this method before any cost is known (list calls can be costly).
FIRST_BATCH_COMMANDS = 1
#: The budget a `batch` request itself draws on (`Pacer.acquire`).
BATCH_BUDGET = "batch"
#: Float slack of the bucket: a sleep of exactly the computed time must find room.
_EPSILON = 1e-9


class LeakyBucket:
    """A leaky bucket on a `Clock`: holds up to `capacity`, drains `rate` per clock second.

    `acquire` adds one unit once it fits, waiting for the drain otherwise; waiters are served
    in arrival order (one waits at a time, the others queue behind a lock). Replaces
    aiolimiter, whose bucket drains on the event loop's time, which a virtual clock cannot move.
    """

    def __init__(self, capacity: int, rate: float, clock: Clock) -> None:
        if capacity < 1 or rate <= 0:
            raise ValueError("a leaky bucket needs capacity >= 1 and a positive rate")
        self.capacity = capacity
        self.rate = rate
        self._clock = clock
        self._level = 0.0
        self._last = clock.monotonic()
        self._queue = asyncio.Lock()

    def level(self) -> float:
        """The bucket's content now."""
        now = self._clock.monotonic()
        self._level = max(0.0, self._level - (now - self._last) * self.rate)
        self._last = now
        return self._level

    def has_capacity(self) -> bool:
        """One more unit fits now, and nobody is queued for one."""
        return not self._queue.locked() and self.level() + 1 <= self.capacity + _EPSILON

    def fill(self) -> None:
        """Fill to the brim: the next unit waits one drain interval (a restart without burst)."""
        self.level()
        self._level = float(self.capacity)

    async def acquire(self) -> None:
        """Add one unit, waiting (in arrival order) until it fits."""
        async with self._queue:
            while True:
                excess = self.level() + 1 - self.capacity
                if excess <= _EPSILON:
                    self._level += 1
                    return
                await self._clock.sleep(excess / self.rate)


class WaitMeter:
    """Clock seconds during which at least one request was held back (not summed per task, so
    the figure never exceeds the run's duration).

    The figure is accrued as it goes: every start or end of a wait adds the time since the
    previous one whenever someone was waiting, so with several tasks taking turns at waiting
    (sustained pacing at concurrency >= 2) it still grows during the run. `total()` also adds
    the interval still open, for a display that reads it mid-wait.
    """

    def __init__(self, clock: Clock, stats: FetchStats, field: str) -> None:
        self._clock = clock
        self._stats = stats
        self._field = field
        self._waiting = 0
        self._since = 0.0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self._accrue()
        self._waiting += 1
        try:
            yield
        finally:
            self._accrue()
            self._waiting -= 1

    def total(self) -> float:
        """The figure up to now, the open interval included (also written to the stats)."""
        self._accrue()
        value: float = getattr(self._stats, self._field)
        return value

    def _accrue(self) -> None:
        now = self._clock.monotonic()
        if self._waiting > 0:
            spent = max(0.0, now - self._since)
            setattr(self._stats, self._field, getattr(self._stats, self._field) + spent)
        self._since = now


class RateGate:
    """The portal's leaky bucket as seen by this client, plus the shared 503 back-off.

    Refusals come in episodes: a refusal more than EPISODE_QUIET_S after the previous one opens
    a new episode, which is logged once (at its start, naming what the portal sent) and
    summarised once when the next request goes out after the quiet period. Within an episode, a
    refusal of a request that our own bucket model admitted after the last back-off means the
    portal's bucket drains slower than we think: someone else on the same IP shares it (the
    docs key the limit by portal and source IP). Each such refusal lowers our rate and burst by
    20 %, as the official JS SDK does (`rate-limiter.ts` `#reduceLimits`); the first refusal of
    an episode does not, since a bucket left full by an earlier run explains it. Once refusals
    have stopped for RECOVER_AFTER_S, the rate grows back by RECOVER_FACTOR every
    RECOVER_STEP_S, up to the configured value.
    """

    def __init__(
        self,
        limits: LimitsConfig,
        clock: Clock,
        stats: FetchStats,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.configured_rate = self._rate = limits.effective_rate
        self.configured_burst = self._burst = limits.effective_burst
        self._clock = clock
        self._stats = stats
        self._rand = rand
        self._limiter = self._new_limiter()
        self._fill_pending = False
        self._generation = 0
        self._blocked_until = 0.0
        self._strikes = 0
        self._meter = WaitMeter(clock, stats, "rate_wait_s")
        #: Episodes of refusals so far, and the open one's refusal count (0: none open).
        self.episodes = 0
        self._episode_refusals = 0
        self._episode_start = 0.0
        self._last_refusal = -math.inf
        self._last_adjust = -math.inf

    @property
    def rate(self) -> float:
        """The drain rate the client paces at now (lowered while the bucket is shared)."""
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def generation(self) -> int:
        """Changes whenever the bucket model restarts (after every refusal)."""
        return self._generation

    def _new_limiter(self) -> LeakyBucket | None:
        if self._rate <= 0:
            return None
        return LeakyBucket(self._burst, self._rate, self._clock)

    async def acquire(self) -> int:
        """Wait until one more HTTP request may go out; returns the bucket model's generation
        that admitted it (hand it to `on_rate_limited` if the portal refuses the request)."""
        clock = self._clock
        while True:
            wait = self._blocked_until - clock.monotonic()
            if wait > 0:
                with self._meter.waiting():
                    await clock.sleep(wait)
                continue
            self._quiet_check()
            generation = self._generation
            limiter = self._limiter
            if limiter is None:
                return generation
            if self._fill_pending:
                # A fresh bucket filled to the brim: returns at once, then drains at rate Y.
                self._fill_pending = False
                limiter.fill()
            if limiter.has_capacity():
                await limiter.acquire()
            else:
                with self._meter.waiting():
                    await limiter.acquire()
            if generation == self._generation:
                return generation
            # A 503 arrived while we waited: our token came from a bucket that lied.

    def on_rate_limited(
        self,
        generation: int | None = None,
        *,
        status: int | None = 503,
        code: str = "QUERY_LIMIT_EXCEEDED",
    ) -> float:
        """Record a rate-limit refusal; returns the pause every task now observes.

        `generation` is what `acquire` returned for the refused request (None: unknown, e.g. a
        refused command inside a batch); only a refusal of a request admitted by the current
        bucket model is evidence of a shared bucket.
        """
        now = self._clock.monotonic()
        self._quiet_check()
        opened = self._episode_refusals == 0
        if opened:
            self.episodes += 1
            self._episode_start = now
        self._episode_refusals += 1
        self._last_refusal = now
        shared = not opened and generation is not None and generation == self._generation
        if shared and self._rate > 0:
            self._lower()
        self._strikes += 1
        base = 1.0 / self._rate if self._rate > 0 else 1.0
        ceiling = min(MAX_RATE_BACKOFF_S, base * 1.5 ** min(self._strikes - 1, 30))
        pause = ceiling + self._rand() * base
        self._blocked_until = max(self._blocked_until, now + pause)
        self._generation += 1
        self._limiter = self._new_limiter()
        self._fill_pending = self._limiter is not None
        sent = f"HTTP {status} {code}" if status is not None else f"{code} inside a batch"
        if opened:
            log.warning(
                "portal rate limit hit (%s): every request pauses %.1f s, then resumes at the "
                "drain rate; further refusals of this episode are not logged one by one",
                sent,
                pause,
            )
        else:
            log.debug("rate limit refusal %d of this episode (%s)", self._episode_refusals, sent)
        return pause

    def on_success(self) -> None:
        self._strikes = 0
        self._quiet_check()

    def wait_total(self) -> float:
        return self._meter.total()

    def _lower(self) -> None:
        floor = self.configured_rate * MIN_RATE_FRACTION
        self._rate = max(floor, self._rate * (1 - REDUCE_BY))
        self._burst = max(1, int(self._burst * (1 - REDUCE_BY)))
        self._last_adjust = self._clock.monotonic()
        log.debug("client rate lowered to %.2f/s, burst %d", self._rate, self._burst)

    def _quiet_check(self) -> None:
        """Close an episode after a quiet period; grow a lowered rate back slowly."""
        now = self._clock.monotonic()
        quiet = now - self._last_refusal
        if self._episode_refusals and quiet > EPISODE_QUIET_S:
            lowered = self._rate < self.configured_rate
            log.info(
                "rate limit episode over: %d refusals in %.0f s%s",
                self._episode_refusals,
                self._last_refusal - self._episode_start,
                f"; pacing at {self._rate:.2f}/s, burst {self._burst} (configured "
                f"{self.configured_rate:.2f}/s, {self.configured_burst}): the bucket is shared"
                if lowered
                else "",
            )
            self._episode_refusals = 0
        if (
            self._rate < self.configured_rate
            and quiet > RECOVER_AFTER_S
            and now - self._last_adjust >= RECOVER_STEP_S
        ):
            self._rate = min(self.configured_rate, self._rate * RECOVER_FACTOR)
            self._burst = min(self.configured_burst, max(self._burst + 1, int(self._burst * 1.1)))
            self._last_adjust = now
            # A new bucket for the new rate, restarted full: recovery never sends a burst.
            self._limiter = self._new_limiter()
            self._fill_pending = self._limiter is not None
            log.debug("client rate raised to %.2f/s, burst %d", self._rate, self._burst)


@dataclass(slots=True)
class Observation:
    """The operating counters one answer carried for one method (None: absent)."""

    operating: float | None
    reset_at: float | None
    #: Operating seconds the portal charges per command (see `observe`).
    per_command_s: float | None
    #: How many commands reported `operating` (>= 2: the spacing measured the cost directly).
    entries: int = 1
    #: The portal's clock when it finished the answer (`finish`), to relate its reset times
    #: to ours: a client clock off by a minute would otherwise probe a minute early or late.
    server_time: float | None = None
    #: Wall seconds per command (the larger of `duration` and `processing`): what counts
    #: towards the cloud's 60 s cap per request, as opposed to what the budget is charged.
    wall_s: float | None = None


def observe(timings: Iterable[Mapping[str, Any]]) -> Observation:
    """Fold `result_time` entries (or one top-level `time`) into one observation.

    The per-command cost is what `operating` grows by. With two or more commands reporting it,
    that growth is measured directly: the mean rise of the cumulative value from one command
    to the next, in answer order (not across a bucket's reset, where the value also drops).
    Concurrent calls of the same method by this webhook add to the rises, so the figure errs
    high, never low. With one entry only, it is `processing`: the docs' `time` example
    (`api-reference/data-types.md#time`) shows the first call of a window with `operating`
    0.67263 s for `processing` 0.67265 s, while `duration`, the request's `finish - start`
    (0.694 s there, 0.620 s against 0.032 s of processing in `limits.md`'s example), is more
    than the portal charges; under the simulator's time compression it also carries the test
    machine's wall time. `duration` is kept apart (`wall_s`) for the 60 s request cap.
    """
    ops: list[float] = []
    #: The `operating_reset_at` each `ops` value belongs to (None: not given).
    windows: list[float | None] = []
    resets: list[float] = []
    processing = 0.0
    processed = 0
    walls = 0.0
    walled = 0
    finishes: list[float] = []
    # One pass, floats taken as they are: a batch answer carries 50 of these entries.
    for t in timings:
        get = t.get
        fin = get("finish")
        if fin is not None and (type(fin) is float or (fin := _num(fin)) is not None):
            finishes.append(fin)
        ra = get("operating_reset_at")
        if ra is not None and (type(ra) is float or (ra := _num(ra)) is not None):
            resets.append(ra)
        op = get("operating")
        if op is not None and (type(op) is float or (op := _num(op)) is not None):
            ops.append(op)
            windows.append(ra)
        pr = get("processing")
        if type(pr) is not float:
            pr = _num(pr) or 0.0
        du = get("duration")
        if type(du) is not float:
            du = _num(du) or 0.0
        if pr > 0:
            processing += pr
            processed += 1
        wall = pr if pr > du else du
        if wall > 0:
            walls += wall
            walled += 1
    cost: float | None = None
    if len(ops) >= 2:
        rises = [
            b - a
            for (a, wa), (b, wb) in itertools.pairwise(zip(ops, windows, strict=True))
            if wa == wb and b >= a
        ]
        # Counters that never rise measure nothing: a portal that bills the whole request to
        # the method `batch` stamps every command with one and the same figure (b24jssdk pull
        # request 539), which would read as commands that cost nothing.
        if any(rises):
            cost = sum(rises) / len(rises)
    if cost is None and processed:
        cost = processing / processed
    wall_s = walls / walled if walled else None
    if cost is None:
        # No counter and no `processing` (an older or a stripped answer): the wall time is
        # the only figure, and it can only be too high.
        cost = wall_s
    return Observation(
        operating=max(ops) if ops else None,
        reset_at=max(resets) if resets else None,
        per_command_s=cost,
        entries=len(ops),
        server_time=max(finishes) if finishes else None,
        wall_s=wall_s,
    )


def batch_envelope(time: Any, commands: int) -> Observation | None:
    """What a `batch` answer's own `time` says of the budget of the method `batch` (see
    `Pacer.acquire`), its `processing` spread over the request's `commands`: None when the
    answer has no `time`."""
    if not isinstance(time, Mapping):
        return None
    seen = observe([time])
    if seen.per_command_s is None or commands < 1:
        return seen
    return dataclasses.replace(
        seen,
        per_command_s=seen.per_command_s / commands,
        wall_s=None if seen.wall_s is None else seen.wall_s / commands,
    )


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass(slots=True)
class Reservation:
    cost: float
    counted: bool
    commands: int = 0
    #: The rate model's generation that admitted the request (see `RateGate.acquire`).
    generation: int = -1
    #: A `batch` request's hold on the budget of the method `batch` itself (`Pacer.acquire`).
    outer: Reservation | None = None


def _smoothed(estimate: float, seen: float) -> float:
    """A per-command estimate after one more answer: the first answer sets it, later ones move
    it 30% of the way, and it never stays below half of what was just seen (costs can jump)."""
    if estimate == 0:
        return seen
    return max(0.7 * estimate + 0.3 * seen, seen * 0.5)


class OperatingBudget:
    """Pacing of one method against its operating-time budget (see the module docstring)."""

    def __init__(
        self,
        limits: LimitsConfig,
        clock: Clock,
        stats: FetchStats,
        method: str = "",
        meter: WaitMeter | None = None,
    ) -> None:
        self.method = method
        self._meter = meter or WaitMeter(clock, stats, "operating_wait_s")
        budget = limits.operating_budget_s
        self._limit = None if budget is None else budget * (1 - limits.operating_headroom)
        self._clock = clock
        self._stats = stats
        self.mode = "unknown" if self._limit is not None else "off"
        self.operating: float | None = None
        self.reset_at: float | None = None
        #: Operating seconds charged per command (what the budget pays).
        self.cost = 0.0
        #: Wall seconds per command (what the 60 s cap per request counts).
        self.wall = 0.0
        self._reserved = 0.0
        self._in_flight = 0
        self._stale = False
        self._blocked_until = 0.0
        self._changed = asyncio.Event()
        #: Requests waiting in `reserve`, in arrival order (the first is served first).
        self._line: deque[object] = deque()
        #: Commands answered since `operating` last rose: the divisor of the rise.
        self._done_since = 0
        self._limited_strikes = 0
        #: Portal clock minus ours, learnt from answers; reset times are on the portal's clock.
        self._offset = 0.0
        #: The wake-up time last logged: tasks waiting for the same reset log it once.
        self._announced_wake = 0.0
        #: Pauses begun by the portal's refusals (each logged once).
        self.pauses = 0

    def paused_for(self) -> float:
        """Seconds until this method may be called again (0 when it is not paused)."""
        return max(0.0, self._blocked_until - self._portal_now())

    def _portal_now(self) -> float:
        return self._clock.now() + self._offset

    async def reserve(self, commands: int, at_least: int | None = None) -> Reservation:
        """Wait until calls of this method fit the budget; hold their cost. Returns how many
        were admitted (`Reservation.commands`): all `commands` once they fit, else, once no
        answer in flight can change the picture, as many as fit if that is at least
        `at_least` (default: all of them). The caller sends exactly that many.

        The amount is decided here, at admission, not when the batch was put together: a batch
        sized while another request held a reservation would otherwise go whole and wait for
        the next minute to leave the window, although part of it fits once that answer lands.
        """
        least = commands if at_least is None else max(1, min(at_least, commands))
        ticket = object()
        self._line.append(ticket)
        try:
            while True:
                now = self._portal_now()
                if now < self._blocked_until:
                    await self._wait(self._blocked_until - now)
                    continue
                if self.mode == "off":
                    return Reservation(0.0, counted=False, commands=commands)
                if self._line[0] is not ticket:
                    # First come, first served: room that an answer frees goes to the request
                    # that has waited for it, not to one put together since.
                    await self._wait_change()
                    continue
                if self.mode == "unknown" or self._stale or self.operating is None:
                    if self._in_flight == 0:
                        return self._hold(commands * self.cost, commands)
                    await self._wait_change()
                    continue
                assert self._limit is not None
                if self.operating + self._reserved + commands * self.cost <= self._limit:
                    return self._hold(commands * self.cost, commands)
                if self._in_flight > 0:
                    # Its answer frees its reservation (usually more than it was charged).
                    await self._wait_change()
                    continue
                fit = self._fit(commands - 1)
                if fit >= least:
                    return self._hold(fit * self.cost, fit)
                wake = max((self.reset_at or now) + RESET_MARGIN_S, now + RESET_MARGIN_S)
                if wake != self._announced_wake:
                    self._announced_wake = wake
                    self._announce(wake - now)
                await self._wait(wake - now)
                self._stale = True
        finally:
            self._line.remove(ticket)
            if self._line:
                self._changed.set()

    def _fit(self, commands: int) -> int:
        """How many of `commands` calls fit the room left (mode on, cost and value known)."""
        assert self._limit is not None
        assert self.operating is not None
        room = self._limit - self.operating - self._reserved
        if room < 0:
            return 0
        if self.cost <= 0:
            return commands
        fit = min(commands, int(room / self.cost))
        # The division may land a hair below a whole number that does fit.
        if fit < commands and self.operating + self._reserved + (fit + 1) * self.cost <= (
            self._limit
        ):
            fit += 1
        return fit

    def _announce(self, seconds: float) -> None:
        assert self.operating is not None
        log.info(
            "operating budget of %s nearly spent (%.1f of %.1f s): waiting %.0f s for the "
            "oldest minute to leave the window",
            self.method,
            self.operating,
            self._limit,
            seconds,
        )

    def within_request_cap(self, commands: int, unmeasured: int = FIRST_BATCH_COMMANDS) -> int:
        """How many of `commands` calls one request may carry so that the measured cost stays
        well inside the cloud's 60 s cap (at least one; `unmeasured` while no cost is known)."""
        per = max(self.cost, self.wall)
        if per <= 0:
            return min(commands, unmeasured)
        return max(1, min(commands, int(REQUEST_CAP_S * REQUEST_CAP_SHARE / per)))

    def _hold(self, cost: float, commands: int) -> Reservation:
        self._in_flight += 1
        self._reserved += cost
        return Reservation(cost, counted=True, commands=commands)

    async def _wait(self, seconds: float) -> None:
        with self._meter.waiting():
            await self._clock.sleep(seconds)

    async def _wait_change(self) -> None:
        # Re-check at least every few seconds: a blocked_until set meanwhile, or a clock jump.
        self._changed.clear()
        with self._meter.waiting():
            await wait_event(self._clock, self._changed, RECHECK_S)

    def release(self, reservation: Reservation, observation: Observation | None) -> None:
        """The request holding `reservation` ended; `observation` is None if it failed."""
        if reservation.counted:
            self._in_flight -= 1
            self._reserved = max(0.0, self._reserved - reservation.cost)
        if observation is not None:
            self._done_since += reservation.commands
            self._learn(observation)
        self._changed.set()

    def _learn(self, obs: Observation) -> None:
        if obs.server_time is not None:
            # The answer left the portal a network latency ago, so this slightly understates
            # the portal's lead: waits come out a little long, never short.
            self._offset = obs.server_time - self._clock.now()
        per = obs.per_command_s
        if (
            obs.entries < 2
            and obs.operating is not None
            and self.operating is not None
            and obs.reset_at == self.reset_at
            and obs.operating > self.operating
            and self._done_since > 0
        ):
            # One command per answer (batch size 1): the reported processing time need not be
            # what the portal charges, but the rise of `operating` per answered command is.
            rise = (obs.operating - self.operating) / self._done_since
            per = max(per or 0.0, rise)
        if per is not None:
            self.cost = _smoothed(self.cost, per)
        if obs.wall_s is not None:
            self.wall = _smoothed(self.wall, obs.wall_s)
        if obs.operating is not None and (
            self.operating is None
            or obs.operating > self.operating
            or (obs.reset_at is not None and obs.reset_at != self.reset_at)
        ):
            self._done_since = 0
        if obs.operating is None:
            if self.mode == "unknown":
                self.mode = "off"  # an on-premise portal: no counters to pace against
            return
        self._limited_strikes = 0
        if self._limit is not None:
            self.mode = "on"
        # Learnt even with pacing off: a 429 then waits for the real reset, not a guess.
        self._stats.operating_peak_s = max(self._stats.operating_peak_s, obs.operating)
        if obs.reset_at is not None and (self.reset_at is None or obs.reset_at > self.reset_at):
            # A newer window (the oldest minute dropped out): the value may have gone down.
            self.reset_at = obs.reset_at
            self.operating = obs.operating
            self._stale = False
        elif obs.reset_at is None or obs.reset_at == self.reset_at:
            self.operating = max(self.operating or 0.0, obs.operating)
            self._stale = False
        # An older window's value (a slow answer from before the reset) teaches nothing.

    def on_limited(self, *, status: int | None = 429, code: str = "OPERATION_TIME_LIMIT") -> float:
        """A 429 OPERATION_TIME_LIMIT (or a 429 without a known code): pause the method;
        returns the pause in seconds (what is left of it, if the method is already paused).

        Requests in flight when a pause begins are refused too; they belong to the same pause
        and neither lengthen it nor log again (one line per pause, whatever the concurrency).
        """
        now = self._portal_now()
        if now < self._blocked_until:
            return self._blocked_until - now
        self._limited_strikes += 1
        if self.reset_at is not None and self.reset_at + RESET_MARGIN_S > now:
            until = self.reset_at + RESET_MARGIN_S
        else:
            # No usable reset time (error answers carry none): 10 s, doubling while the
            # block lasts, so a long block costs a handful of probes, not one every 10 s.
            backoff = MIN_OPERATING_PAUSE_S * 2.0 ** min(self._limited_strikes - 1, 6)
            until = now + min(MAX_OPERATING_PAUSE_S, backoff)
        self._blocked_until = max(self._blocked_until, until)
        self.pauses += 1
        self._stale = True
        self._changed.set()
        sent = (
            f"HTTP {status} {code or '(no code)'}" if status is not None else f"{code} per command"
        )
        log.warning(
            "%s blocked by the portal (%s): pausing it %.0f s; the affected IDs are retried "
            "without spending attempts",
            self.method,
            sent,
            until - now,
        )
        return until - now


class Pacer:
    """Both limits for one portal: `reservation = await pacer.acquire(method, n)`, then
    `pacer.release(method, reservation, observation, envelope)` once the answer is in."""

    def __init__(
        self,
        limits: LimitsConfig,
        clock: Clock,
        stats: FetchStats,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._stats = stats
        self.rate = RateGate(limits, clock, stats, rand)
        self._budgets: dict[str, OperatingBudget] = {}
        self._operating_meter = WaitMeter(clock, stats, "operating_wait_s")

    def budget(self, method: str) -> OperatingBudget:
        b = self._budgets.get(method)
        if b is None:
            b = self._budgets[method] = OperatingBudget(
                self._limits, self._clock, self._stats, method, self._operating_meter
            )
        return b

    async def acquire(
        self, method: str, commands: int, at_least: int | None = None, *, batch: bool = False
    ) -> Reservation:
        """Operating budget first (it may wait minutes), then one token of the rate limit.
        `reservation.commands` says how many of `commands` were admitted (see `reserve`).

        `batch`: the commands go in one `batch` request, which also takes its share of the
        budget of the method `batch` (`BATCH_BUDGET`). The REST docs say a batch is not
        counted itself (`limits.md`), and there that budget's counter stays at 0 and never
        binds; the official JS SDK's maintainers measured a portal that charges the whole
        request to `batch` (b24jssdk pull request 539, issue 459), one budget for every nested
        method, and there it is the one that binds (`release_batch` feeds it the envelope)."""
        reservation = await self.budget(method).reserve(commands, at_least)
        try:
            if batch and method != BATCH_BUDGET:
                least = reservation.commands if at_least is None else min(at_least, commands)
                outer = await self.budget(BATCH_BUDGET).reserve(
                    reservation.commands, min(least, reservation.commands)
                )
                reservation.outer = outer
                reservation.commands = outer.commands
            reservation.generation = await self.rate.acquire()
        except BaseException:
            self.release(method, reservation, None, None)
            raise
        return reservation

    def release(
        self,
        method: str,
        reservation: Reservation,
        observation: Observation | None,
        envelope: Observation | None,
    ) -> None:
        """The request holding `reservation` ended: `observation` is what its commands
        reported for `method`, `envelope` what a batch's own `time` reported (None: failed)."""
        self.budget(method).release(reservation, observation)
        if reservation.outer is not None:
            self.budget(BATCH_BUDGET).release(reservation.outer, envelope)

    def wait_totals(self) -> tuple[float, float]:
        """(rate wait, operating wait) up to now, open waits included; also refreshes
        `FetchStats.rate_wait_s` / `operating_wait_s`, so a live display can read either."""
        return self.rate.wait_total(), self._operating_meter.total()


__all__ = [
    "BATCH_BUDGET",
    "MIN_OPERATING_PAUSE_S",
    "RECHECK_S",
    "REQUEST_CAP_S",
    "RESET_MARGIN_S",
    "LeakyBucket",
    "Observation",
    "OperatingBudget",
    "Pacer",
    "RateGate",
    "Reservation",
    "WaitMeter",
    "batch_envelope",
    "observe",
]
