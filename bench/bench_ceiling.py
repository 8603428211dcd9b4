"""Ceiling ratio: time at simulated standard-plan limits over the minimum those limits allow.

The simulator runs in its own process at the standard plan (2 req/s, burst 50) with an operating
budget of 480 s per 10 minutes and 20 ms charged per `crm.deal.get`, time-compressed K times;
`deal-export run` runs with the same limits and the same `--time-scale K`, once with
`--headroom 0` and once with the default headroom (10% of rate and burst left to other
integrations), then with the default headroom against a simulator that charges each `batch` to
the method `batch` (`--batch-billing batch`, see `SimulatorConfig`). A fresh simulator serves
each run, so each starts with an empty bucket and an unspent budget.

Time taken is measured on the portal's side, in simulated seconds: from the first `batch` the
simulator counted to the last (polling `/_simulator/stats`), the same span the minimum covers.
The minimum is computed two ways:

* `ideal_s`: the schedule of a perfect client that knows the portal's exact rules (leaky bucket;
  operating time in one-minute buckets that leave the window 10 minutes after their first call;
  a call refused only when the total is already over the budget) and sends every request the
  moment both limits allow. This is what the limits really allow, and the ratio's denominator.
* `fluid_s`: max(rate-bound (batches - burst) / rate, operating-bound
  (spend - budget) x 600 / budget). A lower bound that treats the budget as refilling smoothly;
  the real window frees time in one-minute steps 10 minutes after it was spent, so no client can
  reach it when the work spans only a few windows. Reported, not used as the goal.

Limit responses (503 QUERY_LIMIT_EXCEEDED, 429 OPERATION_TIME_LIMIT) come from the simulator's
counters. Prints one JSON line and writes bench/results/bench_ceiling.json.

    .venv/bin/python -m bench.bench_ceiling [--ids 40000] [--time-scale 20]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_e2e import (
    Measured,
    SimulatorProcess,
    child_env,
    export_command,
    exported_count,
    run_measured,
    write_result,
)

RATE = 2.0  # standard plan (Bitrix24 REST docs, `limits.md`)
BURST = 50
BUDGET_S = 480.0  # REST docs `limits.md` worked example; b24jssdk `params-factory.ts`
WINDOW_S = 600.0
MINUTE_S = 60.0
BATCH = 50
GOAL = 1.1


def ideal_schedule(
    commands: int, *, rate: float, burst: int, budget_s: float, cost_s: float, batch: int = BATCH
) -> float:
    """When the last request of the fastest client the portal's rules allow goes out (seconds).

    Each step sends one request as soon as the leaky bucket has room and the method's operating
    total (one-minute buckets, each expiring 10 minutes after its first call) is not over the
    budget; the request carries as many commands as run before the total crosses the budget
    (the crossing command still runs, the next is refused).
    """
    t = 0.0
    level = 0.0  # bucket level at time `t`
    spent: list[list[float]] = []  # [minute, first call, seconds]
    left = commands
    last = 0.0
    for _ in range(10 * commands + 10_000):
        if left <= 0:
            return last
        spent = [b for b in spent if b[1] + WINDOW_S > t]
        total = sum(b[2] for b in spent)
        if total > budget_s:
            later = min(b[1] for b in spent) + WINDOW_S
            level = max(0.0, level - (later - t) * rate)
            t = later
            continue
        if level + 1 > burst:
            wait = (level + 1 - burst) / rate
            level -= wait * rate
            t += wait
            continue
        minute = math.floor(t / MINUTE_S)
        sent = 0
        while sent < min(batch, left) and total <= budget_s:
            if not spent or spent[-1][0] != minute:
                spent.append([minute, t, 0.0])
            spent[-1][2] += cost_s
            total += cost_s
            sent += 1
        left -= sent
        level += 1
        last = t
    raise AssertionError("the ideal schedule did not finish")


def fluid_bound(
    commands: int, *, rate: float, burst: int, budget_s: float, cost_s: float
) -> dict[str, float]:
    """The brief's lower bound: the larger of the rate-bound and the operating-bound times."""
    batches = math.ceil(commands / BATCH)
    rate_s = max(0, batches - burst) / rate
    operating_s = max(0.0, commands * cost_s - budget_s) * WINDOW_S / budget_s
    return {"rate_bound_s": rate_s, "operating_bound_s": operating_s}


def _poll_batches(
    sim: SimulatorProcess, stop: threading.Event, seen: list[tuple[float, int]]
) -> None:
    """Record (monotonic, batch count) each time the simulator's count of batches rises. A
    stats call that fails while the simulator is busy is skipped: a dead poller would end the
    measured span early."""
    last = -1
    while not stop.is_set():
        try:
            count = sim.stats()["by_method"].get("batch", 0)
        except Exception:  # a busy simulator: the next poll will do
            time.sleep(0.05)
            continue
        now = time.monotonic()
        if count != last:
            seen.append((now, count))
            last = count
        time.sleep(0.01)


