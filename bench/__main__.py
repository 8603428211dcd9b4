"""`make bench`: run every benchmark, each in its own process, and write bench/README.md.

    .venv/bin/python -m bench                 # the full suite (~30 min, busy 2 cores); new README
    .venv/bin/python -m bench --quick         # small sizes (< 2 min); README and results untouched
    .venv/bin/python -m bench --only bench_ceiling [--quick]

Each benchmark is a module `bench.<name>` that prints one JSON line and writes
`bench/results/<name>.json`. The runner runs them in sequence (the machine has two cores; running
them side by side would measure the contention), each bounded by a timeout, collects the JSON
and renders the table of figures, the machine and the commands into bench/README.md. A failed
benchmark is reported and the rest still run; the exit code is 1 if any failed.

A `--quick` run writes its results to `--results DIR` (default <tmp>/deal-export-bench-quick/),
never to bench/results/, so a smoke run never touches the figures of a full run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import RESULTS_ENV

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
README = BENCH / "README.md"
#: Where a --quick run leaves its results by default (outside the work tree: they are not
#: figures to commit); `--results DIR` puts them elsewhere.
QUICK_RESULTS = Path(tempfile.gettempdir()) / "deal-export-bench-quick"
PEER_HINT = "fast-bitrix24 is not installed: run `.venv/bin/pip install -e '.[bench]'`"


@dataclass(frozen=True)
class Bench:
    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    timeout_s: float
    needs: str | None = None  # an optional module; skipped with a hint when missing


SUITE = (
    Bench("bench_simulator", (), ("--seconds", "1", "--deals", "100000"), 120),
    Bench("bench_normalise", (), ("--deals", "5000", "--rounds", "2"), 180),
    Bench("bench_fetch", (), ("--sizes", "5000,25000"), 420),
    Bench("bench_ids", (), ("--ids", "1000000"), 240),
    Bench("bench_e2e", (), ("--ids", "20000"), 240),
    Bench(
        "bench_ceiling",
        (),
        ("--ids", "4000", "--processing-ms", "200", "--time-scale", "100"),
        600,
    ),
    Bench(
        "bench_strategy",
        ("--ids", "300000", "--wall-target", "90"),
        ("--ids", "1500", "--time-scale", "100"),
        3600,
    ),
    Bench("bench_scale", (), ("--sizes", "20000,60000"), 900),
    Bench("bench_delta", (), ("--quick",), 900),
    Bench("bench_files", (), ("--ids", "5000", "--rounds", "1"), 300),
    Bench(
        "bench_peer",
        (),
        ("--ids", "3000", "--default-ids", "1000", "--rounds", "1"),
        420,
        needs="fast_bitrix24",
    ),
)


def run_one(bench: Bench, quick: bool, results: Path) -> dict[str, Any]:
    """Run `python -m bench.<name>` in its own process; its JSON result, or why there is none."""
    args = bench.quick if quick else bench.full
    command = [sys.executable, "-m", f"bench.{bench.name}", *args]
    shown = f"python -m bench.{bench.name} {' '.join(args)}".strip()
    if bench.needs and importlib.util.find_spec(bench.needs) is None:
        return {"status": "skipped", "why": PEER_HINT, "command": shown}
    print(f"[bench] {shown}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            command,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=bench.timeout_s,
            check=False,
            env={**os.environ, RESULTS_ENV: str(results)},
        )
    except subprocess.TimeoutExpired:
        return {
            "status": "failed",
            "why": f"timed out after {bench.timeout_s:.0f} s",
            "command": shown,
        }
    seconds = round(time.monotonic() - started, 1)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip() or proc.stdout.strip())[-800:]
        return {"status": "failed", "why": f"exit {proc.returncode}: {why}", "command": shown}
    result: dict[str, Any] = json.loads(lines[-1])
    print(f"[bench] {bench.name}: done in {seconds} s", file=sys.stderr, flush=True)
    return {"status": "ok", "seconds": seconds, "command": shown, "result": result}


def machine() -> dict[str, str]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import pyarrow

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "commit": commit or "unknown",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- the table -----------------------------------------------------------------------------------

Row = tuple[str, str, str, str]  # benchmark, figure, value, goal


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else (" ✅" if ok else " ❌")


def rows_simulator(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [
        (
            "simulator",
            "deals/s served via batch of 50 crm.deal.get (limits off)",
            _fmt(r["deals_per_s"]),
            "≥ 20,000" + _verdict(r["deals_per_s"] >= 20_000),
        ),
        (
            "simulator",
            "deals per server CPU-second (get batches)",
            _fmt(r["deals_per_server_cpu_s"]),
            "",
        ),
    ]
    if "list_server_cpu_s_per_10k_deals" not in r:
        rows.append(
            (
                "simulator",
                "server CPU s per 10k deals",
                _fmt(r["server_cpu_s_per_10k_deals"], 3),
                "",
            )
        )
        return rows
    get_cpu, list_cpu = r["server_cpu_s_per_10k_deals"], r["list_server_cpu_s_per_10k_deals"]
    rows += [
        (
            "simulator",
            "server CPU s per 10k deals: get batches / list batches",
            f"{_fmt(get_cpu, 3)} / {_fmt(list_cpu, 3)}",
            "list ≤ get" + _verdict(list_cpu <= get_cpu),
        ),
        (
            "simulator",
            "deals/s served via batch of 50 crm.deal.list × 50 IDs, every field",
            _fmt(r["list_deals_per_s"]),
            "",
        ),
    ]
    return rows


def rows_normalise(r: dict[str, Any]) -> list[Row]:
    us = r.get("best_cpu_round_us_per_deal", {})
    split = " / ".join(
        f"{us[k]:.1f}" for k in ("parse", "normalise", "write_parquet_zstd") if k in us
    )
    return [
        (
            "normalise",
            "JSON → Arrow → Parquet, deals/s on one core (best wall)",
            _fmt(r["deals_per_s"]),
            "≥ 30,000" + _verdict(r["deals_per_s"] >= 30_000),
        ),
        ("normalise", "same, deals per CPU-second (best)", _fmt(r["deals_per_cpu_s"]), ""),
        ("normalise", "CPU µs per deal: parse / normalise / write", split, ""),
    ]


def rows_fetch(r: dict[str, Any]) -> list[Row]:
    rss = r["peak_rss_mb"]
    return [
        ("fetch", "deals/s vs unlimited simulator", _fmt(r["deals_per_s"]), ""),
        ("fetch", "client CPU s per 10k IDs", _fmt(r["client_cpu_per_10k_ids_s"], 3), ""),
        (
            "fetch",
            "peak RSS MB " + " vs ".join(rss),
            " vs ".join(_fmt(v, 1) for v in rss.values()),
            "within 20%" + _verdict(r["peak_rss_ratio"] <= 1.2),
        ),
    ]


def rows_ids(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "ids",
            f"read + validate {r['ids']:,} IDs ({r['format']}): peak RSS MB",
            _fmt(r["peak_rss_mb"], 1),
            f"< {r['limit_mb']}" + _verdict(r["within_limit"]),
        ),
        ("ids", "same, seconds", _fmt(r["elapsed_s"], 1), ""),
    ]


STAGE_KEYS = (
    "fetch_client_cpu_s_per_10k_ids",
    "parse_cpu_s_per_10k_deals",
    "normalise_cpu_s_per_10k_deals",
    "write_parquet_zstd_cpu_s_per_10k_deals",
)


def rows_e2e(r: dict[str, Any]) -> list[Row]:
    n = f"{r['ids']:,} IDs"
    st = r.get("stages", {})
    return [
        ("e2e", f"deal-export run, {n}, limits off: deals/s", _fmt(r["deals_per_s"]), ""),
        ("e2e", "exporter CPU s per 10k deals", _fmt(r["exporter_cpu_s_per_10k_deals"], 3), ""),
        ("e2e", "simulator CPU s per 10k deals", _fmt(r["simulator_cpu_s_per_10k_deals"], 3), ""),
        ("e2e", "exporter CPU use (CPU s / wall s)", _fmt(r["exporter_cpu_util"], 2), ""),
        ("e2e", "exporter peak RSS MB", _fmt(r["exporter_peak_rss_mb"], 1), ""),
        (
            "e2e",
            "stages alone, CPU s per 10k: fetch (IDs) / parse / normalise / write",
            " / ".join(_fmt(st.get(k), 3) for k in STAGE_KEYS),
            "",
        ),
    ]


def rows_ceiling(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for run in r["runs"]:
        rows.append(
            (
                "ceiling",
                f"{r['ids']:,} IDs at standard limits, {run['name']}: time / minimum",
                f"{run['ratio']:.3f} ({run['elapsed_sim_s']:,.0f} s / {r['ideal_s']:,.0f} s)",
                "≤ 1.1" + _verdict(run["ratio"] <= 1.1),
            )
        )
        rows.append(
            (
                "ceiling",
                f"{run['name']}: 503 / 429 responses (of {run['requests']} requests)",
                f"{run['http_503']} / {run['http_429']}",
                "",
            )
        )
    rows.append(
        (
            "ceiling",
            "fluid lower bound (see notes); ratio to it, headroom 0",
            f"{r['fluid_s']:,.0f} s; {r['runs'][0]['ratio_vs_fluid']:.2f}",
            "",
        )
    )
    return rows


_INPUTS = {"range": "range 1..N", "existing": "existing deals' IDs"}


def _strategy_rows(r: dict[str, Any], measured_1m: bool) -> list[Row]:
    rows: list[Row] = []
    scaled = "" if measured_1m else " (extrapolated from the measured ratio)"
    for run in r["runs"]:
        what = f"--strategy {run['strategy']}, {_INPUTS[run.get('input', 'range')]}"
        ratio = "n/a" if run["ratio"] is None else f"{run['ratio']:.3f}"
        if not measured_1m:
            rows.append(
                (
                    "strategy",
                    f"{r['ids']:,} IDs, {what}: time / its minimum",
                    f"{ratio} ({run['elapsed_sim_s']:,.0f} s / {run['minimum_s']:,.0f} s), "
                    f"{run['blocked']} blocked",
                    "",
                )
            )
        value = f"{run['estimate_1m_s'] / 3600:.2f} h (minimum {run['minimum_1m_s'] / 3600:.2f} h)"
        if measured_1m:
            value += f", ratio {ratio}, {run['blocked']} blocked, K = {run['time_scale']:g}"
        rows.append(
            (
                "strategy",
                f"1,000,000 IDs, {what}{scaled}",
                value,
                "auto < 1 h" + _verdict(run["estimate_1m_s"] < 3600 and run["blocked"] == 0)
                if run["strategy"] == "auto"
                else "",
            )
        )
    return rows


def rows_strategy(r: dict[str, Any]) -> list[Row]:
    rows = _strategy_rows(r, measured_1m=not r.get("extrapolated_to_1m"))
    # The measured 1M run (`python -m bench.bench_strategy --full`, ~5 min) is not part of the
    # suite; its latest result is shown when there is one.
    full = RESULTS / "bench_strategy_full.json"
    if r.get("extrapolated_to_1m") and full.exists():
        rows += [
            (b, f"{f} — measured (bench_strategy --full)", v, g)
            for b, f, v, g in _strategy_rows(json.loads(full.read_text()), measured_1m=True)
        ]
    return rows


def rows_scale(r: dict[str, Any]) -> list[Row]:
    # Results before both sinks were measured hold one sink's figures at the top level.
    by_sink = r.get("by_sink") or {"parquet": r}
    rows: list[Row] = []
    for sink, f in by_sink.items():
        rss, wall = f["peak_rss_mb"], f["wall_s"]
        sizes = " vs ".join(f"{int(k):,}" for k in rss)
        goal = r.get("peak_rss_goal_mb")
        rows += [
            (
                "scale",
                f"{sink} sink: exporter peak RSS MB, {sizes} IDs",
                " vs ".join(_fmt(v, 1) for v in rss.values()),
                "within 20%"
                + _verdict(f["memory_flat"])
                + (f"; ≤ {goal:.0f}" + _verdict(f["within_goal"]) if goal else ""),
            ),
            (
                "scale",
                f"{sink} sink: wall s, {sizes} IDs",
                " vs ".join(_fmt(v, 1) for v in wall.values()),
                "",
            ),
            (
                "scale",
                f"{sink} sink: time ~ N^b: b (1 = linear); CPU exponent",
                "one size, no fit"
                if f["time_exponent"] is None
                else f"{f['time_exponent']:.2f}; {f['cpu_exponent']:.2f}",
                "",
            ),
        ]
    for comment_bytes, f in (r.get("wide") or {}).items():
        rss = f["peak_rss_mb"]
        sizes = " vs ".join(f"{int(k):,}" for k in rss)
        rows.append(
            (
                "scale",
                f"wide deals ({int(comment_bytes):,}-byte comments), parquet sink: peak RSS MB, "
                f"{sizes} IDs",
                " vs ".join(_fmt(v, 1) for v in rss.values()),
                "within 20%" + _verdict(f["memory_flat"]),
            )
        )
    return rows


def _per_deal_rows(per: dict[str, Any] | None) -> list[Row]:
    """CPU and wall per deal beyond each tool's fixed cost (its run on one ID)."""
    if not per:
        return []
    ours, peer = per["ours"], per["peer"]
    cpu = per["cpu_per_deal_ratio_peer_over_ours"]
    return [
        (
            "peer",
            "same: CPU ms per deal beyond the fixed cost, peer / ours (ratio)",
            f"{peer['cpu_ms_per_deal']:.3f} / {ours['cpu_ms_per_deal']:.3f} ({_fmt(cpu, 2)})",
            "ours ≤ half the peer's" + _verdict(None if cpu is None else cpu >= 2.0),
        ),
        (
            "peer",
            "same: wall ms per deal beyond the fixed cost, peer / ours (ratio)",
            f"{peer['wall_ms_per_deal']:.3f} / {ours['wall_ms_per_deal']:.3f} "
            f"({_fmt(per['wall_per_deal_ratio_peer_over_ours'], 2)})",
            "",
        ),
        (
            "peer",
            "fixed cost (one ID): CPU s, wall s, peer / ours",
            f"{peer['fixed_cpu_s']:.2f}, {peer['fixed_wall_s']:.2f} / "
            f"{ours['fixed_cpu_s']:.2f}, {ours['fixed_wall_s']:.2f}",
            "",
        ),
    ]


