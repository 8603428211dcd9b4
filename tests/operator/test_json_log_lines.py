"""In JSON mode every line the CLI writes to stderr is one JSON record of one shape, failures
included, and the last line of stdout is the summary object (what Airflow's XCom reads)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.e2e.helpers import cli_env, run_cli

KEYS = ["ts", "level", "logger", "run_id", "event", "message"]
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FAST = ["--rate", "0", "--operating-budget", "off", "--log-format", "json"]


def records_of(stderr: str) -> list[dict[str, object]]:
    records = []
    for line in stderr.splitlines():
        record = json.loads(line)  # every line, not just the ones that look like JSON
        assert list(record)[: len(KEYS)] == KEYS, line
        assert STAMP.match(str(record["ts"])), line
        assert record["level"] in ("debug", "info", "warning", "error"), line
        records.append(record)
    return records


async def test_a_successful_run_writes_records_and_one_summary_object(
    simulator, tmp_path: Path
) -> None:
    # A binding operating budget (time compressed 300x) makes the pacer log its pauses.
    sim = await simulator(deals=120, seed=2, operating_budget_s=1.0, time_scale=300)
    args = ["run", "--ids", "1-120", "--ids-format", "range", "--out", "out", "--rate", "0"]
    budget = ["--operating-budget", "1", "--time-scale", "300", "--log-format", "json"]
    done = await run_cli([*args, *budget], env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    records = records_of(done.stderr)
    events = {r["event"] for r in records}
    assert "progress" in events
    assert any(r["logger"] == "pipeline.fetch.pacing" for r in records), events
    run_ids = {r["run_id"] for r in records}
    assert len(run_ids) == 1
    assert None not in run_ids
    summary = json.loads(done.stdout.splitlines()[-1])
    assert list(summary)[: len(KEYS)] == KEYS
    assert summary["event"] == "run_finished"
    assert summary["run_id"] in run_ids
    assert summary["exit_code"] == 0
    assert summary["exported"] + summary["unavailable"] == 120
    assert sim.secret not in done.stdout + done.stderr


async def test_usage_errors_are_records_too(tmp_path: Path) -> None:
    env = cli_env(None, BITRIX24_WEBHOOK_URL="http://127.0.0.1:9/rest/1/s3cr3t/")
    unknown = await run_cli(["run", "--log-format", "json", "--bogus"], env=env, cwd=tmp_path)
    missing = await run_cli(["run", "--log-format", "json", "--out", "o"], env=env, cwd=tmp_path)
    by_env = await run_cli(
        ["run", "--out", "o", "--ids", "1-3", "--ids-format", "range", "--headroom", "2"],
        env={**env, "DEAL_EXPORT_LOG_FORMAT": "json"},
        cwd=tmp_path,
    )
    for done in (unknown, missing, by_env):
        assert done.code == 2, done.stderr
        (record,) = records_of(done.stderr)
        assert record["event"] == "run_failed"
        assert record["level"] == "error"
        assert record["exit_code"] == 2
        assert "Traceback" not in done.stderr
    assert "--bogus" in str(records_of(unknown.stderr)[0]["message"])


async def test_config_errors_are_records_too(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[limits]\nno_such_key = 1\nlog_format = "json"\n')
    env = cli_env(None, BITRIX24_WEBHOOK_URL="http://127.0.0.1:9/rest/1/s3cr3t/")
    args = ["run", "--config", "bad.toml", "--ids", "1-3", "--ids-format", "range", "--out", "o"]
    done = await run_cli([*args, "--log-format", "json"], env=env, cwd=tmp_path)
    assert done.code == 2, done.stderr
    (record,) = records_of(done.stderr)
    assert "no_such_key" in str(record["message"])


async def test_a_fatal_portal_error_is_one_record_with_the_run_id(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=10, seed=1)
    sim.revoke_webhook()
    args = ["run", "--ids", "1-5", "--ids-format", "range", "--out", "out", *FAST]
    done = await run_cli(args, env=cli_env(sim), cwd=tmp_path)
    assert done.code == 1
    records = records_of(done.stderr)
    (failure,) = [r for r in records if r["event"] == "run_failed"]
    assert failure["level"] == "error"
    assert failure["logger"] == "pipeline.cli"
    assert failure["run_id"]
    assert "NO_AUTH_FOUND" in str(failure["message"])
    assert sim.secret not in done.stderr


async def test_log_level_hides_the_less_severe_lines(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=60, seed=2, operating_budget_s=1.0, time_scale=300)
    args = ["run", "--ids", "1-60", "--ids-format", "range", "--out", "out", "--rate", "0"]
    budget = ["--operating-budget", "1", "--time-scale", "300", "--log-format", "json"]
    chatty = await run_cli([*args, *budget], env=cli_env(sim), cwd=tmp_path)
    assert any(r["level"] == "info" and r["event"] != "progress"
               for r in records_of(chatty.stderr))  # fmt: skip
    again = [*args, "--existing-data-behavior", "overwrite", *budget, "--log-level", "warning"]
    done = await run_cli(again, env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    logged = [r for r in records_of(done.stderr) if r["event"] != "progress"]
    assert all(r["level"] in ("warning", "error") for r in logged), logged
