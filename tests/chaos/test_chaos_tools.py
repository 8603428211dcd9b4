"""The suite's own tools: the audit must catch a damaged output, the scan a hidden credential,
the runner must tally honestly."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.chaos.audit import audit_multiples, audit_output, empty_form, visible_data_files
from bench.chaos.harness import SECRET, UNPACED, Context, ScenarioFailed
from bench.chaos.runner import Outcome, Scenario, run_suite
from bench.chaos.secret_scan import scan_tree


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


async def test_audit_catches_an_empty_multiple_that_is_not_an_empty_list(
    exported, tmp_path: Path
) -> None:
    sim, out, _ = exported
    found = audit_multiples(out, sim.portal)
    assert found.empties > 0
    assert found.normalise_rows == 0
    bad = _copy(out, tmp_path, "empty-multiple")
    for victim in visible_data_files(bad):
        table = pq.read_table(victim)
        name = "UF_CRM_1721244482251"  # string_multi: what `false` became before issue 10
        values = table.column(name).to_pylist()
        ids = table.column("ID").to_pylist()
        hit = next(
            (n for n, i in enumerate(ids) if empty_form((sim.portal.deal_wire(i) or {})[name])),
            None,
        )
        if hit is None:
            continue
        values[hit] = ["false"]
        column = pa.array(values, table.schema.field(name).type)
        index = table.schema.get_field_index(name)
        pq.write_table(table.set_column(index, name, column), victim)
        break
    else:
        pytest.fail("no deal with an empty multiple field in the export")
    with pytest.raises(ScenarioFailed, match=r"empty \w+ exported as \['false'\]"):
        audit_multiples(bad, sim.portal)


async def test_audit_wants_each_poison_deal_in_the_sidecar_with_its_code(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=150, seed=9, secret=SECRET)
    poison = sim.portal.visible_ids[7]
    sim.set_poison([poison])
    ctx = Context(work=tmp_path, quick=True)
    done = await ctx.cli(
        ["run", "--ids", "1-170", "--ids-format", "range", "--out", "out", *UNPACED],
        env=ctx.env(sim),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    out, wanted = tmp_path / "out", set(range(1, 171))
    audit = audit_output(out, sim.portal, wanted, expected_failures={poison: "WRONG_ENCODING"})
    assert audit.unanswerable == 1
    assert audit.exported == len(set(sim.portal.visible_ids) & wanted) - 1
    with pytest.raises(ScenarioFailed, match="readable deals"):
        audit_output(out, sim.portal, wanted)
    with pytest.raises(ScenarioFailed, match="not 'INTERNAL_SERVER_ERROR'"):
        audit_output(out, sim.portal, wanted, expected_failures={poison: "INTERNAL_SERVER_ERROR"})
    other = next(i for i in sim.portal.visible_ids if i != poison)
    with pytest.raises(ScenarioFailed, match="is not a sidecar fetch row"):
        audit_output(out, sim.portal, wanted, expected_failures={other: None})


def test_scan_reads_parquet_values_that_compression_hides(tmp_path: Path) -> None:
    token = "chaosHiddenT0kenZ9q4Wv7x"
    urls = [f"/bitrix/show_file.php?auth={token}&fileId={i}" for i in range(2000)]
    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"url": urls}), path, compression="zstd", write_statistics=False)
    assert token.encode() not in path.read_bytes()  # a byte scan alone would miss it
    hits, files = scan_tree(tmp_path, {token})
    assert files == 1
    assert hits == [f"decoded Parquet {path}"]


def test_scan_skips_the_token_file_but_not_a_copy_of_it(tmp_path: Path) -> None:
    token = "chaosAcc3ssT0kenSk1pTest"
    kept = tmp_path / "tokens.json"
    kept.write_text(f'{{"access_token": "{token}"}}')
    assert scan_tree(tmp_path, {token}, skip={kept}) == ([], 0)
    stray = tmp_path / ".tokens.json.1a2b.tmp"
    stray.write_text(kept.read_text())
    hits, files = scan_tree(tmp_path, {token}, skip={kept})
    assert (hits, files) == ([f"file {stray}"], 1)