def rows_peer(r: dict[str, Any]) -> list[Row]:
    fast, slow = r["raised"], r["defaults"]
    peer_slow = slow["peer"]
    outcome = (
        f"{peer_slow['wall_s']:.1f} s, {peer_slow['deals']:,} deals"
        if peer_slow.get("ok")
        else f"failed: {peer_slow['error'][:60]}"
    )
    return [
        (
            "peer",
            f"{r['peer']}, throttles raised, {fast['ids']:,} IDs: time peer/ours",
            f"{fast['time_ratio_peer_over_ours']:.2f}",
            ">1 = we are faster; goal ≥ 1.5" + _verdict(fast["time_ratio_peer_over_ours"] >= 1.5),
        ),
        *_per_deal_rows(fast.get("per_deal")),
        (
            "peer",
            "same, medians of the rounds: time; CPU peer/ours",
            f"{fast.get('median_time_ratio_peer_over_ours', 'n/a')}; "
            f"{fast.get('median_cpu_ratio_peer_over_ours', 'n/a')}",
            "",
        ),
        (
            "peer",
            "same: CPU peer/ours (CPU s per 10k deals: peer; ours)",
            f"{fast['cpu_ratio_peer_over_ours']:.2f} ({fast['peer_cpu_s_per_10k_deals']:.3f}; "
            f"{fast['ours_cpu_s_per_10k_deals']:.3f})",
            "",
        ),
        ("peer", "same: peak RSS peer/ours", f"{fast['rss_ratio_peer_over_ours']:.2f}", ""),
        (
            "peer",
            f"defaults vs standard-plan portal, {slow['ids']:,} IDs: ours",
            f"{slow['ours']['wall_s']:.1f} s, {slow['ours']['deals']:,} deals, "
            f"503/429: {slow['ours']['http_503']}/{slow['ours']['http_429']}",
            "",
        ),
        (
            "peer",
            "same: peer",
            f"{outcome}, 503/429: {peer_slow['http_503']}/{peer_slow['http_429']}",
            "",
        ),
        (
            "peer",
            "peer on 3 IDs with one deleted",
            "ok"
            if r["missing_id_probe"].get("ok")
            else "raises: " + r["missing_id_probe"]["error"][:70],
            "",
        ),
    ]


