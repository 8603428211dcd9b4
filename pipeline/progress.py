"""What a run tells the operator while it works: a live bar, periodic lines, or JSON events.

    tty     a live bar at the bottom of the terminal (rich's Live display); log lines print
            above it through `write_line`, never into it; refreshed every `interval_s` (0.2 s)
    plain   a full line every `interval_s` (default 5 s): for cron mail and CI logs
    json    one JSON log record per line every `interval_s` (default 5 s): for schedulers

Each shows done/total, deals per second and the ETA (both over a moving window, see `_Rate`),
permanent failures ("unavailable": deleted or hidden deals) apart from retryable ones
("failed"), and the time during which at least one request was held back by the portal's limits
(the rate-limit bucket and the operating-time budget), which is what makes a slow run
explainable. The wait figures are read live from the client's pacer (`follow_waits`), so they
grow during a pause, not only after it.

The clock and the stream are parameters: tests drive a fake clock and read a StringIO, no sleeps.
Nothing here knows about the fetch engine; the run loop calls `advance`, and `start` adds a
wall-clock ticker task on the event loop so that a long pause still refreshes the display.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol, TextIO

if TYPE_CHECKING:
    # Imported when a tty display is made: a run without one (cron, --no-progress) does not
    # load rich's modules (several MB of a run that must stay within its memory bound).
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

from pipeline.logs import current_run_id, json_record

Mode = Literal["tty", "plain", "json"]

_DEFAULT_INTERVAL: Final[dict[str, float]] = {"tty": 0.2, "plain": 5.0, "json": 5.0}
#: Deals/s (and so the ETA) is measured over at most this much recent clock time. It is the
#: portal's operating-time window (10 minutes, Bitrix24 REST docs, "Limits on operating time"):
#: when that budget binds, the client spends it in a burst and then waits for the oldest minute to
#: leave the window, so only a window of that length always holds one whole burst-and-wait cycle.
RATE_WINDOW_S: Final = 600.0
_BAR_WIDTH: Final = 24
_PROGRESS_LOGGER: Final = "pipeline.progress"


class _Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...


#: Where the limit waits accrue (the client's `pacer.wait_totals`): clock seconds during which
#: at least one request was held back by the rate bucket and by the operating budget, a wait
#: still open included. Called only from the event loop's thread, like the pacer itself.
WaitSource = Callable[[], tuple[float, float]]


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """The counters at one moment.

    `done` includes `resumed` (deals committed by earlier attempts, counted as done but never as
    throughput). `rate` is this attempt's deals/s over the moving window; `eta_s` divides the
    remaining deals by it and is None while it is unknown.
    """

    total: int
    done: int
    failed: int
    unavailable: int
    resumed: int
    elapsed_s: float
    rate: float
    eta_s: float | None
    rate_wait_s: float
    operating_wait_s: float

    @property
    def limit_wait_s(self) -> float:
        return self.rate_wait_s + self.operating_wait_s

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            "unavailable": self.unavailable,
            "resumed": self.resumed,
            "percent": round(100 * self.fraction, 2),
            "rate_per_s": round(self.rate, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "elapsed_s": round(self.elapsed_s, 1),
            "limit_wait_s": round(self.limit_wait_s, 1),
            "rate_wait_s": round(self.rate_wait_s, 1),
            "operating_wait_s": round(self.operating_wait_s, 1),
        }


class _Rate:
    """This attempt's deals/s over a moving window that starts no earlier than the pacing.

    The portal grants a burst up front (a full rate bucket, an unspent operating budget): the
    deals fetched before any request was first held back say nothing about the pace that
    follows, so once a limit wait is seen the window starts where that wait began.
    """

    def __init__(self, start: float, window_s: float) -> None:
        self._window = window_s
        self._origin = start
        self._samples: deque[tuple[float, float]] = deque([(start, 0.0)])

    def paced_since(self, when: float, now: float, done: int) -> None:
        """The first limit wait began at `when`: forget what came before (the deals done by
        then are interpolated between the samples around it)."""
        when = min(max(when, self._origin), now)
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= when:
            samples.popleft()
        t0, d0 = samples[0]
        t1, d1 = samples[1] if len(samples) > 1 else (now, done)
        at = d0 if t1 <= t0 else d0 + (d1 - d0) * (when - t0) / (t1 - t0)
        samples[0] = (when, at)
        self._origin = when

    def add(self, now: float, done: int) -> None:
        self._samples.append((now, done))
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= now - self._window:
            samples.popleft()

    def per_second(self, now: float, done: int) -> float:
        t0, d0 = self._samples[0]
        span = now - t0
        return (done - d0) / span if span > 0 else 0.0


class Progress:
    """Progress of one run over `total` deals. Call from the event loop; `write_line` may also be
    called from other threads (log records of worker threads)."""

    def __init__(
        self,
        *,
        total: int,
        stream: TextIO,
        clock: _Clock,
        mode: Mode | None = None,
        interval_s: float | None = None,
        width: int | None = None,
        label: str = "deals",
        window_s: float = RATE_WINDOW_S,
    ) -> None:
        if mode is None:
            mode = "tty" if _isatty(stream) else "plain"
        self.mode: Mode = mode
        self._stream = stream
        self._clock = clock
        self._wall_interval = _DEFAULT_INTERVAL[mode] if interval_s is None else interval_s
        # The clock may run faster than the wall (simulator runs): throttle on the wall.
        self._interval = self._wall_interval * float(getattr(clock, "scale", 1.0))
        self._width = width or shutil.get_terminal_size(fallback=(100, 24)).columns
        self._label = label
        self._total = total
        self._done = 0
        self._resumed = 0
        self._failed = 0
        self._unavailable = 0
        self._extra_wait = 0.0
        self._waits: WaitSource | None = None
        self._waits_at_start = (0.0, 0.0)
        self._start = clock.monotonic()
        self._rate = _Rate(self._start, window_s)
        self._paced = False
        self._last_emit: float | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._ticker: asyncio.Task[None] | None = None
        self._console: Console | None = None
        self._live: Live | None = None
        if mode == "tty":
            from rich.console import Console
            from rich.live import Live

            self._console = Console(
                file=stream, force_terminal=True, width=self._width, highlight=False
            )
            self._live = Live(
                console=self._console, auto_refresh=False, redirect_stdout=False,
                redirect_stderr=False, transient=False,
            )  # fmt: skip

    # ------------------------------------------------------------------------------- updates

    def set_total(self, total: int) -> None:
        """Change the total (e.g. once incremental discovery knows how many IDs there are)."""
        self._total = total

    def follow_waits(self, source: WaitSource) -> None:
        """Read the limit waits from `source` (live) instead of being told with add_limit_wait.
        Only what accrues from now on counts: a client reused across runs carries older waits."""
        self._waits = source
        self._waits_at_start = source()

    def resume(self, done: int) -> None:
        """`done` deals were committed by earlier attempts: done already, but not throughput."""
        self._resumed += done
        self._done += done

    def advance(self, done: int = 0, *, failed: int = 0, unavailable: int = 0) -> None:
        """Count `done` more deals accounted for: `failed` of them failed for reasons a retry may
        fix, `unavailable` of them are permanently so (deleted or hidden deals)."""
        self._done += done
        self._failed += failed
        self._unavailable += unavailable
        self.tick()

    def add_limit_wait(self, seconds: float) -> None:
        """Record time spent waiting on the portal's limits (for callers without a WaitSource)."""
        self._extra_wait += max(0.0, seconds)

    def tick(self) -> None:
        """Emit an update if `interval_s` has passed since the last one."""
        with self._lock:
            if self._closed:
                return
            now = self._clock.monotonic()
            if self._last_emit is None or now - self._last_emit >= self._interval:
                self._emit(now, final=False)

    def start(self) -> None:
        """Refresh every `interval_s` of wall time even when no deal arrives (a limit pause).
        Needs a running event loop (the run's); without one, refreshes come from `advance`."""
        if self._ticker is not None:
            return
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            self._ticker = loop.create_task(self._tick_forever(), name="progress")

    def event(self, name: str, message: str = "", **fields: object) -> None:
        """A one-off event: a JSON record in json mode, else a line (kept clear of the bar)."""
        if self.mode == "json":
            self._write_json(name, message or name, fields)
            return
        details = " ".join(f"{k}={v}" for k, v in fields.items())
        self.write_line(f"{message or name} {details}".rstrip())

    def close(self) -> None:
        """Emit the final state; in tty mode leave the bar on its own finished line."""
        if self._ticker is not None:
            self._ticker.cancel()
        with self._lock:
            if self._closed:
                return
            self._emit(self._clock.monotonic(), final=True)
            self._closed = True
            if self._live is not None and self._live.is_started:
                self._live.stop()
            self._stream.flush()

    # ------------------------------------------------------------------------------ reading

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            now = self._clock.monotonic()
            rate_wait, operating_wait = self._wait_figures()
            self._note_pacing(now, rate_wait + operating_wait)
            rate = self._rate.per_second(now, self._done - self._resumed)
            remaining = max(0, self._total - self._done)
            eta = remaining / rate if rate > 0 else (0.0 if remaining == 0 else None)
            return ProgressSnapshot(
                total=self._total,
                done=self._done,
                failed=self._failed,
                unavailable=self._unavailable,
                resumed=self._resumed,
                elapsed_s=now - self._start,
                rate=rate,
                eta_s=eta,
                rate_wait_s=rate_wait,
                operating_wait_s=operating_wait,
            )

    def write_line(self, text: str) -> None:
        """Write a whole line; on a tty it prints above the live bar, never into it."""
        text = text.removesuffix("\n")
        with self._lock:
            if self._console is not None and not self._closed:
                from rich.text import Text

                self._console.print(Text(text), soft_wrap=True, highlight=False, markup=False)
            else:
                self._stream.write(text + "\n")
            self._stream.flush()

    def log_stream(self) -> _LineStream:
        """A file-like object for a logging handler whose lines go through `write_line`."""
        return _LineStream(self)

    # ----------------------------------------------------------------------------- internals

    async def _tick_forever(self) -> None:
        while not self._closed:
            # Wall time on purpose: this paces redrawing, not the figures.
            await asyncio.sleep(self._wall_interval)
            self.tick()

    def _wait_figures(self) -> tuple[float, float]:
        if self._waits is None:
            return self._extra_wait, 0.0
        rate0, operating0 = self._waits_at_start
        rate_now, operating_now = self._waits()
        return max(0.0, rate_now - rate0) + self._extra_wait, max(0.0, operating_now - operating0)

    def _note_pacing(self, now: float, waited: float) -> None:
        if not self._paced and waited > 0:
            # Waits are wall time on the clock, so the first one began `waited` ago at the latest.
            self._paced = True
            self._rate.paced_since(now - waited, now, self._done - self._resumed)

    def _emit(self, now: float, *, final: bool) -> None:
        self._rate.add(now, self._done - self._resumed)
        self._last_emit = now
        snap = self.snapshot()
        if self.mode == "json":
            self._write_json("progress", render_plain(snap, self._label), {
                "final": final, **snap.as_dict()
            })  # fmt: skip
        elif self.mode == "plain":
            self._stream.write("progress: " + render_plain(snap, self._label) + "\n")
            self._stream.flush()
        else:
            assert self._live is not None
            self._live.update(self._render_bar(snap), refresh=False)
            if not self._live.is_started:
                self._live.start()
            self._live.refresh()

    def _write_json(self, event: str, message: str, fields: dict[str, object]) -> None:
        record = json_record(
            created=self._clock.now(),
            level="info",
            logger=_PROGRESS_LOGGER,
            event=event,
            message=message,
            run_id=current_run_id(),
            fields=fields,
        )
        with self._lock:
            self._stream.write(record + "\n")
            self._stream.flush()

    def _render_bar(self, snap: ProgressSnapshot) -> Table:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=_BAR_WIDTH, no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        bar = ProgressBar(total=max(snap.total, 1), completed=snap.done, width=_BAR_WIDTH)
        grid.add_row(bar, Text(render_bar_text(snap, self._label), no_wrap=True))
        return grid


