"""Peer comparison: `deal-export run` vs fast-bitrix24's `get_by_ID` + `pyarrow.Table.from_pylist`.

The peer a user would otherwise pick is the `fast-bitrix24` library: `BitrixAsync.get_by_ID(
"crm.deal.get", ids)` fetches deals in batches of 50 and returns them all in one dict; the user
then writes them with `pa.Table.from_pylist(...)` and `pq.write_table`. Both tools fetch the same
IDs from the same simulator process (limits off), each in its own process, in the same run; wall
time and the process's own CPU (`wait4`) are compared as peer / ours (above 1 = we are faster).

Two settings:

* `raised`: the peer's client-side throttling lifted as far as its public options go
  (`requests_per_second` and `request_pool_size` huge, `respect_velocity_policy=False`), against
  ours with `--rate 0 --operating-budget off`. Three rounds in alternating order;
  ratios of the best run of each and of the medians. Each round also runs both tools on one ID:
  that run is the tool's fixed cost (interpreter, imports, the portal's schema, opening and
  finalising the output), and the per-deal figures are the slope between the two sizes,
  (median at N - median at 1) / (N - 1), so a tool's startup does not count as work per deal.
* `defaults`: the peer as shipped (2 req/s after a pool of 50 requests, its operating-time
  throttle on) against ours as shipped (`--plan standard`: 1.8 req/s after 45 requests, 10%
  headroom, operating-time pacing on), in real time on fewer IDs, each against a fresh
  standard-plan simulator (2 req/s, burst 50, 480 s budget) whose 503/429 answers are counted.

Notes. The peer takes the simulator's webhook URL as is: it only checks that the URL has a
scheme, host and path, so plain http to 127.0.0.1 works. `get_by_ID` raises on the first
`result_error` of any batch (a deleted or hidden deal aborts the whole call, results included),
so both tools get only IDs the webhook user can read; the `missing_id_probe` records what the
peer does with one deleted ID. Our side does more work per deal (typed schema from
`crm.deal.fields`, partitioned zstd Parquet, sidecar, manifest); the peer writes what
`from_pylist` infers (mostly strings) into one snappy file.

    .venv/bin/python -m bench.bench_peer [--ids 30000] [--default-ids 5000]

Needs the optional extra: `pip install -e '.[bench]'`. Without it the benchmark says so and
exits 2. Prints one JSON line and writes bench/results/bench_peer.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bench_e2e import (
    LIMITS_OFF,
    SimulatorProcess,
    child_env,
    export_command,
    exported_count,
    run_measured,
    write_result,
)

SEED = 1
MISSING_PEER = "fast-bitrix24 is not installed: run `pip install -e '.[bench]'` (or `make bench`)"
#: The peer's throttles, lifted: its leaky bucket still runs but never waits.
RAISED = {
    "requests_per_second": 1e9,
    "request_pool_size": 10**9,
    "respect_velocity_policy": False,
}


#: The portal's empty multiple fields as `[]` only (see `main`).
EMPTIES = ("--empty-multiple", "empty_list")


def peer_available() -> bool:
    return importlib.util.find_spec("fast_bitrix24") is not None


def visible_ids(portal_deals: int, n: int, seed: int = SEED) -> tuple[list[int], int]:
    """The first `n` IDs the webhook user can read, and one deleted ID, of the same portal the
    simulator process lays out from (`--deals`, `--seed`): the layout is deterministic."""
    from pipeline.simulator import Simulator, SimulatorConfig

    portal = Simulator(SimulatorConfig(deals=portal_deals, seed=seed)).portal
    ids = portal.visible_ids[:n]
    if len(ids) < n:
        raise SystemExit(f"the portal has only {len(ids)} visible deals, {n} asked")
    return ids, portal.deleted_ids[0]


# -- the peer, in its own process -----------------------------------------------------------------


async def _peer_fetch(webhook: str, ids: list[int], options: dict[str, Any]) -> dict[Any, Any]:
    from fast_bitrix24 import BitrixAsync  # type: ignore[import-untyped]

    bitrix = BitrixAsync(webhook, verbose=False, **options)  # untyped library
    result: dict[Any, Any] = await bitrix.get_by_ID("crm.deal.get", ids)
    return result


def peer_child(webhook: str, ids_file: Path, out: Path, mode: str) -> dict[str, Any]:
    """What a user of the peer writes: get_by_ID, then from_pylist, then write_table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [int(line) for line in ids_file.read_text().split()]
    options = RAISED if mode == "raised" else {}
    t0 = time.perf_counter()
    try:
        deals = asyncio.run(_peer_fetch(webhook, ids, options))
    except Exception as exc:  # the probe wants to see exactly what the peer raises
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    t1 = time.perf_counter()
    # For one ID the peer returns that deal itself, not {ID: deal} (fast_bitrix24
    # server_response.py: a one-element result is unwrapped), so its user wraps it.
    rows = [deals] if len(ids) == 1 else list(deals.values())
    table = pa.Table.from_pylist(rows)
    t2 = time.perf_counter()
    pq.write_table(table, out)
    t3 = time.perf_counter()
    return {
        "ok": True,
        "deals": len(rows),
        "rows": table.num_rows,
        "columns": table.num_columns,
        "string_columns": sum(1 for f in table.schema if pa.types.is_string(f.type)),
        "fetch_s": round(t1 - t0, 3),
        "from_pylist_s": round(t2 - t1, 3),
        "write_s": round(t3 - t2, 3),
    }


