"""Scenario 3: `kill -9` at random moments, the same command resumed each time, then completion.

Kills alternate between a random delay after start (which lands anywhere: start-up, lock and
recovery, fetching, writing) and "just after a chunk commit" (when the writer is busiest: the next
chunk's files are being written and renamed). After every kill, whatever a reader can see must be
whole Parquet files holding no deal twice, and there is no `_SUCCESS`. The last run completes,
must skip the chunks earlier runs committed, and the audit must find every ID exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from pathlib import Path

from bench.chaos.audit import audit_output, check_readable, ids_file
from bench.chaos.harness import SECRET, Context, check, no_traceback
from bench.chaos.runner import Outcome, Scenario
from pipeline.simulator import SimulatorConfig, running_simulator

#: Paced (8 batches of 25 per second) so that one run lasts long enough to be killed many times.
PACED = [
    "--rate",
    "8",
    "--burst",
    "2",
    "--headroom",
    "0",
    "--batch-size",
    "25",
    "--concurrency",
    "2",
    "--operating-budget",
    "off",
    "--chunk-size",
    "100",
    "--no-progress",
]


def _checkpoints(out: Path) -> dict[str, int]:
    try:
        with os.scandir(out / "_checkpoints") as it:
            return {e.name: e.stat().st_mtime_ns for e in it if e.name.endswith(".json")}
    except FileNotFoundError:
        return {}


async def _wait_for_commit(out: Path, before: int, proc: object, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if len(_checkpoints(out)) > before:
            return True
        if getattr(proc, "returncode", None) is not None:
            return False
        await asyncio.sleep(0.01)
    return False


async def kill_and_resume(ctx: Context) -> Outcome:
    cycles = 3 if ctx.quick else 10
    config = SimulatorConfig(deals=1000 if ctx.quick else 4000, seed=31, secret=SECRET)
    rng = random.Random(ctx.seed + 3)
    async with running_simulator(config) as sim:
        work = ctx.dir("kill-9")
        wanted = ids_file(work / "ids.txt", sim.portal, seed=ctx.seed, extra=("x1", "7.5"))
        out = work / "out"
        args = ["run", "--ids", "ids.txt", "--out", "out", *PACED]
        kills: list[str] = []
        for cycle in range(cycles):
            before = len(_checkpoints(out))
            proc = await ctx.start(args, env=ctx.env(sim), cwd=work)
            if cycle % 2 == 0:
                delay = rng.uniform(0.3, 2.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), delay)
                moment = f"{delay:.2f}s"
            else:
                await _wait_for_commit(out, before, proc, limit_s=15)
                extra = rng.uniform(0.0, 0.08)
                await asyncio.sleep(extra)
                moment = f"commit+{extra * 1000:.0f}ms"
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            done = await ctx.finish(proc, args, limit_s=15)
            check(
                done.code == -signal.SIGKILL,
                f"cycle {cycle + 1}: the run ended by itself (exit {done.code}) before the kill "
                f"at {moment}: {done.tail()}",
            )
            kills.append(moment)
            check(not (out / "_SUCCESS").exists(), f"_SUCCESS after kill {cycle + 1}")
            if out.exists():
                check_readable(out)
        committed = _checkpoints(out)
        check(committed, f"no chunk was committed across {cycles} kills: resume is untested")
        final = await ctx.cli(args, env=ctx.env(sim), cwd=work, limit_s=120)
        no_traceback(final)
        check(final.code == 0, f"the resumed run exited {final.code}: {final.tail()}")
        rewritten = [n for n, t in committed.items() if _checkpoints(out).get(n) != t]
        check(not rewritten, f"the resumed run rewrote committed chunks: {rewritten[:3]}")
        audit = audit_output(out, sim.portal, wanted, invalid_lines=2)
        total = len(_checkpoints(out))
        detail = (
            f"{len(kills)} kills ({', '.join(kills)}); {len(committed)}/{total} chunks were "
            f"committed before the last run; {audit.describe()}"
        )
        return Outcome(
            detail,
            {
                "kills": kills,
                "chunks_committed_before_final": len(committed),
                "chunks_total": total,
                "exported": audit.exported,
                "failed_permanent": audit.failed_permanent,
                "values_checked": audit.values_checked,
            },
        )


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("kill-9-resume", kill_and_resume, limit_s=90 if quick else 240)]
