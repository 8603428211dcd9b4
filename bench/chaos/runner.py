"""Run the scenarios in order, one line each, and write the results.

    PASS name (N s) detail
    FAIL name: reason
    ...
    N passed, M failed

A scenario is an async function of the shared `Context` returning a one-line detail and figures;
it fails by raising `ScenarioFailed` (any other exception fails it too, with its type named).
Each runs under its own time limit, so the whole suite is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bench.chaos.harness import Context, ScenarioFailed


@dataclass(frozen=True)
class Outcome:
    """A passed scenario's one-line detail and its figures (for the JSON results)."""

    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Context], Awaitable[Outcome]]
    limit_s: float
    #: Scenarios with the same group run side by side (cheap, independent ones only).
    group: str | None = None


@dataclass(frozen=True)
class Result:
    name: str
    passed: bool
    seconds: float
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        if self.passed:
            return f"PASS {self.name} ({self.seconds:.1f} s) {self.detail}"
        return f"FAIL {self.name}: {self.detail}"


@dataclass(frozen=True)
class SuiteResult:
    results: list[Result]
    seconds: float
    quick: bool
    seed: int

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": "chaos",
            "quick": self.quick,
            "seed": self.seed,
            "passed": self.passed,
            "failed": self.failed,
            "seconds": round(self.seconds, 1),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "python": platform.python_version(),
                "system": f"{platform.system()} {platform.release()}",
                "cpus": os.cpu_count(),
            },
            "command": "python -m bench.chaos" + (" --quick" if self.quick else ""),
            "scenarios": [
                {
                    "name": r.name,
                    "status": "pass" if r.passed else "fail",
                    "seconds": round(r.seconds, 2),
                    "detail": r.detail,
                    "figures": r.figures,
                }
                for r in self.results
            ],
        }


async def _one(ctx: Context, scenario: Scenario) -> Result:
    started = time.monotonic()
    ctx.scenario = scenario.name
    try:
        outcome = await asyncio.wait_for(scenario.run(ctx), scenario.limit_s)
    except ScenarioFailed as exc:
        return Result(scenario.name, False, time.monotonic() - started, str(exc))
    except TimeoutError:
        reason = f"did not finish within {scenario.limit_s:.0f} s"
        return Result(scenario.name, False, time.monotonic() - started, reason)
    except Exception as exc:
        # A bug in the scenario itself (or in what it read): name it, keep the suite going.
        traceback.print_exc(file=sys.stderr)
        reason = f"{type(exc).__name__}: {exc}"
        return Result(scenario.name, False, time.monotonic() - started, reason)
    finally:
        await ctx.reap()
    return Result(scenario.name, True, time.monotonic() - started, outcome.detail, outcome.figures)


async def run_suite(
    scenarios: list[Scenario],
    *,
    quick: bool,
    work: Path | None = None,
    out: TextIO | None = None,
    only: set[str] | None = None,
    seed: int | None = None,
) -> SuiteResult:
    """Run `scenarios` (or those whose name starts with one of `only`), printing one line each."""
    stream = out or sys.stdout
    own_work = work is None
    root = Path(tempfile.mkdtemp(prefix="chaos-")) if work is None else work
    ctx = Context(work=root, quick=quick)
    if seed is not None:
        ctx.seed = seed
    started = time.monotonic()
    results: list[Result] = []
    chosen = [s for s in scenarios if not only or any(s.name.startswith(o) for o in only)]
    try:
        i = 0
        while i < len(chosen):
            group = chosen[i].group
            batch = [chosen[i]]
            while group is not None and i + len(batch) < len(chosen):
                if chosen[i + len(batch)].group != group:
                    break
                batch.append(chosen[i + len(batch)])
            i += len(batch)
            if len(batch) == 1:
                done = [await _one(ctx, batch[0])]
            else:
                done = await _gather_bounded(ctx, batch, limit=4)
            for result in done:
                results.append(result)
                print(result.line(), file=stream, flush=True)
    finally:
        if own_work:
            shutil.rmtree(root, ignore_errors=True)
    suite = SuiteResult(results, time.monotonic() - started, quick, ctx.seed)
    print(f"{suite.passed} passed, {suite.failed} failed", file=stream, flush=True)
    return suite


async def _gather_bounded(ctx: Context, batch: list[Scenario], limit: int) -> list[Result]:
    slots = asyncio.Semaphore(limit)

    async def guarded(s: Scenario) -> Result:
        async with slots:
            # The transcript records the scenario name from ctx; give each its own view.
            sub = Context(
                work=ctx.work,
                quick=ctx.quick,
                seed=ctx.seed,
                scenario=s.name,
                transcripts=ctx.transcripts,
                secrets=ctx.secrets,
                early_hits=ctx.early_hits,
                credential_files=ctx.credential_files,
            )
            sub.procs = []
            return await _one(sub, s)

    return list(await asyncio.gather(*(guarded(s) for s in batch)))


def write_results(suite: SuiteResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite.as_dict(), indent=2) + "\n")


__all__ = ["Outcome", "Result", "Scenario", "SuiteResult", "run_suite", "write_results"]