def rows_delta(r: dict[str, Any]) -> list[Row]:
    m, f = r["merge"], r["files"]
    merge = f"merge {m['delta']:,} deals into a {m['rows']:,}-row Delta table"
    sinks = " / ".join(
        f"{f[k]['files']:,} × {f[k]['median_file_kb']:,.0f} KB"
        for k in ("parquet", "delta", "delta_compacted")
    )
    return [
        ("delta", f"{merge}: seconds", _fmt(m["merge_s"], 1), ""),
        (
            "delta",
            "same: peak RSS MB (before the merge; whole process)",
            f"{_fmt(m['rss_before_merge_mb'], 1)}; {_fmt(m['peak_rss_mb'], 1)}",
            "",
        ),
        (
            "delta",
            f"{f['ids']:,} IDs exported: files × median size, folder / Delta / Delta compacted",
            sinks,
            "",
        ),
    ]


def rows_files(r: dict[str, Any]) -> list[Row]:
    default_codec = r["default_codec"]
    main = r["codecs"][default_codec]
    others = " / ".join(
        f"{codec} {c['us_per_deal_as_laid_out']:.1f} µs, {c['mb_as_laid_out']:.1f} MB"
        for codec, c in r["codecs"].items()
        if codec != default_codec
    )
    return [
        (
            "files",
            f"{r['deals']:,} deals as the run lays them out: files × median rows; columns",
            f"{r['files']:,} × {r['median_rows_per_file']:,.0f}; {r['columns']}",
            "",
        ),
        (
            "files",
            f"{default_codec}: write CPU µs per deal, as laid out / as one file; fixed ms a file",
            f"{main['us_per_deal_as_laid_out']:.1f} / {main['us_per_deal_one_file']:.1f}; "
            f"{main['fixed_ms_per_file']:.2f}",
            "",
        ),
        (
            "files",
            "same: MB as laid out / as one file; whole run's CPU µs per deal (startup included)",
            f"{main['mb_as_laid_out']:.2f} / {main['mb_one_file']:.2f}; "
            f"{r['run_cpu_us_per_deal']:.1f}",
            "",
        ),
        ("files", "other codecs, as laid out: write CPU µs per deal, MB", others, ""),
    ]


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "bench_simulator": rows_simulator,
    "bench_normalise": rows_normalise,
    "bench_fetch": rows_fetch,
    "bench_ids": rows_ids,
    "bench_e2e": rows_e2e,
    "bench_ceiling": rows_ceiling,
    "bench_strategy": rows_strategy,
    "bench_scale": rows_scale,
    "bench_peer": rows_peer,
    "bench_delta": rows_delta,
    "bench_files": rows_files,
}


