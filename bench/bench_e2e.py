"""End-to-end CPU efficiency: `deal-export run` over N IDs against the unlimited simulator.

The simulator (`deal-export simulate`, no rate limit, no operating budget) and the exporter
(`deal-export run --rate 0 --operating-budget off`) are two separate processes, so the CPU each
one burns is measured apart: the exporter's from `wait4()` on its pid (user + system time and
peak RSS of exactly that child), the simulator's from /proc/<pid>/stat around the run. The IDs are
the range 1..N, so about 12% of them are missing, deleted or hidden deals that end in the error
sidecar (as a real backfill's gaps would); `deals_per_s` counts exported deals and `ids_per_s`
every ID accounted for. Prints one JSON line and writes bench/results/bench_e2e.json.

    .venv/bin/python -m bench.bench_e2e [--ids 200000]

This module also holds the helpers the other end-to-end benchmarks share (`SimulatorProcess`,
`run_measured`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bench import RESULTS_DIR, write_result

REPO = Path(__file__).resolve().parent.parent
#: No client-side pacing at all: the point is our CPU, not the portal's limits.
LIMITS_OFF = ["--rate", "0", "--operating-budget", "off"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: ours without any portal settings, the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX24_", "DEAL_EXPORT_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class SimulatorProcess:
    """`deal-export simulate --port 0 ARGS` in its own process; stopped with SIGINT on exit."""

    def __init__(self, args: Sequence[str], *, start_timeout_s: float = 60.0) -> None:
        self.args = list(args)
        self.start_timeout_s = start_timeout_s
        self.webhook_url = ""
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> SimulatorProcess:
        command = [sys.executable, "-m", "pipeline", "simulate", "--port", "0", *self.args]
        self._proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=REPO
        )
        assert self._proc.stdout is not None
        # The first line is the webhook URL; a portal of 1M deals lays out in about a second.
        started = time.monotonic()
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http") or time.monotonic() - started > self.start_timeout_s:
            self.__exit__(None, None, None)
            raise SystemExit(f"the simulator did not start: {command!r}")
        self.webhook_url = line
        self.base_url = line.split("/rest/")[0]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/_simulator/stats")
        return result

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)


@dataclass(frozen=True)
class Measured:
    """One child process, run to its end: exit code, wall time, its own CPU and peak memory."""

    code: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def run_measured(
    command: Sequence[str], *, env: dict[str, str], timeout_s: float, cwd: Path = REPO
) -> Measured:
    """Run `command` and reap it with `wait4`, whose rusage covers exactly that child.

    Output goes to temporary files (a pipe could fill up and stall the child). Past `timeout_s`
    the child is killed and the benchmark fails: every measurement is bounded.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(list(command), stdout=out, stderr=err, env=env, cwd=cwd)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout_s:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise SystemExit(f"timed out after {timeout_s:.0f} s: {' '.join(command[:6])}")
            time.sleep(0.02)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            code=proc.returncode,
            wall_s=wall,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def export_command(ids: str, out: Path, extra: Sequence[str] = ()) -> list[str]:
    """`deal-export run` over `ids` (a range like 1-5000 or an ID file) into `out`."""
    command = [sys.executable, "-m", "pipeline", "run", "--ids", ids, "--out", str(out)]
    if "-" in ids and not Path(ids).exists():
        command += ["--ids-format", "range"]
    return [*command, "--no-progress", *extra]


def exported_count(stdout: str) -> int:
    """The `exported N of M` figure of the run summary."""
    for line in stdout.splitlines():
        if line.startswith("exported "):
            return int(line.split()[1].replace(",", ""))
    raise SystemExit(f"no summary line in the run's output: {stdout[-500:]!r}")


def measure_export(
    sim: SimulatorProcess, ids: str, n_ids: int, extra: Sequence[str], *, timeout_s: float
) -> dict[str, Any]:
    """One `deal-export run` against `sim`: the exporter's and the simulator's figures."""
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        before = sim.stats()
        sim_cpu0 = sim.cpu_seconds()
        run = run_measured(
            export_command(ids, Path(tmp) / "out", extra),
            env=child_env(BITRIX24_WEBHOOK_URL=sim.webhook_url),
            timeout_s=timeout_s,
        )
        sim_cpu = sim.cpu_seconds() - sim_cpu0
        after = sim.stats()
    if run.code != 0:
        raise SystemExit(f"deal-export run exited {run.code}: {run.stderr[-2000:]}")
    deals = exported_count(run.stdout)
    requests = after["requests"] - before["requests"]
    return {
        "ids": n_ids,
        "exported": deals,
        "wall_s": round(run.wall_s, 2),
        "deals_per_s": round(deals / run.wall_s, 1),
        "ids_per_s": round(n_ids / run.wall_s, 1),
        "exporter_cpu_s": round(run.cpu_s, 2),
        "exporter_user_s": round(run.user_s, 2),
        "exporter_sys_s": round(run.sys_s, 2),
        "exporter_cpu_s_per_10k_deals": round(run.cpu_s / max(1, deals) * 10_000, 3),
        "exporter_cpu_util": round(run.cpu_s / run.wall_s, 2),
        "exporter_peak_rss_mb": round(run.peak_rss_mb, 1),
        "simulator_cpu_s": round(sim_cpu, 2),
        "simulator_cpu_s_per_10k_deals": round(sim_cpu / max(1, deals) * 10_000, 3),
        "requests": requests,
        "http_503": after["rate_limited"] - before["rate_limited"],
        "http_429": after["operating_limited"] - before["operating_limited"],
    }


def stage_figures() -> dict[str, Any]:
    """Per-stage figures from the stage benchmarks' latest results (if they have run)."""
    out: dict[str, Any] = {}
    fetch = _load("bench_fetch")
    if fetch:
        out["fetch_client_cpu_s_per_10k_ids"] = fetch.get("client_cpu_per_10k_ids_s")
        out["fetch_deals_per_s"] = fetch.get("deals_per_s")
    norm = _load("bench_normalise")
    if norm:
        us = norm.get("best_cpu_round_us_per_deal", {})
        for stage in ("parse", "normalise", "write_parquet_zstd"):
            if stage in us:
                out[f"{stage}_cpu_s_per_10k_deals"] = round(us[stage] / 100, 3)
        out["normalise_bench_deals_per_cpu_s"] = norm.get("deals_per_cpu_s")
    sim = _load("bench_simulator")
    if sim:
        out["simulator_bench_cpu_s_per_10k_deals"] = sim.get("server_cpu_s_per_10k_deals")
    return out


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ids", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on the run, seconds")
    args = parser.parse_args(argv)

    with SimulatorProcess(["--deals", str(args.ids)]) as sim:
        run = measure_export(sim, f"1-{args.ids}", args.ids, LIMITS_OFF, timeout_s=args.timeout)
    result = {
        "bench": "bench_e2e",
        "command": f"deal-export run --ids 1-{args.ids} --ids-format range --out DIR "
        "--no-progress --rate 0 --operating-budget off",
        "simulator": f"deal-export simulate --port 0 --deals {args.ids}",
        **run,
        "stages": stage_figures(),
    }
    write_result("bench_e2e", result)


if __name__ == "__main__":
    main()


__all__ = [
    "LIMITS_OFF",
    "Measured",
    "SimulatorProcess",
    "child_env",
    "cpu_seconds",
    "export_command",
    "measure_export",
    "run_measured",
    "write_result",
]
