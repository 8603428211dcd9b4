"""Scenario 1: the fault mix. Every kind of transport and server fault at once, on a real run.

500 JSON errors, HTML 502/503/504 pages from a "proxy", connection resets, bodies cut mid-way,
answers slower than the client's request timeout, and answers without `time`. The run must end
with every ID accounted for; IDs whose attempts ran out are retryable sidecar rows (exit 3), and
`deal-export retry` turns them into data once the portal behaves.
"""

from __future__ import annotations

from bench.chaos.audit import audit_output, ids_file
from bench.chaos.harness import SECRET, UNPACED, Context, check, no_traceback
from bench.chaos.runner import Outcome, Scenario
from pipeline.simulator import FAULT_KINDS, FaultConfig, SimulatorConfig, running_simulator

FAULT_MIX = FaultConfig(
    error_500=0.05,
    html_502=0.03,
    html_503=0.03,
    html_504=0.03,
    reset=0.03,
    truncated=0.03,
    slow=0.03,
    no_time=0.03,
    # Longer than the request timeout below: a slow answer is a timeout the client must retry.
    slow_s=2.5,
    seed=11,
)

#: The client gives up on an answer after 1 s (the simulator's slow answers take 2.5 s).
CONFIG = """\
[transport]
request_timeout_s = 1.0

[fetch]
max_attempts = 8
backoff_base_s = 0.05
backoff_max_s = 0.5
"""

INVALID = ("12abc", "-4", "0", "9223372036854775808")


async def fault_mix(ctx: Context) -> Outcome:
    deals = 1200 if ctx.quick else 3000
    config = SimulatorConfig(deals=deals, seed=5, secret=SECRET, faults=FAULT_MIX)
    async with running_simulator(config) as sim:
        work = ctx.dir("fault-mix")
        wanted = ids_file(work / "ids.txt", sim.portal, seed=ctx.seed, extra=INVALID)
        (work / "chaos.toml").write_text(CONFIG)
        args = [
            "run",
            "--config",
            "chaos.toml",
            "--ids",
            "ids.txt",
            "--out",
            "out",
            "--chunk-size",
            "250",
            "--batch-size",
            "20",
            "--concurrency",
            "6",
            # One command per deal: enough requests for every fault kind to meet the run (list
            # calls would carry up to 1,000 IDs per request here and leave some kinds unseen).
            "--strategy",
            "get",
            *UNPACED,
        ]
        first = await ctx.cli(args, env=ctx.env(sim), cwd=work, limit_s=150)
        no_traceback(first)
        check(first.code in (0, 3), f"run exited {first.code}: {first.tail()}")
        faults = dict(sim.stats()["faults"])
        silent = [k for k in FAULT_KINDS if not faults.get(k)]
        check(
            not silent, f"fault kinds never injected (the run proves nothing about them): {silent}"
        )
        mid = audit_output(
            work / "out", sim.portal, wanted, invalid_lines=len(INVALID), allow_retryable=True
        )
        check(
            (first.code == 3) == (mid.failed_retryable > 0),
            f"exit {first.code} but {mid.failed_retryable} retryable sidecar rows",
        )
        retried = 0
        if first.code == 3:
            check("deal-export retry" in first.stdout, "exit 3 without saying what to run next")
            sim.set_faults(FaultConfig())
            again = await ctx.cli(
                ["retry", "out", *UNPACED[:4]], env=ctx.env(sim), cwd=work, limit_s=60
            )
            no_traceback(again)
            check(again.code == 0, f"retry exited {again.code}: {again.tail()}")
            retried = mid.failed_retryable
        final = audit_output(work / "out", sim.portal, wanted, invalid_lines=len(INVALID))
        injected = sum(faults.values())
        detail = (
            f"{injected} faults injected over {sim.stats()['requests']} requests "
            f"(all {len(FAULT_KINDS)} kinds), exit {first.code}"
            + (f", retry recovered {retried}" if retried else "")
            + f"; {final.describe()}"
        )
        return Outcome(
            detail,
            {
                "deals": deals,
                "requested_unique": len(wanted),
                "faults": faults,
                "first_exit": first.code,
                "retried": retried,
                "exported": final.exported,
                "failed_permanent": final.failed_permanent,
                "values_checked": final.values_checked,
            },
        )


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("fault-mix", fault_mix, limit_s=180)]
