"""What an operator meets: ID sources, bad input, exit codes, incremental loads, logs, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.helpers import FAST, cli_env, files_containing, read_data, read_sidecar, run_cli


async def _run(sim, tmp_path: Path, *args: str, stdin: bytes | None = None, env=None):
    return await run_cli(["run", *args, *FAST], env=env or cli_env(sim), cwd=tmp_path, stdin=stdin)


@pytest.mark.parametrize("source", ["text", "csv", "parquet", "stdin", "range"])
async def test_each_id_source_exports_the_same_deals(simulator, tmp_path: Path, source) -> None:
    sim = await simulator(deals=120, seed=3)
    ids = list(range(1, 121))
    stdin = None
    if source == "text":
        (tmp_path / "ids.txt").write_text("# nightly list\n" + "\n".join(map(str, ids)) + "\n")
        args = ["--ids", "ids.txt"]
    elif source == "csv":
        rows = "\n".join(f"{i},deal {i}" for i in ids)
        (tmp_path / "ids.csv").write_text("ID,TITLE\n" + rows + "\n")
        args = ["--ids", "ids.csv"]
    elif source == "parquet":
        pq.write_table(pa.table({"deal_id": pa.array(ids, pa.int64())}), tmp_path / "ids.parquet")
        args = ["--ids", "ids.parquet", "--ids-column", "deal_id"]
    elif source == "stdin":
        stdin = ("\n".join(map(str, ids)) + "\n").encode()
        args = ["--ids", "-"]
    else:
        args = ["--ids", "1-60,61-120", "--ids-format", "range"]
    done = await _run(sim, tmp_path, *args, "--out", "out", stdin=stdin)
    assert done.code == 0, done.stderr
    exported = set(read_data(tmp_path / "out").column("ID").to_pylist())
    assert exported == set(sim.portal.visible_ids) & set(ids)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02\xff\xfe" * 400, ""),
        (b"hello\nworld\nnot an id\n" * 50, ""),
    ],
    ids=["empty", "binary", "garbage"],
)
async def test_bad_id_files_are_usage_errors(simulator, tmp_path: Path, content, message) -> None:
    sim = await simulator(deals=10, seed=1)
    (tmp_path / "ids.txt").write_bytes(content)
    done = await _run(sim, tmp_path, "--ids", "ids.txt", "--out", "out")
    assert done.code == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert message in done.stderr.lower()
    assert not (tmp_path / "out" / "_SUCCESS").exists()


async def test_missing_id_file_is_a_usage_error(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=10, seed=1)
    done = await _run(sim, tmp_path, "--ids", "nope.txt", "--out", "out")
    assert done.code == 2
    assert "nope.txt" in done.stderr
    assert "Traceback" not in done.stderr


async def test_huge_line_is_an_invalid_input_row_not_a_crash(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=30, seed=1)
    (tmp_path / "ids.txt").write_bytes(b"1\n2\n" + b"9" * 200_000 + b"\n3\n")
    done = await _run(sim, tmp_path, "--ids", "ids.txt", "--out", "out")
    assert done.code == 0, done.stderr
    side = read_sidecar(tmp_path / "out")
    assert "input" in side.column("stage").to_pylist()


@pytest.mark.parametrize(
    "url",
    [
        "http://portal.example.com/rest/1/abcdefsecret/",
        "https://portal.example.com/api/abcdefsecret",
        "not a url abcdefsecret",
    ],
    ids=["plain-http-remote", "not-a-webhook-path", "garbage"],
)
async def test_bad_webhook_urls_are_usage_errors_with_the_secret_masked(
    tmp_path: Path, url: str
) -> None:
    env = cli_env(None, BITRIX24_WEBHOOK_URL=url)
    done = await run_cli(
        ["run", "--ids", "1-5", "--ids-format", "range", "--out", "out"], env=env, cwd=tmp_path
    )
    assert done.code == 2, done.stderr
    assert "abcdefsecret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


async def test_unknown_config_key_names_the_key(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=10, seed=1)
    (tmp_path / "c.toml").write_text("[fetch]\nbatchsize = 10\n")
    done = await _run(
        sim, tmp_path, "--config", "c.toml", "--ids", "1-3", "--ids-format", "range", "--out", "out"
    )
    assert done.code == 2
    assert "batchsize" in done.stderr
    assert "batch_size" in done.stderr


async def test_wrong_secret_is_fatal_exit_1_with_the_secret_masked(simulator, tmp_path) -> None:
    sim = await simulator(deals=10, seed=1)
    wrong = sim.webhook_url.replace(sim.secret, "wr0ngsecretvalue")
    env = cli_env(None, BITRIX24_WEBHOOK_URL=wrong)
    done = await _run(
        sim, tmp_path, "--ids", "1-5", "--ids-format", "range", "--out", "out", env=env
    )
    assert done.code == 1, done.stderr
    assert "NO_AUTH_FOUND" in done.stderr or "webhook" in done.stderr.lower()
    assert "wr0ngsecretvalue" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


async def test_existing_completed_output_is_refused_by_default(simulator, tmp_path) -> None:
    sim = await simulator(deals=20, seed=1)
    args = ("--ids", "1-20", "--ids-format", "range", "--out", "out")
    assert (await _run(sim, tmp_path, *args)).code == 0
    again = await _run(sim, tmp_path, *args)
    assert again.code == 1
    assert "overwrite" in again.stderr
    over = await _run(sim, tmp_path, *args, "--existing-data-behavior", "overwrite")
    assert over.code == 0, over.stderr


async def test_incremental_watermark_exports_only_what_changed(simulator, tmp_path) -> None:
    sim = await simulator(deals=200, seed=12)
    first = await _run(sim, tmp_path, "--modified-since", "2000-01-01T00:00:00Z", "--out", "out")
    assert first.code == 0, first.stderr
    assert read_data(tmp_path / "out").num_rows == len(sim.portal.visible_ids)
    state = json.loads((tmp_path / "out" / "_deal_export" / "state.json").read_text())
    assert state["watermark"]

    changed = sim.portal.visible_ids[5:12]
    sim.touch(changed)
    second = await _run(
        sim, tmp_path, "--since-last-run", "--out", "out", "--existing-data-behavior", "overwrite"
    )
    assert second.code == 0, second.stderr
    assert sorted(read_data(tmp_path / "out").column("ID").to_pylist()) == sorted(changed)


async def test_json_logs_are_json_and_secret_free(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=50, seed=1)
    done = await run_cli(
        [
            "run",
            "--ids",
            "1-50",
            "--ids-format",
            "range",
            "--out",
            "out",
            "--rate",
            "0",
            "--operating-budget",
            "off",
            "--log-format",
            "json",
        ],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert records
    # The summary is one JSON object, the last line of stdout (what Airflow's XCom reads).
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["event"] == "run_finished"
    assert summary["exit_code"] == 0
    assert summary["exported"] + summary["failed"] == 50
    everything = done.stdout + done.stderr
    assert sim.secret not in everything
    assert not files_containing(tmp_path / "out", sim.secret)


async def test_resuming_a_completed_output_with_invalid_lines_changes_nothing(
    simulator, tmp_path
) -> None:
    sim = await simulator(deals=40, seed=1)
    (tmp_path / "ids.txt").write_text("\n".join([*map(str, range(1, 41)), "x1", "7.5"]) + "\n")
    args = ("--ids", "ids.txt", "--out", "out", "--chunk-size", "10")
    assert (await _run(sim, tmp_path, *args)).code == 0
    before = sorted(read_data(tmp_path / "out").column("ID").to_pylist())
    again = await _run(sim, tmp_path, *args, "--existing-data-behavior", "resume")
    assert again.code == 0, again.stderr
    assert sorted(read_data(tmp_path / "out").column("ID").to_pylist()) == before
    side = read_sidecar(tmp_path / "out")
    assert side.column("stage").to_pylist().count("input") == 2


async def test_fatal_error_in_json_mode_is_one_json_record(simulator, tmp_path) -> None:
    sim = await simulator(deals=10, seed=1)
    sim.revoke_webhook()
    done = await run_cli(
        [
            "run",
            "--ids",
            "1-5",
            "--ids-format",
            "range",
            "--out",
            "out",
            "--log-format",
            "json",
            "--rate",
            "0",
            "--operating-budget",
            "off",
        ],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert done.code == 1
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    failure = [r for r in records if r.get("event") == "run_failed"]
    assert len(failure) == 1
    assert "NO_AUTH_FOUND" in failure[0]["message"]
    assert failure[0]["message"].count("refused") <= 1
    assert sim.secret not in done.stderr


async def test_a_webhook_user_who_can_read_no_deal_is_not_a_success(simulator, tmp_path) -> None:
    sim = await simulator(deals=60, seed=1, can_read_deals=False)
    done = await _run(sim, tmp_path, "--ids", "1-60", "--ids-format", "range", "--out", "out")
    assert done.code == 1, done.stdout + done.stderr
    assert "permissions" in done.stdout


async def test_retryable_failures_hold_the_watermark_back(simulator, tmp_path) -> None:
    from pipeline.simulator import FaultConfig

    sim = await simulator(deals=150, seed=5)
    first = await _run(sim, tmp_path, "--modified-since", "2000-01-01T00:00:00Z", "--out", "out")
    assert first.code == 0, first.stderr
    mark = json.loads((tmp_path / "out" / "_deal_export" / "state.json").read_text())["watermark"]

    # Night 2: some deals changed, and the portal fails every batch they are in.
    changed = sim.portal.visible_ids[:20]
    sim.touch(changed)
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    night2 = await _run(
        sim,
        tmp_path,
        "--since-last-run",
        "--out",
        "out",
        "--existing-data-behavior",
        "overwrite",
        "--max-attempts",
        "1",
    )
    assert night2.code == 3, night2.stderr
    kept = json.loads((tmp_path / "out" / "_deal_export" / "state.json").read_text())["watermark"]
    assert kept == mark, "a night with retryable failures must not move the watermark on"

    # Night 3 replaces night 2's output, sidecar included, yet the changed deals come back.
    sim.set_faults(FaultConfig())
    night3 = await _run(
        sim, tmp_path, "--since-last-run", "--out", "out", "--existing-data-behavior", "overwrite"
    )
    assert night3.code == 0, night3.stderr
    assert set(changed) <= set(read_data(tmp_path / "out").column("ID").to_pylist())


async def test_one_500_on_the_fields_call_does_not_end_a_run(simulator, tmp_path) -> None:
    from pipeline.simulator import FaultConfig

    # Request 1 of the run is crm.deal.fields; --max-attempts 1 is a per-deal budget.
    sim = await simulator(deals=30, seed=1, faults=FaultConfig(script={1: "error_500"}))
    done = await _run(
        sim,
        tmp_path,
        "--ids",
        "1-30",
        "--ids-format",
        "range",
        "--out",
        "out",
        "--max-attempts",
        "1",
    )
    assert done.code == 0, done.stderr
    assert sim.stats()["faults"]


async def test_nightly_overwrite_reports_a_new_field(simulator, tmp_path) -> None:
    args = ("--ids", "1-40", "--ids-format", "range", "--out", "out")
    night1 = await simulator(deals=40, seed=2, user_fields=("string",))
    first = await _run(night1, tmp_path, *args)
    assert first.code == 0, first.stderr
    assert "changed since the previous run" not in first.stdout
    # The same portal the next night, with a user field added by its admin.
    night2 = await simulator(deals=40, seed=2, user_fields=("string", "url"))
    second = await _run(night2, tmp_path, *args, "--existing-data-behavior", "overwrite")
    assert second.code == 0, second.stderr
    added = "field added: UF_CRM_1721244500008"
    assert "fields changed since the previous run" in second.stdout
    assert added in second.stdout
    assert any("schema drift" in line and added in line for line in second.stderr.splitlines())
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["schema_drift"]["added"] == ["UF_CRM_1721244500008"]
    assert manifest["schema_drift"]["changes"] == [added]
