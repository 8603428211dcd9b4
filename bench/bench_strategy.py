"""Fetch strategies at standard-plan limits: simulated wall time of get, list and auto against
each strategy's exact minimum.

The simulator runs in its own process at the standard plan (2 req/s, burst 50) with an operating
budget of 480 s per 10 minutes per method, 20 ms charged per `crm.deal.get` and 20 ms + 2 ms
per row per `crm.deal.list` (issue 13's model; no public figure compares the two), its default
share of deleted (4 %) and hidden (2 %) deals and its unused IDs (about 16 % of a range 1..N is
absent; each run measures it), time-compressed K times. `deal-export run` runs
with the same limits, `--time-scale K` and `--strategy get|list|auto`; a fresh simulator serves
each run. Time is measured on the portal's side, in simulated seconds, from the first `batch` to
the last (see `bench_ceiling`).

Minimum per strategy (`bench_ceiling.ideal_schedule`, a perfect client of the portal's exact
rules): get: one command per ID at 20 ms. list: one command per 50 IDs at 20 + 50 x 2 ms, on
crm.deal.list's own budget, and in parallel the follow-up gets of the absent IDs on
crm.deal.get's budget, both sharing one leaky bucket; the minimum is the larger of the two
schedules and of the rate bound of all requests together. auto's minimum is list's (it cannot
beat the cheaper method) plus its probes, which are not counted.

When N is below the goal's 1,000,000, the 1M figure is extrapolated: each run's ratio to its
own minimum, times the exact minimum at 1M (computed, not simulated). Says so in the output.

    .venv/bin/python -m bench.bench_strategy [--ids 1000000] [--wall-target 240]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

from bench import write_result
from bench.bench_ceiling import BUDGET_S, BURST, RATE, ideal_schedule, measure_batch_span
from bench.bench_e2e import (
    SimulatorProcess,
    export_command,
    exported_count,
)

GET_MS = 20.0
LIST_MS = 20.0
LIST_ROW_MS = 2.0
PAGE = 50
#: The simulator's default shares of deleted and hidden deals (`SimulatorConfig`).
ABSENT_SHARE = 0.04 + 0.02
GOAL_S = 3600.0
TARGET_IDS = 1_000_000
#: The largest compression: beyond it the exporter's own CPU, not the portal, would bind.
MAX_SCALE = 200.0


def minimum_get(ids: int) -> float:
    return ideal_schedule(ids, rate=RATE, burst=BURST, budget_s=BUDGET_S, cost_s=GET_MS / 1000)


def minimum_list(ids: int, absent_share: float) -> float:
    calls = math.ceil(ids / PAGE)
    call_cost = (LIST_MS + PAGE * LIST_ROW_MS) / 1000
    by_list = ideal_schedule(calls, rate=RATE, burst=BURST, budget_s=BUDGET_S, cost_s=call_cost)
    absent = round(ids * absent_share)
    by_get = minimum_get(absent) if absent else 0.0
    requests = math.ceil(calls / PAGE) + math.ceil(absent / PAGE)
    rate_bound = max(0, requests - BURST) / RATE
    return max(by_list, by_get, rate_bound)


def one_run(strategy: str, *, ids: int, scale: float, timeout_s: float) -> dict[str, Any]:
    sim_args = ["--deals", str(ids), "--plan", "standard", "--operating-budget", str(BUDGET_S)]
    sim_args += ["--processing-ms", str(GET_MS), "--list-processing-ms", str(LIST_MS)]
    sim_args += ["--list-row-processing-ms", str(LIST_ROW_MS), "--time-scale", str(scale)]
    client = ["--plan", "standard", "--operating-budget", str(BUDGET_S)]
    client += ["--time-scale", str(scale), "--strategy", strategy]
    with SimulatorProcess(sim_args) as sim, tempfile.TemporaryDirectory() as tmp:
        command = export_command(f"1-{ids}", Path(tmp) / "out", client)
        run, span = measure_batch_span(sim, command, timeout_s=timeout_s)
        stats = sim.stats()
    if run.code not in (0, 3):
        raise SystemExit(f"deal-export run exited {run.code}: {run.stderr[-2000:]}")
    elapsed_sim = span * scale
    summary = [line for line in run.stdout.splitlines() if line.startswith("fetched with")]
    return {
        "strategy": strategy,
        "client_args": " ".join(client),
        "exit_code": run.code,
        "exported": exported_count(run.stdout),
        "elapsed_sim_s": round(elapsed_sim, 1),
        "wall_s": round(run.wall_s, 1),
        "exporter_cpu_s": round(run.cpu_s, 2),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "summary": summary[0] if summary else "",
        "requests": stats["requests"],
        "batches": stats["by_method"].get("batch", 0),
        "http_503": stats["rate_limited"],
        "http_429": stats["operating_limited"],
        "http_429_commands": stats["operating_limited_commands"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ids", type=int, default=TARGET_IDS)
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="compression K for every run (default: per strategy, its minimum / --wall-target)",
    )
    parser.add_argument(
        "--wall-target",
        type=float,
        default=240.0,
        help="real seconds a run should take at its minimum; a lower K keeps CPU from binding",
    )
    parser.add_argument("--strategies", default="get,list,auto")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on each run, s")
    args = parser.parse_args(argv)

    runs = []
    share = ABSENT_SHARE
    for strategy in args.strategies.split(","):
        guess = minimum_get(args.ids) if strategy == "get" else minimum_list(args.ids, share)
        scale = args.time_scale or min(MAX_SCALE, max(1.0, guess / args.wall_target))
        run = one_run(strategy, ids=args.ids, scale=round(scale, 1), timeout_s=args.timeout)
        run["time_scale"] = round(scale, 1)
        # Every ID the run did not export was absent: one follow-up get each under list.
        share = (args.ids - run["exported"]) / args.ids if args.ids else 0.0
        run["absent_share"] = round(share, 4)
        if strategy == "get":
            low, at_1m = minimum_get(args.ids), minimum_get(TARGET_IDS)
        else:
            low, at_1m = minimum_list(args.ids, share), minimum_list(TARGET_IDS, share)
        run["minimum_s"] = round(low, 1)
        # Below the limits (a small N fits the burst and one budget) the minimum is 0: no ratio,
        # and the 1M estimate falls back to the minimum plus the measured overshoot.
        run["ratio"] = round(run["elapsed_sim_s"] / low, 3) if low > 0 else None
        run["minimum_1m_s"] = round(at_1m, 1)
        run["estimate_1m_s"] = round(
            run["ratio"] * at_1m if run["ratio"] is not None else at_1m + run["elapsed_sim_s"], 1
        )
        run["blocked"] = run["http_503"] + run["http_429"] + run["http_429_commands"]
        runs.append(run)
    auto = next((r for r in runs if r["strategy"] == "auto"), None)
    result = {
        "bench": "bench_strategy",
        "ids": args.ids,
        "extrapolated_to_1m": args.ids != TARGET_IDS,
        "simulator": f"deal-export simulate --port 0 --deals {args.ids} --plan standard "
        f"--operating-budget {BUDGET_S:g} --processing-ms {GET_MS:g} --list-processing-ms "
        f"{LIST_MS:g} --list-row-processing-ms {LIST_ROW_MS:g} --time-scale K",
        "command": f"deal-export run --ids 1-{args.ids} --ids-format range --out DIR "
        f"--no-progress --plan standard --operating-budget {BUDGET_S:g} "
        "--time-scale K --strategy get|list|auto (K per run: runs[].time_scale)",
        "model": {
            "get_ms": GET_MS,
            "list_ms": LIST_MS,
            "list_row_ms": LIST_ROW_MS,
        },
        "goal": "auto < 3600 simulated s for 1,000,000 IDs, 0 blocked calls",
        "meets_goal": None
        if auto is None
        else auto["estimate_1m_s"] < GOAL_S and auto["blocked"] == 0,
        "runs": runs,
    }
    write_result("bench_strategy", result)


if __name__ == "__main__":
    main()
