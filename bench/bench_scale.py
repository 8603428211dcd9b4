"""Scale: the exporter's peak memory and time for 20,000, 100,000 and 1,000,000 IDs, limits off,
on both sinks (Parquet folder and Delta table).

One simulator process (`deal-export simulate`, no limits) holds a portal big enough for the
largest run; each size and sink is one `deal-export run --ids 1-N --rate 0 --operating-budget
off [--table-format delta]` in its own process, reaped with `wait4` for its peak RSS
(`ru_maxrss`) and CPU. Memory must not grow with N: on each sink the largest run's peak stays
within 20% of the smallest's, and every peak is at most PEAK_RSS_GOAL_MB at the default chunk
size. Time growth is reported as the exponent b of time ~ N^b between the smallest and largest
size (1.0 = linear).

Wide deals: the same runs to the folder sink for WIDE_SIZES, against simulators whose deals carry
long comments (`--comment-bytes`, default 4,000 and 20,000 bytes: about 6 and 16 kB a deal on
the wire, against about 2 kB), where memory is bounded by bytes rather than by deal count
(pieces of PIECE_BYTES, list answers of LIST_ANSWER_BYTES). Reported, not held to the goal.
Prints one JSON line and writes bench/results/bench_scale.json.

    .venv/bin/python -m bench.bench_scale [--sizes 20000,100000,1000000] [--sinks parquet,delta]
        [--wide 4000,20000]   (--wide '' for none)
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from bench.bench_e2e import LIMITS_OFF, SimulatorProcess, measure_export, write_result

FLAT_WITHIN = 0.20
#: The memory bound of issue 13, for any N from 20,000 to 1,000,000 IDs.
PEAK_RSS_GOAL_MB = 150.0
SINKS = ("parquet", "delta")
WIDE_SIZES = (20_000, 100_000)


def _sink_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Memory and time growth of one sink's runs, smallest to largest N."""
    small, large = runs[0], runs[-1]
    rss_ratio = large["exporter_peak_rss_mb"] / small["exporter_peak_rss_mb"]
    n_ratio = large["ids"] / small["ids"]
    time_ratio = large["wall_s"] / small["wall_s"]
    cpu_ratio = large["exporter_cpu_s"] / small["exporter_cpu_s"]
    return {
        "peak_rss_mb": {str(r["ids"]): r["exporter_peak_rss_mb"] for r in runs},
        "peak_rss_ratio": round(rss_ratio, 3),
        "memory_flat": rss_ratio <= 1 + FLAT_WITHIN,
        "within_goal": all(r["exporter_peak_rss_mb"] <= PEAK_RSS_GOAL_MB for r in runs),
        "wall_s": {str(r["ids"]): r["wall_s"] for r in runs},
        "time_ratio": round(time_ratio, 2),
        # One size alone has no growth to fit.
        "time_exponent": round(math.log(time_ratio) / math.log(n_ratio), 3)
        if n_ratio > 1
        else None,
        "cpu_exponent": round(math.log(cpu_ratio) / math.log(n_ratio), 3) if n_ratio > 1 else None,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="20000,100000,1000000")
    parser.add_argument("--sinks", default=",".join(SINKS), help="parquet, delta or both")
    parser.add_argument("--timeout", type=float, default=420.0, help="bound on each run, seconds")
    parser.add_argument("--wide", default="4000,20000", help="comment bytes of wide-deal runs")
    args = parser.parse_args(argv)
    wides = [int(w) for w in args.wide.split(",") if w]
    sizes = sorted(int(s) for s in args.sizes.split(","))
    sinks = [s for s in args.sinks.split(",") if s]
    if not sinks or set(sinks) - set(SINKS):
        raise SystemExit(f"--sinks takes {', '.join(SINKS)}; got {args.sinks!r}")

    by_sink: dict[str, list[dict[str, Any]]] = {s: [] for s in sinks}
    with SimulatorProcess(["--deals", str(max(sizes))]) as sim:
        for n in sizes:
            for sink in sinks:
                extra = [*LIMITS_OFF, "--table-format", sink]
                run = measure_export(sim, f"1-{n}", n, extra, timeout_s=args.timeout)
                by_sink[sink].append({"sink": sink, **run})
    figures = {sink: _sink_figures(runs) for sink, runs in by_sink.items()}
    wide: dict[str, Any] = {}
    for comment_bytes in wides:
        portal = ["--deals", str(max(WIDE_SIZES)), "--comment-bytes", str(comment_bytes)]
        with SimulatorProcess(portal) as sim:
            runs = []
            for n in WIDE_SIZES:
                extra = [*LIMITS_OFF, "--table-format", "parquet"]
                run = measure_export(sim, f"1-{n}", n, extra, timeout_s=args.timeout)
                runs.append({"sink": "parquet", "comment_bytes": comment_bytes, **run})
        wide[str(comment_bytes)] = _sink_figures(runs)
    every = [f for f in figures.values()]
    result = {
        "bench": "bench_scale",
        "simulator": f"deal-export simulate --port 0 --deals {max(sizes)}",
        "command": "deal-export run --ids 1-N --ids-format range --out DIR --no-progress "
        "--rate 0 --operating-budget off --table-format parquet|delta",
        "sizes": sizes,
        "sinks": sinks,
        "peak_rss_goal_mb": PEAK_RSS_GOAL_MB,
        "memory_flat": all(f["memory_flat"] for f in every),
        "within_goal": all(f["within_goal"] for f in every),
        "peak_rss_mb": {sink: f["peak_rss_mb"] for sink, f in figures.items()},
        "by_sink": figures,
        "wide_simulator": f"deal-export simulate --port 0 --deals {max(WIDE_SIZES)} "
        "--comment-bytes B",
        "wide_peak_rss_mb": {b: f["peak_rss_mb"] for b, f in wide.items()},
        "wide": wide,
    }
    write_result("bench_scale", result)


if __name__ == "__main__":
    main()