# -- the comparison --------------------------------------------------------------------------------


def run_peer(sim: SimulatorProcess, ids_file: Path, mode: str, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_peer_") as tmp:
        command = [sys.executable, "-m", "bench.bench_peer", "--peer-child", sim.webhook_url]
        command += ["--ids-file", str(ids_file), "--out", str(Path(tmp) / "deals.parquet")]
        command += ["--mode", mode]
        sim_cpu0 = sim.cpu_seconds()
        run = run_measured(command, env=child_env(), timeout_s=timeout_s)
        sim_cpu = sim.cpu_seconds() - sim_cpu0
    if run.code != 0:
        raise SystemExit(f"the peer's process exited {run.code}: {run.stderr[-2000:]}")
    inner: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return {
        "wall_s": round(run.wall_s, 2),
        "cpu_s": round(run.cpu_s, 2),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "simulator_cpu_s": round(sim_cpu, 2),
        **inner,
    }


def run_ours(
    sim: SimulatorProcess, ids_file: Path, extra: list[str], timeout_s: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_ours_") as tmp:
        sim_cpu0 = sim.cpu_seconds()
        run = run_measured(
            export_command(str(ids_file), Path(tmp) / "out", extra),
            env=child_env(BITRIX24_WEBHOOK_URL=sim.webhook_url),
            timeout_s=timeout_s,
        )
        sim_cpu = sim.cpu_seconds() - sim_cpu0
    if run.code != 0:
        raise SystemExit(f"deal-export run exited {run.code}: {run.stderr[-2000:]}")
    return {
        "wall_s": round(run.wall_s, 2),
        "cpu_s": round(run.cpu_s, 2),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "simulator_cpu_s": round(sim_cpu, 2),
        "deals": exported_count(run.stdout),
    }


def _limit_hits(sim: SimulatorProcess) -> dict[str, Any]:
    stats = sim.stats()
    return {
        "requests": stats["requests"],
        "http_503": stats["rate_limited"],
        "http_429": stats["operating_limited"],
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["wall_s"])


def _ratios(peer: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    return {
        "time_ratio_peer_over_ours": round(peer["wall_s"] / ours["wall_s"], 2),
        "cpu_ratio_peer_over_ours": round(peer["cpu_s"] / ours["cpu_s"], 2),
        "rss_ratio_peer_over_ours": round(peer["peak_rss_mb"] / ours["peak_rss_mb"], 2),
    }


def _slopes(big: list[dict[str, Any]], one: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """A tool's fixed cost (median run on one ID) and its cost per deal beyond it."""
    extra = max(1, n - 1)
    return {
        "fixed_cpu_s": round(_median(one, "cpu_s"), 3),
        "fixed_wall_s": round(_median(one, "wall_s"), 3),
        "cpu_ms_per_deal": round((_median(big, "cpu_s") - _median(one, "cpu_s")) / extra * 1e3, 4),
        "wall_ms_per_deal": round(
            (_median(big, "wall_s") - _median(one, "wall_s")) / extra * 1e3, 4
        ),
    }


def _per_deal(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """Ratios peer / ours of the per-deal slopes (above 1 = we spend less per deal)."""

    def ratio(key: str) -> float | None:
        return round(peer[key] / ours[key], 2) if ours[key] > 0 else None

    return {
        "ours": ours,
        "peer": peer,
        "cpu_per_deal_ratio_peer_over_ours": ratio("cpu_ms_per_deal"),
        "wall_per_deal_ratio_peer_over_ours": ratio("wall_ms_per_deal"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ids", type=int, default=30_000, help="IDs for the limits-off rounds")
    parser.add_argument("--default-ids", type=int, default=5_000, help="IDs at default pacing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180.0, help="bound on each run, seconds")
    parser.add_argument("--peer-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="raised", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if not peer_available():
        print(MISSING_PEER, file=sys.stderr)
        return 2
    if args.peer_child:
        assert args.ids_file is not None
        assert args.out is not None
        print(json.dumps(peer_child(args.peer_child, args.ids_file, args.out, args.mode)))
        return 0

    n = max(args.ids, args.default_ids)
    portal_deals = int(n * 1.2) + 100
    ids, deleted = visible_ids(portal_deals, n)
    with tempfile.TemporaryDirectory(prefix="bench_peer_ids_") as tmp:
        names = ("f.txt", "s.txt", "p.txt", "one.txt")
        fast_file, slow_file, probe_file, one_file = (Path(tmp) / f for f in names)
        fast_file.write_text("\n".join(map(str, ids[: args.ids])) + "\n")
        one_file.write_text(f"{ids[0]}\n")
        slow_file.write_text("\n".join(map(str, ids[: args.default_ids])) + "\n")
        probe_file.write_text(f"{ids[0]}\n{deleted}\n{ids[1]}\n")
        # Real portals send an empty multiple field as `false`, `""` or `[]`; the peer's
        # `Table.from_pylist` cannot type a column that mixes `false` with lists and raises. To
        # compare speed on data both tools can take, this portal sends every such empty as `[]`.
        sim_args = ["--deals", str(portal_deals), "--seed", str(SEED), *EMPTIES]
        with SimulatorProcess(sim_args) as sim:
            ours_fast: list[dict[str, Any]] = []
            peer_fast: list[dict[str, Any]] = []
            ours_one: list[dict[str, Any]] = []
            peer_one: list[dict[str, Any]] = []
            for i in range(max(1, args.rounds)):
                # Alternate who goes first: the machine is noisy and the simulator has a cache.
                pair: list[Callable[[], None]] = [
                    lambda: ours_fast.append(run_ours(sim, fast_file, LIMITS_OFF, args.timeout)),
                    lambda: peer_fast.append(run_peer(sim, fast_file, "raised", args.timeout)),
                    lambda: ours_one.append(run_ours(sim, one_file, LIMITS_OFF, args.timeout)),
                    lambda: peer_one.append(run_peer(sim, one_file, "raised", args.timeout)),
                ]
                for step in pair if i % 2 == 0 else reversed(pair):
                    step()
            probe = run_peer(sim, probe_file, "defaults", args.timeout)
        # At the defaults both tools pace themselves for a standard-plan portal, so each gets a
        # fresh one (empty bucket, unspent budget) that answers 503/429 like the cloud does.
        limited = [*sim_args, "--plan", "standard", "--operating-budget", "480"]
        with SimulatorProcess(limited) as sim:
            ours_slow = {
                **run_ours(sim, slow_file, ["--plan", "standard"], args.timeout),
                **_limit_hits(sim),
            }
        with SimulatorProcess(limited) as sim:
            peer_slow = {**run_peer(sim, slow_file, "defaults", args.timeout), **_limit_hits(sim)}
    for r in peer_fast:
        if r.get("deals") != args.ids:
            raise SystemExit(f"the peer returned {r.get('deals')} deals: {r}")
    best_ours, best_peer = _best(ours_fast), _best(peer_fast)
    result = {
        "bench": "bench_peer",
        "peer": "fast-bitrix24 " + _peer_version(),
        "simulator": f"deal-export simulate --port 0 --deals {portal_deals} --seed {SEED} "
        "--empty-multiple empty_list",
        "command": "deal-export run --ids FILE --out DIR --no-progress --rate 0 "
        "--operating-budget off vs BitrixAsync(webhook, verbose=False, **peer_options)"
        '.get_by_ID("crm.deal.get", ids) + pa.Table.from_pylist + pq.write_table',
        "raised": {
            "ids": args.ids,
            "ours_command": "deal-export run --ids FILE --out DIR --no-progress "
            "--rate 0 --operating-budget off",
            "peer_options": RAISED,
            **_ratios(best_peer, best_ours),
            "median_time_ratio_peer_over_ours": round(
                _median(peer_fast, "wall_s") / _median(ours_fast, "wall_s"), 2
            ),
            "median_cpu_ratio_peer_over_ours": round(
                _median(peer_fast, "cpu_s") / _median(ours_fast, "cpu_s"), 2
            ),
            "ours_deals_per_s": round(args.ids / best_ours["wall_s"], 1),
            "peer_deals_per_s": round(args.ids / best_peer["wall_s"], 1),
            "ours_cpu_s_per_10k_deals": round(best_ours["cpu_s"] / args.ids * 10_000, 3),
            "peer_cpu_s_per_10k_deals": round(best_peer["cpu_s"] / args.ids * 10_000, 3),
            "ours": ours_fast,
            "peer": peer_fast,
            "per_deal": _per_deal(
                _slopes(ours_fast, ours_one, args.ids), _slopes(peer_fast, peer_one, args.ids)
            ),
            "one_id": {"ours": ours_one, "peer": peer_one},
        },
        "defaults": {
            "ids": args.default_ids,
            "ours_command": "deal-export run --ids FILE --out DIR --no-progress --plan standard",
            "peer_options": "BitrixAsync(webhook, verbose=False)",
            "simulator": f"deal-export simulate --port 0 --deals {portal_deals} --seed {SEED} "
            "--empty-multiple empty_list --plan standard --operating-budget 480",
            **_ratios(peer_slow, ours_slow),
            "ours": ours_slow,
            "peer": peer_slow,
        },
        "missing_id_probe": probe,
    }
    write_result("bench_peer", result)
    return 0


def _peer_version() -> str:
    from importlib.metadata import version

    return version("fast-bitrix24")


if __name__ == "__main__":
    raise SystemExit(main())