def table(outcomes: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| benchmark | figure | value | goal |", "|---|---|---|---|"]
    for bench in SUITE:
        outcome = outcomes.get(bench.name)
        if outcome is None:
            continue
        if outcome["status"] != "ok":
            why = outcome["why"].replace("|", "\\|").replace("\n", " ")[:200]
            lines.append(f"| {bench.name} | **{outcome['status']}** | {why} | |")
            continue
        try:
            rows = ROWS[bench.name](outcome["result"])
        except (KeyError, TypeError, ValueError) as exc:
            rows = [(bench.name, "result not understood", repr(exc)[:120], "")]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return lines


NOTES = """\
## What each benchmark does

Every benchmark runs the simulator (`deal-export simulate --port 0 ...`) in its own process on
127.0.0.1, so the exporter's CPU and the portal's CPU are measured apart. The exporter is the real
`deal-export run` process; its CPU and peak RSS come from `wait4()` on that child. The machine is
shared and noisy: compare ratios taken within one run rather than absolute figures across runs.

* **bench_simulator** (`bench/bench_simulator.py`): the simulator's own throughput, so it is never
  the bottleneck of the others: `batch` of 50 `crm.deal.get`, then `batch` of 50 `crm.deal.list`
  calls exactly as `--strategy list` sends them, on IDs the get phase did not touch. Server CPU
  per 10k deals is the robust figure; deals/s also depends on how much of a core the simulator
  gets on a shared machine.
* **bench_normalise**: JSON `batch` bodies → typed Arrow → zstd Parquet on one pinned core.
* **bench_fetch**: the fetch stage alone (no normalise, no write) against the unlimited
  simulator; peak memory of the fetch process for 100k and 1M IDs.
* **bench_ids**: reading and validating 10M IDs from a text file (memory bound < 500 MB).
* **bench_e2e**: `deal-export run --ids 1-200000 --ids-format range --rate 0
  --operating-budget off` against an unlimited simulator. About 12% of the range are gaps,
  deleted or hidden deals, which end in the sidecar; deals/s counts exported deals. The
  "stages alone" row takes each stage's CPU from its own benchmark (fetch per 10k IDs, the
  others per 10k deals); the gap to the end-to-end figure is work only the whole run does
  (process start, outcome bookkeeping, the sidecar, partitioned files, the manifest).
* **bench_ceiling**: 40,000 IDs against `--plan standard --operating-budget 480 --processing-ms 20
  --time-scale 20`, client with the same limits and `--time-scale 20`, once with `--headroom 0`
  and once with the default headroom (10% of rate and burst, 5% of the budget), then with the
  default headroom against a simulator that charges each `batch` to the method `batch`
  (`--batch-billing batch`: what the official JS SDK's maintainers measured, where the REST docs
  say a batch is not counted; a get-only run spends the same seconds either way, so the minimum is
  the same). Time is the span from the first to the last `batch` the simulator saw, in simulated
  seconds. The minimum is the schedule of a perfect client that knows the portal's exact rules
  (leaky bucket 2/s burst 50; operating time in one-minute buckets that leave the window ten
  minutes after their first call; a call refused only once the total is already over 480 s). The
  fluid bound max((batches − burst)/rate, (spend − budget) × 600 / budget) is lower than anything
  a client can reach when the work spans a few windows (the budget comes back in one-minute steps
  ten minutes after it was spent), so it is shown but not used as the goal.
* **bench_strategy**: `--strategy get`, `list` and `auto` against a standard-plan simulator
  (2 req/s, burst 50, 480 s budget per method) charging 20 ms per `crm.deal.get` and 20 ms + 2
  ms per row per `crm.deal.list`, on two inputs: the range 1..N (about 16 % absent: unused IDs
  and the simulator's default 4 % deleted and 2 % hidden deals, each a follow-up get under
  list) and N IDs of deals that exist and are readable (what `deal-export ids` lists). Each
  run's time compression is its minimum / 90 s, so that the exporter's and the simulator's CPU
  on this shared 2-core machine do not bind; the suite runs 300,000 IDs. Minimum: the perfect
  client of `bench_ceiling` per method; list's adds the follow-up gets on get's own budget and
  the rate bound of all requests. The 1M row is each run's ratio to its minimum times the exact
  minimum at 1M: an extrapolation, labelled so. `python -m bench.bench_strategy --full`
  measures auto on 1,000,000 existing IDs instead (not in the suite; its latest result is
  shown, marked "measured").
* **bench_scale**: the exporter's peak RSS and wall time for 20,000, 100,000 and 1,000,000 IDs,
  limits off, on each sink (Parquet folder, `--table-format delta`); b is the exponent in
  time ~ N^b between the smallest and largest size. A Delta run also maps deltalake's library
  (some 60 MB of its code resident once a table is opened), which the folder sink never loads.
  The wide rows are the folder sink against portals whose deals carry long comments
  (`simulate --comment-bytes B`: about 6 and 16 kB a deal on the wire against about 2 kB), where
  a run bounds memory by bytes (pieces of 16 MiB, list answers of 4 MiB) rather than by deals.
* **bench_delta**: the Delta sink. A sample of real normalised deals is tiled into a
  1,000,000-row Delta table (not timed); a child process then commits one 10,000-deal chunk
  through `DeltaSink` (80% IDs the table holds, 20% new), one MERGE on `ID`: its seconds and peak
  RSS. Then a 100,000-ID `deal-export run` per sink (default settings) and `deal-export compact`
  of the Delta output: how many data files a reader meets, and their median size.
* **bench_files**: what a data file costs to write. The peer comparison's portal (36,100 deals
  over 68 months) is exported by `deal-export run` (30,000 readable IDs, limits off) to a folder,
  one file per chunk and `DATE_CREATE` month; each file is read back and encoded again by the
  run's own encoder on this thread's CPU clock (best of 5), then the same rows as one file. The
  difference over the number of files is a file's fixed cost (Arrow's Parquet writer sets up,
  writes and closes every column of every file); per deal it is what the partitioned layout
  costs beyond the bytes. lz4 and no codec are shown for bytes against CPU.
* **bench_peer**: fast-bitrix24's `BitrixAsync.get_by_ID("crm.deal.get", ids)` then
  `pa.Table.from_pylist(...)` and `pq.write_table`, on the same simulator, same IDs, same run, each
  tool in its own process. The peer takes the simulator's http webhook URL as is (it only checks
  scheme, host and path). Throttles raised = `requests_per_second=1e9,
  request_pool_size=1e9, respect_velocity_policy=False` against ours at `--rate 0
  --operating-budget off` (three rounds in alternating order; ratios of the best runs and of
  the medians). Each round also runs both on one ID: that run is the tool's fixed cost, and the
  per-deal figures are the slope (median at N − median at 1) / (N − 1), so startup (for us
  ~0.4 CPU-s: Python, pyarrow, aiohttp, the portal's schema) does not count as work per deal.
  The peer raises on the first
  `result_error` in a batch (one deleted or hidden deal aborts the whole call), so both tools get
  only readable IDs. Our side does more per deal (schema from `crm.deal.fields`, typed columns,
  partitioned zstd Parquet, sidecar, manifest); the peer's table is what `from_pylist` infers
  (mostly strings). At the defaults each tool meets a fresh standard-plan simulator (2 req/s,
  burst 50, 480 s budget) in real time and the simulator counts the 503/429 it had to send.

## The reliability suite (`python -m bench.chaos`, `make chaos`)

Not a speed benchmark: scenarios that end in an exactly-once audit against the portal's own data
and a credential scan (the webhook secret, every OAuth access and refresh token issued, rotated
ones included, and the client secret, in every output file with Parquet values decoded, every log
line and message). Besides the fault mix, rate and operating storms, `kill -9` and resume, a
revoked webhook, a full disk and the bad-input table: `real-empties` (every multiple user-field
type, empties in each form a real portal sends, all exported as `[]` with no sidecar row),
`poison` (`WRONG_ENCODING` and repeating-500 deals among thousands, isolated by splitting) and
`oauth-two-nights` (a token expiry and a refresh-token rotation per night, both nights exit 0).
Results in `bench/results/chaos.json`; `--quick` is what `tests/chaos` runs in CI.
"""


def render(outcomes: dict[str, dict[str, Any]], info: dict[str, str], command: str) -> str:
    head = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`.venv/bin/python -m bench`); do not edit by hand. Results "
        "of each benchmark are in `bench/results/<name>.json`.",
        "",
        "```",
        "make bench                                   # everything, ~30 min on 2 busy cores",
        ".venv/bin/python -m bench --quick            # small sizes, < 2 min, README untouched",
        ".venv/bin/python -m bench --only bench_ceiling",
        ".venv/bin/pip install -e '.[bench]'          # the peer library for bench_peer",
        "```",
        "",
        f"Run: `{command}` on {info['date']} at commit `{info['commit']}`.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {info['cpu']} |",
        f"| cores | {info['cores']} |",
        f"| OS | {info['os']} |",
        f"| Python | {info['python']} |",
        f"| pyarrow | {info['pyarrow']} |",
        "",
        "## Figures",
        "",
    ]
    commands = ["", "## Commands", ""]
    for bench in SUITE:
        outcome = outcomes.get(bench.name)
        if outcome is None:
            continue
        took = f" ({outcome['seconds']} s)" if "seconds" in outcome else ""
        commands.append(f"* `.venv/bin/{outcome['command']}`{took}")
        result = outcome.get("result", {})
        for key in ("simulator", "command"):
            if isinstance(result.get(key), str):
                commands.append(f"  * {key}: `{result[key]}`")
    return "\n".join([*head, *table(outcomes), *commands, "", NOTES])