def measure_batch_span(
    sim: SimulatorProcess, command: list[str], *, timeout_s: float
) -> tuple[Measured, float]:
    """Run `command` against `sim`; its measured run and the wall seconds from the simulator's
    first batch to its last (to within one poll: the poll that first saw the final count)."""
    seen: list[tuple[float, int]] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll_batches, args=(sim, stop, seen), daemon=True)
    poller.start()
    try:
        run = run_measured(
            command,
            env=child_env(BITRIX24_WEBHOOK_URL=sim.webhook_url),
            timeout_s=timeout_s,
        )
    finally:
        stop.set()
        poller.join()
    batches = [(t, c) for t, c in seen if c > 0]
    if not batches:
        return run, 0.0
    last = next(t for t, c in batches if c == batches[-1][1])
    return run, last - batches[0][0]


def one_run(
    name: str,
    client_extra: list[str],
    *,
    ids: int,
    scale: float,
    processing_ms: float,
    timeout_s: float,
    sim_extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    sim_args = ["--deals", str(ids), "--plan", "standard", "--operating-budget", str(BUDGET_S)]
    sim_args += ["--processing-ms", str(processing_ms), "--time-scale", str(scale), *sim_extra]
    # The minimum below is get's (one operating charge per deal); the list strategy has its
    # own minimum and its own benchmark (bench_strategy), so the ceiling run pins get.
    client = ["--plan", "standard", "--operating-budget", str(BUDGET_S), "--strategy", "get"]
    client += ["--time-scale", str(scale), *client_extra]
    with SimulatorProcess(sim_args) as sim, tempfile.TemporaryDirectory() as tmp:
        command = export_command(f"1-{ids}", Path(tmp) / "out", client)
        run, span = measure_batch_span(sim, command, timeout_s=timeout_s)
        stats = sim.stats()
    if run.code not in (0, 3):
        raise SystemExit(f"deal-export run exited {run.code}: {run.stderr[-2000:]}")
    elapsed_sim = span * scale
    return {
        "name": name,
        "simulator_args": " ".join(sim_extra),
        "client_args": " ".join(client),
        "exit_code": run.code,
        "exported": exported_count(run.stdout),
        "elapsed_sim_s": round(elapsed_sim, 1),
        "wall_s": round(run.wall_s, 1),
        "process_wall_sim_s": round(run.wall_s * scale, 1),
        "exporter_cpu_s": round(run.cpu_s, 2),
        "requests": stats["requests"],
        "batches": stats["by_method"].get("batch", 0),
        "commands": stats["batch_commands"],
        "http_503": stats["rate_limited"],
        "http_429": stats["operating_limited"],
        "http_429_commands": stats["operating_limited_commands"],
        "operating_charged_s": stats["operating_seconds_charged"],
    }


#: (name, client arguments, simulator arguments) of each run. The third serves a portal that
#: charges a whole `batch` to the method `batch` (`simulate --batch-billing batch`), as the
#: official JS SDK's maintainers measured; a get-only run spends the same seconds either way,
#: so the minimum is the same.
RUNS: tuple[tuple[str, list[str], tuple[str, ...]], ...] = (
    ("headroom 0", ["--headroom", "0"], ()),
    ("default headroom", [], ()),
    ("default headroom, batch billed to batch", [], ("--batch-billing", "batch")),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ids", type=int, default=40_000)
    parser.add_argument("--time-scale", type=float, default=20.0)
    parser.add_argument("--processing-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=240.0, help="bound on each run, seconds")
    args = parser.parse_args(argv)

    cost = args.processing_ms / 1000
    ideal = ideal_schedule(args.ids, rate=RATE, burst=BURST, budget_s=BUDGET_S, cost_s=cost)
    fluid = fluid_bound(args.ids, rate=RATE, burst=BURST, budget_s=BUDGET_S, cost_s=cost)
    fluid_s = max(fluid.values())
    runs = []
    for name, extra, sim_extra in RUNS:
        run = one_run(
            name,
            extra,
            ids=args.ids,
            scale=args.time_scale,
            processing_ms=args.processing_ms,
            timeout_s=args.timeout,
            sim_extra=sim_extra,
        )
        run["ratio"] = round(run["elapsed_sim_s"] / ideal, 3)
        run["ratio_vs_fluid"] = round(run["elapsed_sim_s"] / fluid_s, 3) if fluid_s else None
        run["meets_goal"] = run["ratio"] <= GOAL
        runs.append(run)
    result = {
        "bench": "bench_ceiling",
        "ids": args.ids,
        "time_scale": args.time_scale,
        "simulator": f"deal-export simulate --port 0 --deals {args.ids} --plan standard "
        f"--operating-budget {BUDGET_S:g} --processing-ms {args.processing_ms:g} "
        f"--time-scale {args.time_scale:g}",
        "command": f"deal-export run --ids 1-{args.ids} --ids-format range --out DIR "
        f"--no-progress --plan standard --operating-budget {BUDGET_S:g} "
        f"--time-scale {args.time_scale:g} --strategy get [--headroom 0]",
        "limits": {"rate": RATE, "burst": BURST, "budget_s": BUDGET_S, "cost_s": cost},
        "operating_spend_s": round(args.ids * cost, 1),
        "ideal_s": round(ideal, 1),
        "fluid_s": round(fluid_s, 1),
        **{k: round(v, 1) for k, v in fluid.items()},
        "goal": GOAL,
        "ratio_headroom_0": runs[0]["ratio"],
        "ratio_default": runs[1]["ratio"],
        "ratio_billed_to_batch": runs[2]["ratio"],
        "runs": runs,
    }
    write_result("bench_ceiling", result)


if __name__ == "__main__":
    main()
