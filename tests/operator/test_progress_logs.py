"""Progress output in its three modes, driven by a fake clock; secrets masked in every log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pipeline.logs import log_event, secret_filter, setup_logging
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


def test_tty_bar_redraws_one_line_and_ends_with_newline() -> None:
    clock, out = FakeClock(), TtyStream()
    progress = Progress(total=200, stream=out, clock=clock, width=120)
    for _ in range(10):
        clock.t += 0.5
        progress.advance(20)
    progress.add_limit_wait(65)
    progress.close()
    text = out.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    frames = [f.removesuffix("\x1b[K") for f in text.rstrip("\n").split("\r") if f]
    assert len(frames) == 11  # each advance (0.5 s >= 0.2 s interval) plus the final frame
    assert frames[-1] == (
        "[########################] 100.0% 200/200 deals  40.0/s  ETA 0s  limits 1m05s"
    )
    assert frames[3].startswith("[#########...............]  40.0% 80/200 deals  40.0/s  ETA 3s")


def test_tty_write_line_keeps_the_bar_intact() -> None:
    clock, out = FakeClock(), TtyStream()
    progress = Progress(total=10, stream=out, clock=clock, width=80)
    progress.advance(5)
    progress.write_line("a warning")
    text = out.getvalue()
    # clear the bar, print the line, redraw the bar below it
    assert "\r\x1b[Ka warning\n\r[" in text


def test_tty_bar_fits_the_terminal_width() -> None:
    clock, out = FakeClock(), TtyStream()
    progress = Progress(total=10**9, stream=out, clock=clock, width=40)
    progress.advance(5, failed=3)
    frame = out.getvalue().split("\r")[-1].removesuffix("\x1b[K")
    assert len(frame) == 39


def test_json_events_for_schedulers() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(total=100, stream=out, clock=clock, mode="json", interval_s=10)
    progress.event("run_started", total=100, output="./deals")
    progress.advance(0)
    clock.t = 10
    progress.add_limit_wait(2.5)
    progress.advance(40, failed=2)
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
        "event": "progress",
        "final": False,
        "done": 40,
        "total": 100,
        "failed": 2,
        "percent": 40.0,
        "rate_per_s": 4.0,
        "eta_s": 15.0,
        "elapsed_s": 10.0,
        "limit_wait_s": 2.5,
    }
    assert records[-1]["final"] is True
    assert records[-1]["done"] == 100


def test_rate_uses_a_sliding_window_and_eta_the_run_average() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(total=10_000, stream=out, clock=clock, mode="plain", interval_s=1)
    progress.advance(2500)  # the initial burst
    for _ in range(60):
        clock.t += 1
        progress.advance(10)
    snap = progress.snapshot()
    assert snap.rate == pytest.approx(10.0)
    assert snap.eta_s == pytest.approx((10_000 - 3100) / (3100 / 60))


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
    text = out.getvalue()
    assert SECRET not in text
    assert "WARNING slow portal ***\n\r[" in text
