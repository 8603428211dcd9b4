"""What a run tells the operator while it works: a live bar, periodic lines, or JSON events.

    tty     one line redrawn in place (`\\r`), at most every `interval_s` (default 0.2 s)
    plain   a full line every `interval_s` (default 5 s): for cron mail and CI logs
    json    one JSON object per line every `interval_s` (default 5 s): for schedulers

Each shows done/total, deals per second (over a sliding window), the ETA (from the run's
average, so neither the initial burst nor a limit pause makes it swing), failures, and the time
spent waiting on the portal's limits (the rate-limit bucket and the operating-time budget), which
is what makes a slow run explainable.

The clock and the stream are parameters: tests drive a fake clock and read a StringIO, no sleeps.
Nothing here knows about the fetch engine; the run loop calls `advance` and `add_limit_wait`.
"""

from __future__ import annotations

import json
import shutil
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, Protocol, TextIO

Mode = Literal["tty", "plain", "json"]

_DEFAULT_INTERVAL: Final[dict[str, float]] = {"tty": 0.2, "plain": 5.0, "json": 5.0}
#: Deals/s is measured over this much recent time.
RATE_WINDOW_S: Final = 30.0
_BAR_WIDTH: Final = 24


class _Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """The counters at one moment.

    `rate` is deals/s over the last RATE_WINDOW_S; `eta_s` extrapolates the whole run's average
    and is None while nothing is done yet.
    """

    total: int
    done: int
    failed: int
    elapsed_s: float
    rate: float
    eta_s: float | None
    limit_wait_s: float

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            "percent": round(100 * self.fraction, 2),
            "rate_per_s": round(self.rate, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "elapsed_s": round(self.elapsed_s, 1),
            "limit_wait_s": round(self.limit_wait_s, 1),
        }


