"""Progress output in its three modes, driven by a fake clock; secrets masked in every log line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pipeline.logs import log_event, secret_filter, set_run_id, setup_logging
from pipeline.progress import Progress, format_duration

SECRET = "w3bh00ks3cr3t"
URL = f"https://portal.bitrix24.com/rest/1/{SECRET}/"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.t = 0.0
        self.wall0 = start
        self.scale = 1.0

    def now(self) -> float:
        return self.wall0 + self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@dataclass
class ScriptedStats:
    """Stands in for the fetch statistics: the script moves the limit waits."""

    rate_wait_s: float = 0.0
    operating_wait_s: float = 0.0

    def totals(self) -> tuple[float, float]:
        return self.rate_wait_s, self.operating_wait_s


def test_mode_follows_the_stream() -> None:
    assert Progress(total=1, stream=TtyStream(), clock=FakeClock()).mode == "tty"
    assert Progress(total=1, stream=io.StringIO(), clock=FakeClock()).mode == "plain"


def test_plain_lines_every_interval_with_rate_eta_and_limit_waits() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(total=1000, stream=out, clock=clock, mode="plain", interval_s=5)
    progress.advance(0)  # first call always reports
    for _ in range(20):  # 20 s at 10 deals/s, one line every 5 s
        clock.t += 1
        progress.add_limit_wait(0.5)
        progress.advance(10, failed=1 if clock.t == 7 else 0)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + 4 + 1  # start, t=5,10,15,20, close
    assert lines[2] == (
        "progress: 100/1,000 deals (10.0%), 10.0/s, ETA 1m30s, elapsed 10s, "
        "waited on limits 5s, failed 1"
    )
    assert lines[-1].startswith("progress: 200/1,000 deals (20.0%)")


def screen(raw: str) -> tuple[list[str], list[str]]:
    """Replay what a terminal would show: (bar frames that were redrawn in place, lines that
    scrolled up for good). Colours are dropped; the bar is a single line."""
    text = ANSI.sub("", raw.replace("\r\x1b[2K", "\x00"))
    frames: list[str] = []
    lines: list[str] = []
    current = ""
    for char in text:
        if char == "\x00":
            frames.append(current)
            current = ""
        elif char == "\n":
            lines.append(current)
            current = ""
        else:
            current += char
    if current:
        frames.append(current)
    return frames, lines


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = re.compile(
    r"^[━╸╺ ]{24} +(?P<pct>[\d.]+)% (?P<done>[\d,]+)/(?P<total>[\d,]+) deals"
    r"  (?P<rate>[\d.,]+)/s  ETA (?P<eta>\S+)  limits (?P<limits>\S+)(?P<rest>.*)$"
)


def seconds_of(text: str) -> float | None:
    """Inverse of format_duration."""
    if text == "--":
        return None
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+)s", text)
    assert match, text
    hours, minutes, secs = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def test_tty_bar_redraws_in_place_and_ends_with_newline() -> None:
    clock, out = FakeClock(), TtyStream()
    progress = Progress(total=200, stream=out, clock=clock, width=120)
    for _ in range(10):
        clock.t += 0.5
        progress.advance(20)
    progress.add_limit_wait(65)
    progress.close()
    frames, lines = screen(out.getvalue())
    assert len(frames) == 11  # each advance (0.5 s >= 0.2 s interval), close; then it stays
    assert lines == ["━" * 24 + " 100.0% 200/200 deals  40.0/s  ETA 0s  limits 1m05s"]
    assert frames[3] == "━" * 9 + "╸" + "━" * 14 + "  40.0% 80/200 deals  40.0/s  ETA 3s  limits 0s"


def test_tty_write_line_prints_above_the_bar() -> None:
    clock, out = FakeClock(), TtyStream()
    progress = Progress(total=10, stream=out, clock=clock, width=80)
    progress.advance(5)
    progress.write_line("a warning")
    progress.close()
    frames, lines = screen(out.getvalue())
    assert lines[0] == "a warning"
    assert BAR.match(lines[1])
    assert all(BAR.match(f) for f in frames)


def test_tty_bar_fits_the_terminal_width() -> None:
    clock, out = FakeClock(), TtyStream()
    progress = Progress(total=10**9, stream=out, clock=clock, width=40)
    progress.advance(5, failed=3)
    progress.close()
    frames, lines = screen(out.getvalue())
    assert all(len(line) <= 40 for line in frames + lines)


def test_json_events_are_log_records_for_schedulers() -> None:
    set_run_id(None)  # an in-process CLI test run earlier must not leak its run id here
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(total=100, stream=out, clock=clock, mode="json", interval_s=10)
    progress.event("run_started", total=100, output="./deals")
    progress.advance(0)
    clock.t = 10
    progress.add_limit_wait(2.5)
    progress.advance(40, failed=2, unavailable=1)
    clock.t = 12
    progress.advance(60)
    progress.close()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["run_started", "progress", "progress", "progress"]
    assert records[0]["total"] == 100
    assert records[0]["ts"] == "2026-09-21T14:13:20.000Z"
    mid = records[2]
    assert mid == {
        "ts": "2026-09-21T14:13:30.000Z",
        "level": "info",
        "logger": "pipeline.progress",
        "run_id": None,
        "event": "progress",
        "message": "40/100 deals (40.0%), 4.0/s, ETA 15s, elapsed 10s, waited on limits 2s, "
        "unavailable 1, failed 2",
        "final": False,
        "done": 40,
        "total": 100,
        "failed": 2,
        "unavailable": 1,
        "resumed": 0,
        "percent": 40.0,
        "rate_per_s": 4.0,
        "eta_s": 15.0,
        "elapsed_s": 10.0,
        "limit_wait_s": 2.5,
        "rate_wait_s": 2.5,
        "operating_wait_s": 0.0,
    }
    assert records[-1]["final"] is True
    assert records[-1]["done"] == 100


def test_rate_and_eta_leave_out_the_burst_before_the_first_limit_wait() -> None:
    clock, out = FakeClock(), io.StringIO()
    stats = ScriptedStats()
    progress = Progress(total=10_000, stream=out, clock=clock, mode="plain", interval_s=1)
    progress.follow_waits(stats.totals)
    progress.advance(2500)  # the initial burst: a full bucket, nothing held back yet
    for _ in range(60):
        clock.t += 1
        stats.rate_wait_s += 0.9  # from now on the bucket holds requests back
        progress.advance(10)
    snap = progress.snapshot()
    assert snap.rate == pytest.approx(10.0, rel=0.02)
    assert snap.eta_s == pytest.approx((10_000 - 3100) / 10.0, rel=0.02)
    assert snap.rate_wait_s == pytest.approx(54.0)


def test_unknown_eta_and_durations() -> None:
    progress = Progress(total=5, stream=io.StringIO(), clock=FakeClock(), mode="plain")
    assert progress.snapshot().eta_s is None
    assert format_duration(None) == "--"
    assert format_duration(59.4) == "59s"
    assert format_duration(3725) == "1h02m05s"
    assert format_duration(125) == "2m05s"


# -------------------------------------------------------------------------------------- logs


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    yield logging.getLogger("pipeline.test_operator")
    root = logging.getLogger("pipeline")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.propagate = True


def test_text_logs_mask_the_secret_everywhere(logger: logging.Logger) -> None:
    out = io.StringIO()
    setup_logging(log_format="text", secrets=[URL, SECRET], stream=out)
    logger.info("calling %s", URL + "batch")
    logger.warning("token was %s", SECRET)
    log_event(logger, "retry", "retrying", url=URL, attempt=2)
    try:
        raise RuntimeError(f"connect failed for {URL}")
    except RuntimeError:
        logger.exception("boom")
    text = out.getvalue()
    assert SECRET not in text
    assert "https://portal.bitrix24.com/rest/1/***/batch" in text
    assert "token was ***" in text
    assert "retrying url=https://portal.bitrix24.com/rest/1/***/ attempt=2" in text
    assert "RuntimeError: connect failed for https://portal.bitrix24.com/rest/1/***/" in text


def test_json_logs_one_object_per_line_masked(logger: logging.Logger) -> None:
    out = io.StringIO()
    handler = setup_logging(log_format="json", secrets=[SECRET], stream=out)
    log_event(logger, "run_started", total=3, webhook=URL)
    logger.error("bad %s", {"nested": [SECRET]}, extra={"detail": f"auth={SECRET}"})
    secret_filter(handler).add("fresh-oauth-token")
    logger.info("refreshed: fresh-oauth-token")
    try:
        raise ValueError(SECRET)
    except ValueError:
        logger.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    assert SECRET not in out.getvalue()
    assert "fresh-oauth-token" not in out.getvalue()
    assert records[0]["event"] == "run_started"
    assert records[0]["total"] == 3
    assert records[0]["webhook"] == "https://portal.bitrix24.com/rest/1/***/"
    assert records[0]["ts"].endswith("Z")
    assert records[1]["level"] == "error"
    assert records[1]["detail"] == "auth=***"
    assert records[2]["message"] == "refreshed: ***"
    assert "ValueError: ***" in records[3]["exception"]


def test_setup_is_idempotent_and_does_not_propagate(logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(log_format="text", stream=first)
    setup_logging(log_format="text", stream=second)
    logger.info("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1
    assert logging.getLogger("pipeline").propagate is False


def test_logs_through_progress_do_not_tear_the_bar(logger: logging.Logger) -> None:
    clock, out = FakeClock(), TtyStream()
    progress = Progress(total=10, stream=out, clock=clock, width=80)
    setup_logging(log_format="text", secrets=[SECRET], stream=progress.log_stream())
    progress.advance(3)
    logger.warning("slow portal %s", SECRET)
    progress.close()
    text = out.getvalue()
    assert SECRET not in text
    frames, lines = screen(text)
    assert lines[0].endswith("WARNING slow portal ***")
    assert all(BAR.match(f) for f in frames)