def _previous(name: str) -> dict[str, Any] | None:
    """A benchmark's committed result, for a README regenerated after `--only`."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    return {
        "status": "ok",
        "command": f"python -m bench.{name}",
        "result": json.loads(path.read_text()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, results kept apart")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark")
    parser.add_argument(
        "--results",
        type=Path,
        metavar="DIR",
        help=f"where a --quick run writes its results (default: {QUICK_RESULTS})",
    )
    args = parser.parse_args(argv)
    if args.results is not None and not args.quick:
        parser.error("--results goes with --quick (a full run records bench/results/)")
    names = [b.name for b in SUITE]
    only = [n if n.startswith("bench_") else f"bench_{n}" for n in args.only or []]
    unknown = [n for n in only if n not in names]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: expected one of {', '.join(names)}")
    chosen = [b for b in SUITE if not only or b.name in only]

    # A quick run's figures go to their own directory (the benchmarks are told through the
    # environment), so the committed results are never touched, not even for a moment.
    results = (args.results or QUICK_RESULTS) if args.quick else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, dict[str, Any]] = {}
    for bench in chosen:
        outcomes[bench.name] = run_one(bench, args.quick, results)
    info = machine()
    print("\n".join(table(outcomes)))
    failed = [n for n, o in outcomes.items() if o["status"] == "failed"]
    if args.quick:
        print(f"[bench] quick results in {results}", file=sys.stderr)
    else:
        command = "python -m bench" + "".join(f" --only {n}" for n in only)
        everything = {**{n: o for n in names if (o := _previous(n))}, **outcomes}
        README.write_text(render(everything, info, command) + "\n", encoding="utf-8")
        print(f"[bench] wrote {README.relative_to(REPO)}", file=sys.stderr)
    for name in failed:
        print(f"[bench] {name} FAILED: {outcomes[name]['why']}", file=sys.stderr)
    skipped = [n for n, o in outcomes.items() if o["status"] == "skipped"]
    for name in skipped:
        print(f"[bench] {name} skipped: {outcomes[name]['why']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