class Progress:
    """Progress of one run over `total` deals. Not thread-safe; call from the event loop."""

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
    ) -> None:
        if mode is None:
            mode = "tty" if _isatty(stream) else "plain"
        self.mode: Mode = mode
        self._stream = stream
        self._clock = clock
        self._interval = _DEFAULT_INTERVAL[mode] if interval_s is None else interval_s
        self._width = width or shutil.get_terminal_size(fallback=(100, 24)).columns
        self._label = label
        self._total = total
        self._done = 0
        self._failed = 0
        self._limit_wait = 0.0
        self._start = clock.monotonic()
        self._last_emit: float | None = None
        self._samples: deque[tuple[float, int]] = deque([(self._start, 0)])
        self._bar_shown = False
        self._closed = False

    # ------------------------------------------------------------------------------- updates

    def set_total(self, total: int) -> None:
        """Change the total (e.g. once incremental discovery knows how many IDs there are)."""
        self._total = total

    def advance(self, done: int = 0, *, failed: int = 0) -> None:
        """Count `done` more deals accounted for, `failed` of which did not make it."""
        self._done += done
        self._failed += failed
        self.tick()

    def add_limit_wait(self, seconds: float) -> None:
        """Record time spent waiting on the portal's rate or operating-time limit."""
        self._limit_wait += max(0.0, seconds)

    def tick(self) -> None:
        """Emit an update if `interval_s` has passed since the last one."""
        now = self._clock.monotonic()
        if self._last_emit is None or now - self._last_emit >= self._interval:
            self._emit(now, final=False)

    def event(self, name: str, **fields: object) -> None:
        """A one-off event: a JSON object in json mode, else a line (kept clear of the bar)."""
        if self.mode == "json":
            self._write_json({"event": name, **fields})
            return
        details = " ".join(f"{k}={v}" for k, v in fields.items())
        self.write_line(f"{name} {details}".rstrip())

    def close(self) -> None:
        """Emit the final state; in tty mode leave the bar on its own finished line."""
        if self._closed:
            return
        self._closed = True
        self._emit(self._clock.monotonic(), final=True)
        if self.mode == "tty" and self._bar_shown:
            self._stream.write("\n")
            self._bar_shown = False
        self._stream.flush()

    # ------------------------------------------------------------------------------ reading

    def snapshot(self) -> ProgressSnapshot:
        now = self._clock.monotonic()
        rate = self._rate(now)
        elapsed = now - self._start
        # The ETA uses the whole run's average: an operating-limit pause (up to 10 minutes) or
        # the initial burst would make a recent-window estimate swing wildly.
        average = self._done / elapsed if elapsed > 0 else 0.0
        remaining = max(0, self._total - self._done)
        eta = remaining / average if average > 0 else (0.0 if remaining == 0 else None)
        return ProgressSnapshot(
            total=self._total,
            done=self._done,
            failed=self._failed,
            elapsed_s=elapsed,
            rate=rate,
            eta_s=eta,
            limit_wait_s=self._limit_wait,
        )

    def write_line(self, text: str) -> None:
        """Write a whole line without tearing the tty bar (it is redrawn below the line)."""
        if self.mode == "tty" and self._bar_shown:
            self._stream.write("\r\x1b[K")
        self._stream.write(text if text.endswith("\n") else text + "\n")
        if self.mode == "tty" and self._bar_shown and not self._closed:
            self._stream.write(self._render_bar(self.snapshot()))
        self._stream.flush()

    def log_stream(self) -> _LineStream:
        """A file-like object for a logging handler whose lines go through `write_line`."""
        return _LineStream(self)

    # ----------------------------------------------------------------------------- internals

    def _rate(self, now: float) -> float:
        samples = self._samples
        while len(samples) > 1 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        t0, d0 = samples[0]
        span = now - t0
        return (self._done - d0) / span if span > 0 else 0.0

    def _emit(self, now: float, *, final: bool) -> None:
        self._samples.append((now, self._done))
        self._last_emit = now
        snap = self.snapshot()
        if self.mode == "json":
            self._write_json({"event": "progress", "final": final, **snap.as_dict()})
        elif self.mode == "plain":
            self._stream.write(self._render_plain(snap) + "\n")
            self._stream.flush()
        else:
            self._stream.write(self._render_bar(snap))
            self._stream.flush()
            self._bar_shown = True

    def _write_json(self, payload: dict[str, object]) -> None:
        stamp = datetime.fromtimestamp(self._clock.now(), UTC).isoformat(timespec="milliseconds")
        line = json.dumps({"ts": stamp.replace("+00:00", "Z"), **payload}, default=str)
        self._stream.write(line + "\n")
        self._stream.flush()

    def _render_plain(self, snap: ProgressSnapshot) -> str:
        parts = [
            f"{snap.done:,}/{snap.total:,} {self._label} ({100 * snap.fraction:.1f}%)",
            f"{snap.rate:.1f}/s",
            f"ETA {format_duration(snap.eta_s)}",
            f"elapsed {format_duration(snap.elapsed_s)}",
            f"waited on limits {format_duration(snap.limit_wait_s)}",
        ]
        if snap.failed:
            parts.append(f"failed {snap.failed:,}")
        return "progress: " + ", ".join(parts)

    def _render_bar(self, snap: ProgressSnapshot) -> str:
        filled = int(_BAR_WIDTH * snap.fraction)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        text = (
            f"[{bar}] {100 * snap.fraction:5.1f}% {snap.done:,}/{snap.total:,} {self._label}"
            f"  {snap.rate:.1f}/s  ETA {format_duration(snap.eta_s)}"
            f"  limits {format_duration(snap.limit_wait_s)}"
        )
        if snap.failed:
            text += f"  failed {snap.failed:,}"
        return "\r" + text[: max(10, self._width - 1)] + "\x1b[K"


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


__all__ = ["RATE_WINDOW_S", "Mode", "Progress", "ProgressSnapshot", "format_duration"]
