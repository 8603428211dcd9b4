"""Scenario 9: poison deals. A few deals among thousands that fail every request holding them,
under the fault mix of scenario 1; once for each way a real portal fails them.

* `wrong_encoding`: the portal cannot JSON-encode the deal, so the whole answer becomes
  `{"error":"WRONG_ENCODING","error_description":"Wrong request encoding"}` with HTTP 200 (core
  `rest.php` `outputJson`). The culprit is permanent: exit 0.
* `error_500`: a request holding the deal fails on the server every time (HTTP 500
  INTERNAL_SERVER_ERROR), as a request past the cloud's 60 s cap does. A 500 may pass later,
  so the culprit stays retryable: exit 3; `deal-export retry` (faults off) isolates it again
  and leaves it with the portal's code.

The engine splits a failing batch in halves down to the culprit. Audit: every ID exactly once,
each poison deal in the sidecar with its real code, every other readable deal in the data, and
the splits bounded: at most ceil(log2(IDs per request)) per poison deal (a list batch carries
up to 2,500 IDs), plus one for each injected fault that can itself look like a repeating failure
(500, 504, timeout); every split costs two requests (its halves).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bench.chaos.audit import audit_output, ids_file, read_sidecar
from bench.chaos.faults import CONFIG, FAULT_MIX
from bench.chaos.harness import SECRET, UNPACED, Completed, Context, check, no_traceback
from bench.chaos.runner import Outcome, Scenario
from bench.chaos.secret_scan import scan_scenario
from pipeline.fetch.listing import LIST_PAGE
from pipeline.simulator import FaultConfig, SimulatorConfig, running_simulator

BATCH = 50
#: Injected fault kinds a split may be caused by: a 500, a 504 page, or a read timeout.
REPEATING_FAULTS = ("error_500", "html_504", "slow")
#: (poison answer, the sidecar code and message its culprit ends with, HTTP status, retryable).
ANSWERS: dict[str, tuple[str, str, int, bool]] = {
    "wrong_encoding": ("WRONG_ENCODING", "Wrong request encoding", 200, False),
    "error_500": ("INTERNAL_SERVER_ERROR", "Internal server error", 500, True),
}


def _limits(root: Path) -> dict[str, Any]:
    """The client's own counters of the last command into `root` (the manifest's `limits`)."""
    manifest = json.loads((root / "_manifest.json").read_text())
    limits: dict[str, Any] = manifest.get("limits") or {}
    return limits


def _ids_per_request(limits: dict[str, Any]) -> int:
    """A get batch carries BATCH IDs; a list batch carries BATCH list calls of up to LIST_PAGE
    IDs each, so isolating a culprit in it takes more halvings."""
    ran = (limits.get("strategy") or {}).get("ran")
    return BATCH * LIST_PAGE if ran == "list" else BATCH


def _split_bound(poison: int, faults: dict[str, int], per_request: int = BATCH) -> int:
    """At most ceil(log2(IDs per request)) halvings per poison deal, plus one per injected
    fault of a repeating kind."""
    halvings = math.ceil(math.log2(per_request))
    return poison * halvings + sum(faults.get(k, 0) for k in REPEATING_FAULTS)


def _poison_rows(root: Path, poison: list[int]) -> list[dict[str, Any]]:
    """The sidecar rows of the poison deals (the audit has already found each of them)."""
    side = read_sidecar(root)
    check(side is not None, "no sidecar")
    assert side is not None
    rows: list[dict[str, Any]] = side.filter(
        pc.is_in(side.column("id"), pa.array(poison, pa.int64()))
    ).to_pylist()
    check(len(rows) == len(poison), f"{len(rows)} sidecar rows for {len(poison)} poison deals")
    return rows


def _check_culprits(root: Path, poison: list[int], answer: str) -> None:
    """Each poison deal's sidecar row carries the portal's own code, text and status."""
    want = ANSWERS[answer]
    for row in _poison_rows(root, poison):
        got = (row["code"], row["message"], row["http_status"], row["retryable"])
        check(got == want, f"poison deal {row['id']}: sidecar says {got}, expected {want}")


def _unresolved(root: Path, poison: list[int], answer: str) -> dict[int, str]:
    """Poison deals a run under faults left retryable, with their codes. A 500 culprit always
    is. A WRONG_ENCODING one is when faults of the mix used up its attempts before it stood
    alone and got its own answer (RETRIES_EXHAUSTED, or the code of the fault that met its
    last attempt alone); the run then exits 3 and the fault-free retry isolates it."""
    rows = _poison_rows(root, poison)
    pending = {row["id"]: str(row["code"]) for row in rows if row["retryable"]}
    if ANSWERS[answer][3]:
        check(len(pending) == len(poison), f"500 culprits not retryable after the run: {rows}")
    return pending


async def _run(ctx: Context, args: list[str], env: dict[str, str], work: Path,
               codes: tuple[int, ...], step: str) -> Completed:  # fmt: skip
    done = await ctx.cli(args, env=env, cwd=work, limit_s=150)
    no_traceback(done)
    check(done.code in codes, f"{step} exited {done.code}, expected {codes}: {done.tail()}")
    return done


async def _poison_portal(
    ctx: Context, answer: str, deals: int, count: int, seed: int
) -> tuple[str, dict[str, Any]]:
    config = SimulatorConfig(
        deals=deals,
        seed=seed,
        secret=SECRET,
        faults=FAULT_MIX,
        poison_answer=answer,  # type: ignore[arg-type]
    )
    async with running_simulator(config) as sim:
        rng = random.Random(ctx.seed + seed)
        poison = sorted(rng.sample(sim.portal.visible_ids, count))
        sim.set_poison(poison)
        work = ctx.dir(f"poison-{answer}")
        wanted = ids_file(work / "ids.txt", sim.portal, seed=ctx.seed)
        (work / "chaos.toml").write_text(CONFIG)
        out = work / "out"
        env = ctx.env(sim)
        args = [
            "run", "--config", "chaos.toml", "--ids", "ids.txt", "--out", "out",
            "--chunk-size", "500", "--batch-size", str(BATCH), "--concurrency", "6", *UNPACED,
        ]  # fmt: skip
        retryable = ANSWERS[answer][3]
        first = await _run(ctx, args, env, work, (3,) if retryable else (0, 3), "run")
        faults = {k: int(v) for k, v in sim.stats()["faults"].items()}
        run_limits = _limits(out)
        splits = int(run_limits.get("batch_splits", 0))
        bound = _split_bound(count, faults, _ids_per_request(run_limits))
        check(splits <= bound, f"{splits} batch splits for {count} poison deals, bound {bound}")
        # Under faults a retryable culprit's last attempt may have met a fault of the mix
        # instead of its own 500, so its code is checked after the fault-free retry.
        mid = audit_output(
            out,
            sim.portal,
            wanted,
            allow_retryable=True,
            expected_failures=dict.fromkeys(poison),
            values=False,
        )
        pending = _unresolved(out, poison, answer)
        check(not pending or first.code == 3, f"exit {first.code} with retryable poison deals")
        retry_limits: dict[str, Any] = {}
        if first.code == 3:
            check("deal-export retry" in first.stdout, "exit 3 without saying what to run next")
            sim.set_faults(FaultConfig())
            before = sim.stats()["requests"]
            retry = ["retry", "out", "--config", "chaos.toml", *UNPACED[:4]]
            again = await _run(ctx, retry, env, work, (3,) if retryable else (0,), "retry")
            retry_limits = _limits(out)
            retry_limits["portal_requests"] = sim.stats()["requests"] - before
            retry_splits = int(retry_limits.get("batch_splits", 0))
            retry_bound = _split_bound(count, {}, _ids_per_request(retry_limits))
            check(
                retry_splits <= retry_bound,
                f"retry: {retry_splits} splits for {count} poison deals, bound {retry_bound}",
            )
            no_traceback(again)
        code = ANSWERS[answer][0]
        audit = audit_output(out, sim.portal, wanted, expected_failures=dict.fromkeys(poison, code))
        _check_culprits(out, poison, answer)
        files, lines = scan_scenario(ctx, work, ctx.secrets)
        requests = int(run_limits.get("requests", 0))
        extra = 2 * splits
        line = (
            f"{answer}: {count} poison of {deals} deals, {sum(faults.values())} faults, "
            f"exit {first.code}, {splits} splits = {extra} extra requests of {requests} "
            f"(bound {2 * bound})"
            + (
                f", retry {retry_limits.get('batch_splits', 0)} splits in "
                f"{retry_limits['portal_requests']} requests"
                if retry_limits
                else ""
            )
            + f"; {audit.describe()}"
        )
        return line, {
            "deals": deals,
            "poison_ids": poison,
            "faults": faults,
            "first_exit": first.code,
            "requests": requests,
            "batch_splits": splits,
            "split_requests": extra,
            "split_bound": bound,
            "split_requests_per_poison": round(extra / count, 1),
            "retryable_after_run": mid.failed_retryable,
            "poison_retryable_after_run": pending,
            "retry": {
                k: retry_limits[k]
                for k in ("requests", "batch_splits", "portal_requests")
                if k in retry_limits
            },
            "exported": audit.exported,
            "failed_permanent": audit.failed_permanent,
            "values_checked": audit.values_checked,
            "scanned_files": files,
            "scanned_lines": lines,
        }


async def poison_deals(ctx: Context) -> Outcome:
    deals, count = (1500, 3) if ctx.quick else (6000, 6)
    lines: list[str] = []
    figures: dict[str, Any] = {}
    for n, answer in enumerate(ANSWERS):
        line, figs = await _poison_portal(ctx, answer, deals, count, seed=81 + n)
        lines.append(line)
        figures[answer] = figs
    return Outcome("; ".join(lines), figures)


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("poison", poison_deals, limit_s=150 if quick else 360)]
