"""Scenario 8: real empties. A portal that sends empty multiple user fields the way real ones
do, over every UF type that can be multiple, under the fault mix of scenario 1.

Bitrix24 sends an empty multiple UF as `false` (a NULL column, which the main module's
`CUserTypeManager::GetUserFields` unserialises to false), as `""` (a deal with no UF row: crm
`restservice.php` only replaces null with ''), or as `[]` (a stored empty array); date and
datetime multiples always come as `""` (`CRestUtil::ConvertDate(false)`) and file multiples as
`[]` (crm `tryExternalizeFileField`). The export must type every column, write each of those
forms as `[]` with no `normalise` sidecar row, and still hold every ID exactly once. The full
suite then repeats the run with each single form forced on every type (a portal version that
sends only that form).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.chaos.audit import MultiplesAudit, audit_multiples, audit_output, ids_file
from bench.chaos.faults import CONFIG, FAULT_MIX
from bench.chaos.harness import SECRET, UNPACED, Context, check, no_traceback
from bench.chaos.runner import Outcome, Scenario
from bench.chaos.secret_scan import scan_scenario
from pipeline.simulator import FaultConfig, SimulatorConfig, running_simulator
from pipeline.simulator.config import EmptyMultiple
from pipeline.simulator.fields import ALL_USER_FIELD_KINDS

#: The empty forms a real portal sends for a multiple UF of each type (server code, above).
SERVER_FORMS: dict[str, frozenset[str]] = {
    "date": frozenset({"empty_string"}),
    "datetime": frozenset({"empty_string"}),
    "file": frozenset({"empty_list"}),
}
EVERY_FORM = frozenset({"false", "empty_string", "empty_list"})


def _expected_forms(bitrix_type: str, mode: EmptyMultiple) -> frozenset[str]:
    if mode != "mix":
        return frozenset({mode})
    return SERVER_FORMS.get(bitrix_type, EVERY_FORM)


def _check_forms(found: MultiplesAudit, mode: EmptyMultiple) -> None:
    """Every multiple type was empty somewhere, in exactly the forms the portal sends it in:
    otherwise the run proves nothing about the missing ones."""
    for name, bitrix_type in found.types.items():
        seen = frozenset(found.forms[name])
        want = _expected_forms(bitrix_type, mode)
        check(seen == want, f"{name} ({bitrix_type}): empty forms sent {sorted(seen)}, "
              f"expected {sorted(want)}")  # fmt: skip


async def _one_portal(
    ctx: Context, mode: EmptyMultiple, deals: int, seed: int
) -> tuple[str, dict[str, Any]]:
    config = SimulatorConfig(
        deals=deals,
        seed=seed,
        secret=SECRET,
        user_fields=ALL_USER_FIELD_KINDS,
        empty_multiple=mode,
        faults=FAULT_MIX,
    )
    async with running_simulator(config) as sim:
        work = ctx.dir(f"real-empties-{mode}")
        wanted = ids_file(work / "ids.txt", sim.portal, seed=ctx.seed)
        (work / "chaos.toml").write_text(CONFIG)
        args = [
            "run", "--config", "chaos.toml", "--ids", "ids.txt", "--out", "out",
            "--chunk-size", "250", "--batch-size", "20", "--concurrency", "6", *UNPACED,
        ]  # fmt: skip
        first = await ctx.cli(args, env=ctx.env(sim), cwd=work, limit_s=150)
        no_traceback(first)
        check(first.code in (0, 3), f"{mode}: run exited {first.code}: {first.tail()}")
        faults = sum(sim.stats()["faults"].values())
        check(faults, f"{mode}: no fault was injected")
        if first.code == 3:
            sim.set_faults(FaultConfig())
            again = await ctx.cli(
                ["retry", "out", *UNPACED[:4]], env=ctx.env(sim), cwd=work, limit_s=60
            )
            no_traceback(again)
            check(again.code == 0, f"{mode}: retry exited {again.code}: {again.tail()}")
        audit = audit_output(work / "out", sim.portal, wanted)
        found = audit_multiples(work / "out", sim.portal)
        _check_forms(found, mode)
        files, lines = scan_scenario(ctx, work, ctx.secrets)
        by_form: Counter[str] = Counter()
        for counts in found.forms.values():
            by_form.update(counts)
        line = (
            f"{mode}: {found.empties} empties in {len(found.types)} multiple fields "
            f"({', '.join(f'{k} {v}' for k, v in sorted(by_form.items()))}) all [], "
            f"{faults} faults, exit {first.code}; {audit.describe()}"
        )
        return line, {
            "deals": deals,
            "first_exit": first.code,
            "faults": faults,
            "multiple_fields": len(found.types),
            "multiple_types": sorted(set(found.types.values())),
            "empties": found.empties,
            "empties_by_form": dict(by_form),
            "multiple_values_checked": found.values_checked,
            "normalise_rows": found.normalise_rows,
            "exported": audit.exported,
            "values_checked": audit.values_checked,
            "scanned_files": files,
            "scanned_lines": lines,
        }


async def real_empties(ctx: Context) -> Outcome:
    runs: list[tuple[EmptyMultiple, int]] = [("mix", 1200 if ctx.quick else 3000)]
    if not ctx.quick:
        runs += [("false", 800), ("empty_string", 800), ("empty_list", 800)]
    lines: list[str] = []
    figures: dict[str, Any] = {}
    for n, (mode, deals) in enumerate(runs):
        line, figs = await _one_portal(ctx, mode, deals, seed=71 + n)
        lines.append(line)
        figures[mode] = figs
    return Outcome("; ".join(lines), figures)


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("real-empties", real_empties, limit_s=120 if quick else 300)]
