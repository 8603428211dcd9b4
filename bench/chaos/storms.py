"""Scenario 2: rate-limit and operating-limit storms, the portal stricter than the client was told.

The client runs with `--plan standard` (2 req/s, burst 50, 480 s of operating time per 10
minutes) while the simulated portal enforces far less. Simulated time runs `time_scale` times
faster on both sides (`--time-scale`), so ten-minute windows pass in seconds. The run must still
account for every ID: limit answers are waited out, not counted as failures; if some IDs do run
out of limit retries they are retryable sidecar rows and the exit code is 3, never 0 and never a
silent loss.
"""

from __future__ import annotations

import math
from typing import Any

from bench.chaos.audit import audit_output
from bench.chaos.harness import SECRET, Context, check, no_traceback
from bench.chaos.runner import Outcome, Scenario
from pipeline.simulator import SimulatorConfig, running_simulator


async def _storm(
    ctx: Context, name: str, config: SimulatorConfig, client: list[str], limit_s: float
) -> tuple[Any, dict[str, Any], int, float]:
    """Run the storm, retry while it exits 3 (at most twice), audit; figures for the report."""
    import time

    async with running_simulator(config) as sim:
        work = ctx.dir(name)
        wanted = set(range(1, sim.portal.max_id + 1))
        args = [
            "run",
            "--ids",
            f"1-{sim.portal.max_id}",
            "--ids-format",
            "range",
            "--out",
            "out",
            "--plan",
            "standard",
            "--time-scale",
            str(config.time_scale),
            "--no-progress",
            *client,
        ]
        started = time.monotonic()
        done = await ctx.cli(args, env=ctx.env(sim), cwd=work, limit_s=limit_s)
        seconds = time.monotonic() - started
        no_traceback(done)
        check(done.code in (0, 3), f"run exited {done.code}: {done.tail()}")
        mid = audit_output(work / "out", sim.portal, wanted, allow_retryable=True)
        check(
            (done.code == 3) == (mid.failed_retryable > 0),
            f"exit {done.code} but {mid.failed_retryable} retryable sidecar rows",
        )
        first_exit, retries = done.code, 0
        while done.code == 3 and retries < 2:
            retries += 1
            retry_args = [
                "retry",
                "out",
                "--plan",
                "standard",
                "--time-scale",
                str(config.time_scale),
            ]
            done = await ctx.cli(
                [*retry_args, *client], env=ctx.env(sim), cwd=work, limit_s=limit_s
            )
            no_traceback(done)
            check(done.code in (0, 3), f"retry exited {done.code}: {done.tail()}")
        final = audit_output(work / "out", sim.portal, wanted)
        stats = sim.stats()
        figures = {
            "deals": config.deals,
            "seconds": round(seconds, 2),
            "first_exit": first_exit,
            "retries": retries,
            "responses_503": stats["rate_limited"],
            "responses_429": stats["operating_limited"] + stats["operating_limited_commands"],
            "requests": stats["requests"],
            "operating_seconds_charged": stats["operating_seconds_charged"],
            "exported": final.exported,
            "failed_permanent": final.failed_permanent,
        }
        return final, figures, first_exit, seconds


async def rate_storm(ctx: Context) -> Outcome:
    # The portal drains 1 req/s with a bucket of 10; the client believes 2 req/s and 50.
    scale = 20.0
    config = SimulatorConfig(
        deals=1500 if ctx.quick else 4000,
        seed=21,
        secret=SECRET,
        rate=1.0,
        burst=10,
        time_scale=scale,
    )
    # JSON logs here, so the secret scan also reads the structured limit warnings.
    # get batches (50 deals a request): the floor below counts them, and list's 1,000 deals a
    # request would fit the quick portal in the bucket's 10, with no storm to survive.
    client = ["--headroom", "0", "--concurrency", "8", "--operating-budget", "off"]
    client += ["--strategy", "get", "--log-format", "json"]
    final, figures, first_exit, seconds = await _storm(ctx, "rate-storm", config, client, 120)
    check(figures["responses_503"] > 0, "the portal never answered 503: there was no storm")
    # Minimum the portal allows: burst, then 1 request per simulated second.
    batches = -(-config.deals // 50) + 1
    floor_s = max(0.0, batches - config.burst) / config.rate / scale
    figures["floor_seconds"] = round(floor_s, 2)
    detail = (
        f"{figures['responses_503']} x 503 over {figures['requests']} requests, "
        f"exit {first_exit}, {seconds:.1f} s (portal floor {floor_s:.1f} s); {final.describe()}"
    )
    return Outcome(detail, figures)


async def operating_storm(ctx: Context) -> Outcome:
    # The portal allows 2 s of crm.deal.get per 10 minutes (100 deals at 20 ms); the client was
    # told 480 s. Ten simulated minutes pass in 600/scale real seconds.
    scale = 200.0
    config = SimulatorConfig(
        deals=200 if ctx.quick else 800,
        seed=22,
        secret=SECRET,
        plan="standard",
        operating_budget_s=2.0,
        processing_ms=20.0,
        time_scale=scale,
    )
    client = ["--operating-budget", "480", "--concurrency", "4"]
    final, figures, first_exit, seconds = await _storm(ctx, "operating-storm", config, client, 150)
    check(figures["responses_429"] > 0, "the portal never answered 429: there was no storm")
    # Minimum the budget allows: every full budget's worth of work but the last waits out one
    # 10-minute window (the call that crosses the budget still completes).
    budget = config.operating_budget_s or 1.0
    floor_s = max(0, math.ceil(figures["operating_seconds_charged"] / budget) - 1) * 600 / scale
    figures["floor_seconds"] = round(floor_s, 2)
    detail = (
        f"{figures['responses_429']} x 429 and {figures['responses_503']} x 503 over "
        f"{figures['requests']} requests, exit {first_exit}, {seconds:.1f} s (budget floor "
        f"~{floor_s:.1f} s); {final.describe()}"
    )
    return Outcome(detail, figures)


def scenarios(quick: bool) -> list[Scenario]:
    return [
        Scenario("rate-storm", rate_storm, limit_s=150),
        Scenario("operating-storm", operating_storm, limit_s=200),
    ]
