"""Fetch stage: deals/s against the unlimited simulator, and peak memory for 100k vs 1M IDs.

The simulator runs in one child process (`deal-export simulate`, limits off); each measured
fetch runs in its own child process (`--child`), which walks IDs 1..N through `fetch_deals`
(batches of 50, default FetchConfig) and counts the outcomes without keeping them. Its peak RSS
(`ru_maxrss`) shows whether memory grows with the number of IDs: the 100k and 1M figures must
be within 20% of each other. Prints one JSON line and writes bench/results/bench_fetch.json.

    .venv/bin/python -m bench.bench_fetch [--sizes 100000,1000000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench import write_result


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def _child(webhook: str, count: int, concurrency: int) -> dict[str, Any]:
    from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
    from pipeline.fetch import PortalClient, fetch_deals
    from pipeline.outcomes import DealFetched

    async def ids() -> AsyncIterator[int]:
        for i in range(1, count + 1):
            yield i

    fetched = failed = 0
    client = PortalClient(
        WebhookAuth(webhook),
        limits=LimitsConfig(rate=0, operating_budget_s=None),
        fetch=FetchConfig(concurrency=concurrency),
    )
    started = time.monotonic()
    cpu0 = time.process_time()
    async with client:
        async for outcome in fetch_deals(ids(), client):
            if isinstance(outcome, DealFetched):
                fetched += 1
            else:
                failed += 1
    elapsed = time.monotonic() - started
    return {
        "ids": count,
        "fetched": fetched,
        "failed": failed,
        "elapsed_s": round(elapsed, 2),
        "ids_per_s": round(count / elapsed, 1),
        "deals_per_s": round(fetched / elapsed, 1),
        "client_cpu_s": round(time.process_time() - cpu0, 2),
        "requests": client.stats.requests,
        "retries": client.stats.retries,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _run_child(webhook: str, sim_pid: int, count: int, concurrency: int) -> dict[str, Any]:
    sim_cpu0 = _cpu_seconds(sim_pid)
    command = [sys.executable, "-m", "bench.bench_fetch", "--child", webhook]
    command += ["--ids", str(count), "--concurrency", str(concurrency)]
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["simulator_cpu_s"] = round(_cpu_seconds(sim_pid) - sim_cpu0, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ids", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(asyncio.run(_child(args.child, args.ids, args.concurrency))))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    portal_deals = max(sizes)
    sim = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "simulate", "--deals", str(portal_deals), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    runs: list[dict[str, Any]] = []
    try:
        assert sim.stdout is not None
        webhook = sim.stdout.readline().strip()
        if not webhook.startswith("http"):
            raise SystemExit("the simulator did not start")
        for size in sizes:
            runs.append(_run_child(webhook, sim.pid, size, args.concurrency))
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
    rss = [r["peak_rss_mb"] for r in runs]
    largest = max(runs, key=lambda r: r["ids"])
    result = {
        "bench": "bench_fetch",
        "portal_deals": portal_deals,
        "concurrency": args.concurrency,
        "batch_size": 50,
        "deals_per_s": largest["deals_per_s"],
        "ids_per_s": largest["ids_per_s"],
        "client_cpu_per_10k_ids_s": round(largest["client_cpu_s"] / largest["ids"] * 10_000, 3),
        "peak_rss_mb": dict(zip([str(r["ids"]) for r in runs], rss, strict=True)),
        "peak_rss_ratio": round(max(rss) / min(rss), 3),
        "runs": runs,
    }
    write_result("bench_fetch", result)


if __name__ == "__main__":
    main()
