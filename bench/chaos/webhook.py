"""Scenario 4: the webhook is revoked mid-run (as when an admin deletes it), then restored.

The run must stop promptly with exit 1 and one clear line naming the cause, the secret masked,
no traceback, the lock released and the committed chunks kept. After the webhook is restored,
the very same command resumes and completes, and the audit finds every ID exactly once.
JSON logs are on, so the scan (scenario 7) also covers structured log lines on the fatal path.
"""

from __future__ import annotations

import asyncio
import time

from bench.chaos.audit import audit_output, check_readable, ids_file, temp_files
from bench.chaos.harness import SECRET, Context, Findings, check, no_traceback
from bench.chaos.kills import PACED, _checkpoints, _wait_for_commit
from bench.chaos.runner import Outcome, Scenario
from pipeline.simulator import SimulatorConfig, running_simulator


async def revoked_webhook(ctx: Context) -> Outcome:
    config = SimulatorConfig(deals=800 if ctx.quick else 2000, seed=41, secret=SECRET)
    async with running_simulator(config) as sim:
        work = ctx.dir("webhook-revoked")
        wanted = ids_file(work / "ids.txt", sim.portal, seed=ctx.seed)
        out = work / "out"
        args = ["run", "--ids", "ids.txt", "--out", "out", "--log-format", "json", *PACED]
        proc = await ctx.start(args, env=ctx.env(sim), cwd=work)
        committed = await _wait_for_commit(out, 0, proc, limit_s=30)
        check(committed, "no chunk was committed before the revocation point")
        sim.revoke_webhook()
        revoked_at = time.monotonic()
        done = await ctx.finish(proc, args, limit_s=60)
        stop_s = time.monotonic() - revoked_at
        # What the operator reads is checked without stopping: the resume is worth knowing too.
        seen = Findings()
        seen.no_traceback(done, "revoked webhook")
        check(done.code == 1, f"revoked webhook: exit {done.code}, expected 1: {done.tail()}")
        said = done.stderr + done.stdout
        seen.check(
            "NO_AUTH_FOUND" in said or "webhook" in said.lower(),
            f"the error does not say the webhook was refused: {done.tail()}",
        )
        # With --log-format json the failure is one JSON record like every other line.
        seen.check(
            '"event": "run_failed"' in said and "NO_AUTH_FOUND" in said,
            "no one-line run_failed JSON record naming NO_AUTH_FOUND for the revoked webhook",
        )
        check(SECRET not in said, "the webhook secret is in the error output")
        check(not (out / "_SUCCESS").exists(), "_SUCCESS after a fatal exit")
        seen.check(not (out / "_lock").exists(), "the lock file was left behind by a fatal exit")
        check(not temp_files(out), "temp files left behind by a fatal exit")
        check_readable(out)
        kept = _checkpoints(out)
        check(kept, "the fatal exit lost the chunks committed before it")

        sim.restore_webhook()
        await asyncio.sleep(0)
        again = await ctx.cli(args, env=ctx.env(sim), cwd=work, limit_s=120)
        no_traceback(again)
        check(
            again.code == 0, f"the same command after the fix exited {again.code}: {again.tail()}"
        )
        rewritten = [n for n, t in kept.items() if _checkpoints(out).get(n) != t]
        check(not rewritten, f"the resumed run rewrote committed chunks: {rewritten[:3]}")
        audit = audit_output(out, sim.portal, wanted)
        message = next(
            (line for line in done.stderr.splitlines() if "error" in line.lower()), done.tail()
        )
        detail = (
            f"exit 1 in {stop_s:.1f} s after revocation, {len(kept)} chunks kept, "
            f"resumed to exit 0; {audit.describe()}"
        )
        seen.raise_if_any(detail)
        return Outcome(
            detail,
            {
                "stop_seconds": round(stop_s, 2),
                "chunks_kept": len(kept),
                "message": message[:300],
                "exported": audit.exported,
                "values_checked": audit.values_checked,
            },
        )


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("webhook-revoked", revoked_webhook, limit_s=120 if quick else 200)]
