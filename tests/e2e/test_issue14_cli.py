"""Issue 14, second half: the rough edges a new operator hits, each reproduced through the real
`deal-export` process against the simulator (B-numbers are the issue's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.output import OutputRoot
from pipeline.output.root import STATE_FILE
from pipeline.simulator import FaultConfig
from tests.e2e.helpers import FAST, accounted, cli_env, read_data, read_sidecar, run_cli

REPO = Path(__file__).resolve().parents[2]


async def _run(sim, tmp_path: Path, *args: str, env=None):
    return await run_cli(["run", *args, *FAST], env=env or cli_env(sim), cwd=tmp_path)


def _no_deal_asked(stats: dict) -> bool:
    methods = stats["by_method"]
    return stats["deal_gets"] == 0 and not methods.get("crm.deal.list") and not methods.get("batch")


# ------------------------------------------------------------------------------------ B5


async def test_b5_backfill_config_with_a_text_id_file(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=40, seed=4)
    shutil.copy(REPO / "configs" / "backfill.toml", tmp_path / "backfill.toml")
    (tmp_path / "all_ids.txt").write_text("".join(f"{i}\n" for i in range(1, 41)))
    done = await _run(sim, tmp_path, "--config", "backfill.toml", "--ids", "all_ids.txt")
    assert done.code == 0, done.stderr
    assert "ID column" not in done.stderr
    data_ids, fetch_ids = accounted(tmp_path / "data" / "deals-backfill")
    assert sorted(data_ids + fetch_ids) == list(range(1, 41))


# ------------------------------------------------------------------------------------ B6


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--partition-by", "NOPE"), "--partition-by: 'NOPE' is not a deal field"),
        (("--partition-by", "TITLE"), "transform 'month' needs a date or time field"),
        (
            ("--partition-by", "TITLE", "--partition-transform", "day"),
            "--partition-by with --partition-transform day: transform 'day'",
        ),
    ],
)
@pytest.mark.parametrize("selection", ["file", "discovery"])
async def test_b6_partition_settings_are_checked_before_any_deal(
    simulator, tmp_path: Path, args: tuple[str, ...], expected: str, selection: str
) -> None:
    sim = await simulator(deals=60, seed=6)
    pick = (
        ("--ids", "1-60", "--ids-format", "range")
        if selection == "file"
        else ("--modified-since", "2000-01-01")
    )
    bad = await _run(sim, tmp_path, *pick, "--out", "out", *args)
    assert bad.code == 2, bad.stderr
    assert expected in bad.stderr
    assert "Traceback" not in bad.stderr
    assert _no_deal_asked(sim.stats()), sim.stats()
    assert not (tmp_path / "out").exists(), "nothing may be written to --out"

    fixed = await _run(sim, tmp_path, *pick, "--out", "out")
    assert fixed.code == 0, fixed.stderr


async def test_b6_a_config_file_setting_is_named_as_the_file_spells_it(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=10, seed=6)
    (tmp_path / "c.toml").write_text('[output]\npartition_by = "DATE_CREAT"\n')
    bad = await _run(sim, tmp_path, "--config", "c.toml", "--ids", "1-10", "--ids-format", "range",
                     "--out", "out")  # fmt: skip
    assert bad.code == 2, bad.stderr
    assert "c.toml: [output].partition_by: 'DATE_CREAT' is not a deal field" in bad.stderr
    assert "did you mean DATE_CREATE?" in bad.stderr


# ------------------------------------------------------------------------------------ B7


async def test_b7_a_bare_date_is_midnight_utc(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=30, seed=7)
    done = await _run(sim, tmp_path, "--modified-since", "2000-01-01", "--out", "out")
    assert done.code == 0, done.stderr
    assert read_data(tmp_path / "out").num_rows == len(sim.portal.visible_ids)
    pending = tmp_path / "out" / "_deal_export" / "input.parquet"
    meta = pq.read_schema(pending).metadata[b"deal_export"]
    assert json.loads(meta)["discovery"]["modified_since"] == "2000-01-01T00:00:00+00:00"


# ----------------------------------------------------------------------------------- B13


async def test_b13_retry_on_a_root_being_written_says_locked(simulator, tmp_path: Path) -> None:
    from pipeline.config import OutputConfig

    sim = await simulator(deals=5, seed=1)
    with OutputRoot.open(OutputConfig(root=str(tmp_path / "out")), "holder"):
        done = await run_cli(["retry", "out", "--no-progress"], env=cli_env(sim), cwd=tmp_path)
    assert done.code == 1, done.stderr
    assert "locked by run holder" in done.stderr
    assert "not a finished" not in done.stderr


async def test_b13_out_naming_an_existing_file(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=5, seed=1)
    (tmp_path / "out").write_text("not a directory\n")
    done = await _run(sim, tmp_path, "--ids", "1-5", "--ids-format", "range", "--out", "out")
    assert done.code == 1, done.stderr
    assert "is an existing file, not a directory" in done.stderr
    assert "Errno" not in done.stderr
    again = await run_cli(["retry", "out"], env=cli_env(sim), cwd=tmp_path)
    assert "is an existing file, not a directory" in again.stderr


async def test_b13_retry_with_nothing_to_do_says_so(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=20, seed=1)
    assert (
        await _run(sim, tmp_path, "--ids", "1-20", "--ids-format", "range", "--out", "out")
    ).code == 0
    done = await run_cli(["retry", "out", "--no-progress"], env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert "nothing to retry" in done.stdout
    assert "0 of 0" not in done.stdout


# ---------------------------------------------------------------------- same command again


async def test_the_same_command_again_retries_exactly_the_retryable_failures(
    simulator, tmp_path: Path
) -> None:
    # Request 1 is crm.deal.fields; one of the batches after it fails, with no second attempt.
    # A 502 page (a proxy's fault) spends the attempt; a 500 would first earn the batch a free
    # re-send, as a possible poison deal.
    sim = await simulator(deals=150, seed=5, faults=FaultConfig(script={3: "html_502"}))
    # One crm.deal.get per ID, so the portal's count of gets is the count of IDs retried.
    args = ("--ids", "1-150", "--ids-format", "range", "--out", "out", "--max-attempts", "1")
    args += ("--strategy", "get")
    first = await _run(sim, tmp_path, *args)
    assert first.code == 3, first.stderr
    side = read_sidecar(tmp_path / "out").to_pylist()
    retryable = sorted(r["id"] for r in side if r["stage"] == "fetch" and r["retryable"])
    assert retryable

    sim.set_faults(FaultConfig())
    gets_before = sim.stats()["deal_gets"]
    again = await _run(sim, tmp_path, *args)
    assert again.code == 0, again.stderr
    assert "already holds a completed export" not in again.stderr
    assert sim.stats()["deal_gets"] - gets_before == len(retryable)
    data_ids, fetch_ids = accounted(tmp_path / "out")
    assert sorted(data_ids + fetch_ids) == list(range(1, 151))
    assert len(data_ids) == len(set(data_ids))
    left = read_sidecar(tmp_path / "out").to_pylist()
    assert not [r for r in left if r["stage"] == "fetch" and r["retryable"]]

    # Converged: nothing retryable is left, so the same command is refused as before.
    third = await _run(sim, tmp_path, *args)
    assert third.code == 1
    assert "already holds a completed export" in third.stderr


# ---------------------------------------------------------------------------- nightly state


async def test_start_from_bootstraps_the_first_incremental_run_only(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=60, seed=8)
    nightly = ("--since-last-run", "--out", "out", "--existing-data-behavior", "overwrite")
    bare = await _run(sim, tmp_path, *nightly)
    assert bare.code == 2
    assert "--start-from" in bare.stderr

    first = await _run(sim, tmp_path, *nightly, "--start-from", "2000-01-01")
    assert first.code == 0, first.stderr
    assert read_data(tmp_path / "out").num_rows == len(sim.portal.visible_ids)

    changed = sim.portal.visible_ids[:5]
    sim.touch(changed)
    # Once a watermark exists, --start-from is ignored (a far-future start would find nothing).
    second = await _run(sim, tmp_path, *nightly, "--start-from", "2999-01-01")
    assert second.code == 0, second.stderr
    assert sorted(read_data(tmp_path / "out").column("ID").to_pylist()) == sorted(changed)


async def test_start_from_without_since_last_run_is_a_usage_error(simulator, tmp_path) -> None:
    sim = await simulator(deals=5, seed=1)
    done = await _run(sim, tmp_path, "--ids", "1-5", "--ids-format", "range", "--out", "out",
                      "--start-from", "2026-01-01")  # fmt: skip
    assert done.code == 2
    assert "--start-from applies only with --since-last-run" in done.stderr


async def test_state_show_set_reset_move_the_next_incremental_run(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=50, seed=9)
    env = cli_env(sim)
    nightly = ("--since-last-run", "--out", "out", "--existing-data-behavior", "overwrite")
    assert (await _run(sim, tmp_path, "--modified-since", "2000-01-01", "--out", "out")).code == 0
    state = json.loads((tmp_path / "out" / STATE_FILE).read_text())

    shown = await run_cli(["state", "show", "out"], env=env, cwd=tmp_path)
    assert shown.code == 0, shown.stderr
    assert f"watermark: {state['watermark']}" in shown.stdout
    as_json = await run_cli(["state", "show", "out", "--json"], env=env, cwd=tmp_path)
    assert json.loads(as_json.stdout)["watermark"] == state["watermark"]

    # Nothing changed since the watermark: a night exports nothing. Moved back, it exports all.
    moved = await run_cli(["state", "set", "out", "2000-01-01"], env=env, cwd=tmp_path)
    assert moved.code == 0, moved.stderr
    assert "-> 2000-01-01T00:00:00+00:00" in moved.stdout
    after = json.loads((tmp_path / "out" / STATE_FILE).read_text())
    assert after["watermark"] == "2000-01-01T00:00:00+00:00"
    assert after["schema"] == state["schema"], "the field list for drift reports stays"
    night = await _run(sim, tmp_path, *nightly)
    assert night.code == 0, night.stderr
    assert read_data(tmp_path / "out").num_rows == len(sim.portal.visible_ids)

    reset = await run_cli(["state", "reset", "out"], env=env, cwd=tmp_path)
    assert reset.code == 0, reset.stderr
    shown = await run_cli(["state", "show", "out"], env=env, cwd=tmp_path)
    assert "watermark: none" in shown.stdout
    refused = await _run(sim, tmp_path, *nightly)
    assert refused.code == 2
    assert "--start-from" in refused.stderr


async def test_state_set_is_refused_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    from pipeline.config import OutputConfig

    root = tmp_path / "out"
    env = cli_env(None)
    with OutputRoot.open(OutputConfig(root=str(root)), "holder"):
        before = sorted(p.name for p in root.iterdir())
        for args in (["state", "set", "out", "2026-01-01"], ["state", "reset", "out"]):
            done = await run_cli(args, env=env, cwd=tmp_path)
            assert done.code == 1, done.stderr
            assert "locked by run holder" in done.stderr
        assert sorted(p.name for p in root.iterdir()) == before
    assert not (root / STATE_FILE).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["state", "set", "out", "June"], "TIME must be an ISO 8601 timestamp"),
        (["state", "set", "out", "2026-01-01T00:00"], "2026-01-01T00:00:00+00:00"),
        (["state", "set", "missing", "2026-01-01"], "does not exist"),
        (["state", "show", "missing"], "does not exist"),
        (["state", "reset", "missing"], "does not exist"),
    ],
)
async def test_state_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "out").mkdir()
    done = await run_cli(args, env=cli_env(None), cwd=tmp_path)
    assert done.code in (1, 2)
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


async def test_a_config_files_start_from_is_unused_when_the_command_line_picks_ids(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=10, seed=1)
    (tmp_path / "nightly.toml").write_text(
        '[ids]\nsince_last_run = true\nstart_from = "2026-01-01"\n'
    )
    done = await _run(sim, tmp_path, "--config", "nightly.toml", "--ids", "1-10",
                      "--ids-format", "range", "--out", "out")  # fmt: skip
    assert done.code == 0, done.stderr
