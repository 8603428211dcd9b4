"""The suite's own tools: the audit must catch a damaged output, the runner must tally honestly."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.chaos.audit import audit_output, visible_data_files
from bench.chaos.harness import SECRET, UNPACED, Context, ScenarioFailed
from bench.chaos.runner import Outcome, Scenario, run_suite


@pytest.fixture
async def exported(simulator, tmp_path: Path):
    sim = await simulator(deals=150, seed=9, secret=SECRET)
    ctx = Context(work=tmp_path, quick=True)
    done = await ctx.cli(
        ["run", "--ids", "1-170", "--ids-format", "range", "--out", "out", *UNPACED],
        env=ctx.env(sim),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    return sim, tmp_path / "out", set(range(1, 171))


async def test_audit_accepts_an_intact_export(exported) -> None:
    sim, out, wanted = exported
    audit = audit_output(out, sim.portal, wanted, invalid_lines=0)
    assert audit.exported == len(set(sim.portal.visible_ids) & wanted)
    assert audit.values_checked == audit.exported


def _copy(out: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(out, tmp_path / name))


async def test_audit_catches_a_changed_value(exported, tmp_path: Path) -> None:
    sim, out, wanted = exported
    bad = _copy(out, tmp_path, "changed")
    victim = visible_data_files(bad)[0]
    table = pq.read_table(victim)
    titles = table.column("TITLE").to_pylist()
    titles[0] = (titles[0] or "") + " (edited)"
    index = table.schema.get_field_index("TITLE")
    pq.write_table(table.set_column(index, "TITLE", [titles]), victim)
    with pytest.raises(ScenarioFailed, match="column TITLE"):
        audit_output(bad, sim.portal, wanted)


async def test_audit_catches_a_lost_sidecar_and_a_doubled_file(exported, tmp_path: Path) -> None:
    sim, out, wanted = exported
    lost = _copy(out, tmp_path, "lost")
    shutil.rmtree(lost / "_errors")
    with pytest.raises(ScenarioFailed, match="unaccounted"):
        audit_output(lost, sim.portal, wanted)

    doubled = _copy(out, tmp_path, "doubled")
    first = visible_data_files(doubled)[0]
    shutil.copy(first, first.with_name("part-copy.parquet"))
    with pytest.raises(ScenarioFailed, match="twice"):
        audit_output(doubled, sim.portal, wanted)


async def test_audit_catches_a_deleted_deal_in_the_data(exported, tmp_path: Path) -> None:
    sim, out, wanted = exported
    gone = sorted(set(sim.portal.visible_ids) & wanted)[0]
    sim.sim.portal.delete([gone])
    with pytest.raises(ScenarioFailed, match="deleted/hidden deals exported"):
        audit_output(out, sim.portal, wanted)
    table = pq.read_table(visible_data_files(out)[0])
    assert pc.min(table.column("ID")).as_py() >= 1


async def test_runner_prints_pass_fail_and_the_tally(tmp_path: Path) -> None:
    async def good(ctx: Context) -> Outcome:
        return Outcome("fine", {"n": 1})

    async def bad(ctx: Context) -> Outcome:
        raise ScenarioFailed("it broke")

    async def slow(ctx: Context) -> Outcome:
        import asyncio

        await asyncio.Event().wait()  # never set: the time limit must end it
        return Outcome("unreachable")

    out = io.StringIO()
    scenarios = [Scenario("good", good, 5), Scenario("bad", bad, 5), Scenario("slow", slow, 0.2)]
    suite = await run_suite(scenarios, quick=True, work=tmp_path, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("PASS good (")
    assert lines[0].endswith(") fine")
    assert lines[1] == "FAIL bad: it broke"
    assert lines[2] == "FAIL slow: did not finish within 0 s"
    assert lines[3] == "1 passed, 2 failed"
    assert suite.as_dict()["scenarios"][0]["figures"] == {"n": 1}