def render_bar_text(snap: ProgressSnapshot, label: str = "deals") -> str:
    """The words beside the bar: `45.0% 4,500/10,000 deals  12.3/s  ETA 7m30s  limits 1m05s`."""
    text = (
        f"{100 * snap.fraction:5.1f}% {snap.done:,}/{snap.total:,} {label}"
        f"  {snap.rate:.1f}/s  ETA {format_duration(snap.eta_s)}"
        f"  limits {format_duration(snap.limit_wait_s)}"
    )
    if snap.unavailable:
        text += f"  unavailable {snap.unavailable:,}"
    if snap.failed:
        text += f"  failed {snap.failed:,}"
    return text


def render_plain(snap: ProgressSnapshot, label: str = "deals") -> str:
    parts = [
        f"{snap.done:,}/{snap.total:,} {label} ({100 * snap.fraction:.1f}%)",
        f"{snap.rate:.1f}/s",
        f"ETA {format_duration(snap.eta_s)}",
        f"elapsed {format_duration(snap.elapsed_s)}",
        f"waited on limits {format_duration(snap.limit_wait_s)}",
    ]
    if snap.resumed:
        parts.append(f"{snap.resumed:,} from earlier attempts")
    if snap.unavailable:
        parts.append(f"unavailable {snap.unavailable:,}")
    if snap.failed:
        parts.append(f"failed {snap.failed:,}")
    return ", ".join(parts)


class _LineStream:
    """Buffers writes into lines and hands each to `Progress.write_line`."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._progress.write_line(line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._progress.write_line(self._buffer)
            self._buffer = ""


class DisplayStream:
    """The stream log handlers write to: stderr until a progress display attaches, then lines
    through that display (so they print above its bar). Set up before the display exists."""

    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback
        self._progress: Progress | None = None
        self._buffer = ""

    def attach(self, progress: Progress) -> None:
        self._progress = progress

    def write(self, text: str) -> int:
        if self._progress is None:
            self._fallback.write(text)
            return len(text)
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._progress.write_line(line)
        return len(text)

    def flush(self) -> None:
        if self._progress is not None and self._buffer:
            self._progress.write_line(self._buffer)
            self._buffer = ""
        self._fallback.flush()


def format_duration(seconds: float | None) -> str:
    """`3725` -> `1h02m05s`, `59.4` -> `59s`, None -> `--`."""
    if seconds is None:
        return "--"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


__all__ = [
    "RATE_WINDOW_S",
    "DisplayStream",
    "Mode",
    "Progress",
    "ProgressSnapshot",
    "WaitSource",
    "format_duration",
    "render_bar_text",
    "render_plain",
]
