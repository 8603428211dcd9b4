"""The Python API (`from pipeline import export, retry`) against the simulator on 127.0.0.1.

The synchronous calls run `asyncio.run` themselves, so each one is made from a worker thread
(`asyncio.to_thread`) while the simulator keeps serving on the test's loop: the same situation as
an Airflow or Dagster worker thread, which has no loop of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import traceback
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

import pipeline
from pipeline import (
    ExportResult,
    FatalPortalError,
    OutputError,
    UsageError,
    export,
    export_async,
    retry,
)
from pipeline.api import _read_iterable
from pipeline.cli import cli
from pipeline.simulator import FaultConfig, RunningSimulator
from tests.e2e.helpers import accounted, read_sidecar

#: No client-side pacing: these tests are about the API, not limits.
FAST: dict[str, Any] = {"rate": 0, "operating_budget": "off"}
SINCE_2000 = datetime(2000, 1, 1, tzinfo=UTC)
FAKE_WEBHOOK = "https://portal.example.com/rest/1/s3cretvalue42/"
OTHER_WEBHOOK = "https://portal.example.com/rest/7/an0thersecret99/"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API reads the CLI's environment variables: start every test without any."""
    for name in list(os.environ):
        if name.startswith(("BITRIX24_", "DEAL_EXPORT_")):
            monkeypatch.delenv(name)


def _read_json(path: str) -> Any:
    return json.loads(Path(path).read_text())


# -- the README examples ------------------------------------------------------------------------
# Their bodies, verbatim but for the framework objects: the Airflow task's `data_interval_start`
# and the Dagster asset's upstream `deal_ids` become parameters, `out` is a parameter instead of
# the bucket, AirflowException / dagster.Failure is RuntimeError, MaterializeResult(metadata=...)
# is the metadata dict.


def airflow_export_deals(out: str, data_interval_start: datetime) -> dict[str, object]:
    from pipeline import export, retry

    result = export(
        out=out,
        modified_since=data_interval_start,
        existing_data_behavior="overwrite",
    )
    if result.exit_code == 3:
        # Some deals failed for reasons that may pass (timeouts, 5xx): one more pass now.
        result = retry(out=out)
    if not result.ok:
        raise RuntimeError(f"deal export incomplete: {result.failures_by_reason}")
    return result.as_dict()


def dagster_bitrix24_deals(out: str, deal_ids: list[int]) -> dict[str, object]:
    from pipeline import export

    result = export(out=out, ids=deal_ids, existing_data_behavior="overwrite")
    if not result.ok:
        raise RuntimeError(f"deal export incomplete: {result.failures_by_reason}")
    return {
        "exported": result.exported,
        "unavailable": result.failed_permanent,
        "invalid_ids": result.invalid,
        "run_id": result.run_id,
        "manifest": result.manifest,
    }


async def test_the_airflow_example_exports_every_visible_deal(
    sim: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", sim.webhook_url)
    out = str(tmp_path / "deals")
    xcom = await asyncio.to_thread(airflow_export_deals, out, SINCE_2000)
    assert json.loads(json.dumps(xcom)) == xcom, "XCom needs a JSON-ready value"
    assert xcom["exit_code"] == 0
    assert xcom["ok"] is True
    data_ids, _ = accounted(Path(out))
    assert sorted(data_ids) == sorted(sim.portal.visible_ids)
    assert xcom["exported"] == len(sim.portal.visible_ids)
    assert xcom["watermark"] is not None
    # The same interval again replaces the root (existing_data_behavior="overwrite").
    again = await asyncio.to_thread(airflow_export_deals, out, SINCE_2000)
    assert again["exported"] == xcom["exported"]
    assert again["run_id"] != xcom["run_id"]


async def test_the_dagster_example_exports_the_upstream_ids(
    sim: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", sim.webhook_url)
    out = str(tmp_path / "deals")
    wanted = sim.portal.visible_ids[:40]
    metadata = await asyncio.to_thread(dagster_bitrix24_deals, out, [*wanted, wanted[0], 0])
    assert metadata["exported"] == len(wanted)
    assert metadata["unavailable"] == 0
    assert metadata["invalid_ids"] == 1
    assert _read_json(str(metadata["manifest"]))["completed"]


# -- ID sources ---------------------------------------------------------------------------------


async def test_ids_from_a_generator_are_validated_and_deduplicated(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    visible = sim.portal.visible_ids[:30]
    consumed: list[int] = []

    def generate() -> Iterator[int]:
        for deal_id in [*visible, visible[3], 0, -4, 2**63]:
            consumed.append(deal_id)
            yield deal_id

    out = tmp_path / "out"
    result = await asyncio.to_thread(
        export, out=out, ids=generate(), webhook_url=sim.webhook_url, **FAST
    )
    assert isinstance(result, ExportResult)
    assert result.ok
    assert len(consumed) == len(visible) + 4, "the generator is read once, to its end"
    assert (result.requested, result.unique, result.duplicates) == (31, 30, 1)
    assert (result.exported, result.invalid) == (30, 3)
    side = read_sidecar(out)
    inputs = side.filter(pc.equal(side.column("stage"), "input"))
    assert sorted(inputs.column("raw_value").to_pylist()) == sorted(["-4", "0", str(2**63)])
    assert sorted(inputs.column("line").to_pylist()) == [32, 33, 34]  # item numbers, 1-based
    assert result.sidecar == f"{result.output}/_errors"


class _NumpyLikeInt:
    """An integer type that is not `int` (numpy's int64 behaves so): accepted through __index__."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_iterable_ids_are_read_into_a_compact_array_not_a_python_list() -> None:
    n = 1_000_000
    tracemalloc.start()
    try:
        idset = _read_iterable(i for i in range(n, 0, -1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(idset) == n
    assert idset.ids[0].as_py() == 1
    # A list of a million ints alone holds ~36 MB (8 MB of pointers, 28 MB of int objects).
    assert peak < 20 * 2**20, f"reading {n:,} IDs peaked at {peak / 2**20:.1f} MiB"
    assert len(_read_iterable([_NumpyLikeInt(5), 7])) == 2


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("12,13", "ids must be an iterable of ints, not str"),
        (12, "ids must be an iterable of ints, not int"),
        ([1, 2.5], "ids: item 2 is float 2.5, not an int"),
        ([1, "3"], "ids: item 2 is str '3', not an int"),
        ([True], "ids: item 1 is bool True, not an int"),
        ([], "ids holds no deal IDs (the iterable is empty)"),
        ([0, -1], "ids holds no valid deal ID: all 2 values are invalid"),
    ],
)
def test_bad_iterables_are_usage_errors(ids: Any, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        export(out="unused", ids=ids, webhook_url=FAKE_WEBHOOK)
    assert message in str(caught.value)


@pytest.mark.parametrize("id_range", [range(5, 25), "5-14,15-24"])
async def test_an_id_range(sim: RunningSimulator, tmp_path: Path, id_range: range | str) -> None:
    result = await asyncio.to_thread(
        export, out=tmp_path / "out", id_range=id_range, webhook_url=sim.webhook_url, **FAST
    )
    assert (result.requested, result.unique) == (20, 20)
    data_ids, fetch_ids = accounted(tmp_path / "out")
    assert sorted(data_ids + fetch_ids) == list(range(5, 25))


async def test_an_ids_file_in_the_format_its_name_says(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    wanted = sim.portal.visible_ids[:12]
    csv = tmp_path / "won.csv"
    csv.write_text("TITLE,ID\n" + "".join(f"deal {i},{i}\n" for i in wanted) + "x,12abc\n")
    result = await asyncio.to_thread(
        export, out=tmp_path / "out", ids_file=csv, webhook_url=sim.webhook_url, **FAST
    )
    assert (result.exported, result.invalid) == (12, 1)
    text = tmp_path / "ids.txt"
    text.write_text("\n".join(map(str, wanted)) + "\n")
    again = await asyncio.to_thread(
        export,
        out=tmp_path / "out2",
        ids_file=str(text),
        webhook_url=sim.webhook_url,
        partition_by="none",
        **FAST,
    )
    assert again.exported == 12
    assert list((tmp_path / "out2").glob("part-*.parquet")), "partition_by='none': flat files"


async def test_since_last_run_across_two_calls(sim: RunningSimulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    common: dict[str, Any] = {
        "out": out,
        "webhook_url": sim.webhook_url,
        "existing_data_behavior": "overwrite",
        **FAST,
    }
    first = await asyncio.to_thread(export, modified_since=SINCE_2000, **common)
    assert first.ok
    assert first.exported == len(sim.portal.visible_ids)
    assert first.watermark is not None
    changed = sim.portal.visible_ids[10:25]
    sim.touch(changed)
    second = await asyncio.to_thread(export, since_last_run=True, **common)
    assert second.ok
    data_ids, _ = accounted(out)
    assert set(changed) <= set(data_ids)
    assert second.exported < first.exported, "the second call asked only for the changes"
    assert second.watermark is not None
    assert second.watermark >= first.watermark


async def test_since_last_run_without_a_previous_run_says_what_to_do(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="holds no watermark"):
        await asyncio.to_thread(
            export, out=tmp_path / "out", since_last_run=True, webhook_url=sim.webhook_url
        )


# -- retry --------------------------------------------------------------------------------------


async def test_retryable_failures_return_exit_code_3_and_retry_folds_them_in(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(deals=120, seed=5)
    out = tmp_path / "out"
    # 502 pages (a proxy's fault) spend the one attempt; a 500 would first earn each batch a
    # free re-send, as a possible poison deal.
    sim.set_faults(FaultConfig(html_502=0.5, methods=frozenset({"batch"}), seed=4))
    first = await asyncio.to_thread(
        export,
        out=out,
        id_range="1-120",
        webhook_url=sim.webhook_url,
        max_attempts=1,
        concurrency=1,
        chunk_size=40,
        **FAST,
    )
    assert first.exit_code == 3, "the test needs retryable failures to retry"
    assert not first.ok
    assert first.failed_retryable > 0
    assert sum(first.failures_by_reason["retryable"].values()) == first.failed_retryable
    sim.set_faults(FaultConfig())
    second = await asyncio.to_thread(retry, out=out, webhook_url=sim.webhook_url, **FAST)
    assert second.ok
    assert second.exported == first.failed_retryable - second.failed_permanent
    assert dict(second.failures_by_reason["retryable"]) == {}
    data_ids, fetch_ids = accounted(out)
    assert len(data_ids) == len(set(data_ids))
    assert set(data_ids) == set(sim.portal.visible_ids) & set(range(1, 121))
    assert not set(data_ids) & set(fetch_ids)


# -- errors: the CLI's messages, secrets masked -------------------------------------------------


def _cli_error(args: list[str], tmp_path: Path) -> str:
    runner = CliRunner()
    done = runner.invoke(
        cli,
        ["run", "--out", str(tmp_path / "cli"), "--no-progress", *args],
        env={"BITRIX24_WEBHOOK_URL": FAKE_WEBHOOK},
    )
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if line.startswith("deal-export: error: ")]
    assert len(lines) == 1, done.output
    return lines[0].removeprefix("deal-export: error: ")


@pytest.mark.parametrize(
    ("kwargs", "args"),
    [
        ({"concurrency": 300}, ["--concurrency", "300"]),
        ({"batch_size": 51}, ["--batch-size", "51"]),
        ({"max_attempts": 0}, ["--max-attempts", "0"]),
        ({"chunk_size": 0}, ["--chunk-size", "0"]),
        ({"headroom": 1.0}, ["--headroom", "1"]),
        ({"operating_budget": "sometimes"}, ["--operating-budget", "sometimes"]),
        ({"plan": "custom"}, ["--plan", "custom"]),
        ({"webhook_url": "http://portal.example.com/rest/1/s3cretvalue42/"},
         ["--webhook", "http://portal.example.com/rest/1/s3cretvalue42/"]),
        ({"modified_since": datetime(2026, 1, 1)}, ["--modified-since", "2026-01-01T00:00:00"]),
        ({"id_range": "5-1"}, ["--ids", "5-1", "--ids-format", "range"]),
        ({"id_range": range(0, 3)}, ["--ids", "0-2", "--ids-format", "range"]),
    ],
)  # fmt: skip
def test_bad_settings_raise_the_usage_error_the_cli_prints(
    kwargs: dict[str, Any], args: list[str], tmp_path: Path
) -> None:
    source: dict[str, Any] = {} if {"modified_since", "id_range"} & set(kwargs) else {"ids": [1]}
    settings = {"webhook_url": FAKE_WEBHOOK, **source, **kwargs}
    cli_args = args if "--ids" in args or "--modified-since" in args else ["--ids", "1", *args]
    if "--ids" in cli_args and cli_args[cli_args.index("--ids") + 1] == "1":
        (tmp_path / "1").write_text("1\n")
        cli_args[cli_args.index("--ids") + 1] = str(tmp_path / "1")
    with pytest.raises(UsageError) as caught:
        export(out=tmp_path / "api", **settings)
    # The same check and text as the CLI's, naming the argument where the CLI names its flag.
    assert str(caught.value) == _cli_error(cli_args, tmp_path).replace(args[0], next(iter(kwargs)))
    assert "s3cretvalue42" not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": [1], "id_range": "1-3"}, "pass only one ID source, not ids and id_range"),
        (
            {"ids_file": "x.txt", "since_last_run": True},
            "pass only one ID source, not ids_file and since_last_run",
        ),
        ({"ids": [1], "ids_column": "ID"}, "ids_column and ids_format apply to ids_file only"),
        ({"id_range": range(1, 10, 2)}, "id_range must have step 1"),
        ({"id_range": range(3, 3)}, "id_range range(3, 3) is empty"),
        ({}, "say which deals to export: ids=, ids_file=, id_range="),
    ],
)
def test_api_only_mistakes_name_the_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        export(out="unused", webhook_url=FAKE_WEBHOOK, **kwargs)
    assert message in str(caught.value)


def test_without_credentials_the_error_names_the_variable() -> None:
    with pytest.raises(UsageError, match="BITRIX24_WEBHOOK_URL"):
        export(out="unused", ids=[1])


async def test_a_sync_call_inside_a_running_loop_points_at_the_async_twin() -> None:
    with pytest.raises(UsageError, match=r"await export_async\(\) instead"):
        export(out="unused", ids=[1])


async def test_export_async_runs_on_the_callers_loop(sim: RunningSimulator, tmp_path: Path) -> None:
    result = await export_async(
        out=tmp_path / "out", ids=range(1, 21), webhook_url=sim.webhook_url, **FAST
    )
    assert result.unique == 20
    assert result.ok


async def test_a_wrong_secret_is_fatal_and_masked_everywhere_in_the_exception(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    wrong = "wr0ngsecretvalue77"
    url = sim.webhook_url.replace(sim.secret, wrong)
    with pytest.raises(FatalPortalError) as caught:
        await asyncio.to_thread(
            export, out=tmp_path / "out", id_range="1-10", webhook_url=url, **FAST
        )
    printed = "".join(traceback.format_exception(caught.value))
    assert wrong not in printed
    assert sim.secret not in printed
    assert str(caught.value)


async def test_a_locked_output_is_an_output_error(sim: RunningSimulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = await asyncio.to_thread(
        export, out=out, id_range="1-5", webhook_url=sim.webhook_url, **FAST
    )
    assert first.ok
    with pytest.raises(OutputError):  # existing_data_behavior="error" is the default
        await asyncio.to_thread(
            export, out=out, id_range="1-5", webhook_url=sim.webhook_url, **FAST
        )


# -- the surface --------------------------------------------------------------------------------


async def test_the_result_is_frozen_and_json_ready(sim: RunningSimulator, tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        export, out=tmp_path / "out", id_range="1-30", webhook_url=sim.webhook_url, **FAST
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.exit_code = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.failures_by_reason["permanent"]["x"] = 1  # type: ignore[index]
    as_dict = result.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["manifest"] == f"{result.output}/_manifest.json"
    manifest = _read_json(result.manifest)
    assert manifest["run_id"] == result.run_id
    assert result.seconds >= 0


async def test_no_handler_is_added_and_the_root_logger_is_untouched(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    ours, root = logging.getLogger("pipeline"), logging.getLogger()
    before = (list(ours.handlers), ours.level, list(root.handlers), root.level)
    filters_before = list(ours.filters)
    await asyncio.to_thread(
        export, out=tmp_path / "out", id_range="1-5", webhook_url=sim.webhook_url, **FAST
    )
    assert (list(ours.handlers), ours.level, list(root.handlers), root.level) == before
    assert ours.filters == filters_before, "the masking filter is removed after the call"


def test_import_pipeline_stays_cheap() -> None:
    code = (
        "import sys, pipeline; "
        "heavy = [m for m in ('pyarrow', 'aiohttp', 'pipeline.run', 'pipeline.api') "
        "if m in sys.modules]; "
        "print(','.join(heavy)); "
        "from pipeline import export, retry, ExportResult, UsageError; "
        "print(export.__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    heavy, module = done.stdout.splitlines()
    assert heavy == ""
    assert module == "pipeline.api"
    assert set(pipeline.__all__) >= {"export", "retry", "ExportResult", "UsageError"}
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None


def test_unknown_attributes_still_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = pipeline.exprot


def test_retry_of_a_root_without_an_export_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is not a finished deal-export output"):
        retry(out=tmp_path / "nothing", webhook_url=FAKE_WEBHOOK)


async def test_oauth_from_a_token_file_saves_the_rotated_pair(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator(deals=40, seed=6)
    oauth = sim.config.oauth
    for name, value in {
        "BITRIX24_OAUTH_ENDPOINT": sim.oauth_endpoint,
        "BITRIX24_OAUTH_CLIENT_ID": oauth.client_id,
        "BITRIX24_OAUTH_CLIENT_SECRET": oauth.client_secret,
        "BITRIX24_OAUTH_TOKEN_URL": sim.token_url,
    }.items():
        monkeypatch.setenv(name, value)
    tokens = tmp_path / "tokens.json"
    old = {"access_token": sim.access_token, "refresh_token": sim.refresh_token}
    tokens.write_text(json.dumps(old))
    sim.expire_access_token()
    result = await asyncio.to_thread(
        export, out=tmp_path / "out", id_range="1-40", token_file=tokens, **FAST
    )
    assert result.ok
    assert sim.stats()["oauth_refreshes"] == 1
    saved = _read_json(str(tokens))
    assert (saved["access_token"], saved["refresh_token"]) == (
        sim.access_token,
        sim.refresh_token,
    )
    assert saved["refresh_token"] != old["refresh_token"]


def test_records_of_pipeline_loggers_are_masked_during_a_call() -> None:
    from pipeline.api import _Secrets

    # A secret no other test uses: a CLI test's handler (left on the `pipeline` logger, as the
    # CLI never removes it) masks the secrets of its own run.
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    ours = logging.getLogger("pipeline")
    keep = Keep(logging.DEBUG)
    ours.addHandler(keep)
    level = ours.level
    ours.setLevel(logging.INFO)
    child = logging.getLogger("pipeline.fetch.client")
    try:
        with _Secrets(OTHER_WEBHOOK).active(log=False):
            child.warning("calling %s", OTHER_WEBHOOK + "batch")
            child.warning("bare secret: an0thersecret99")
        child.warning("after the call: an0thersecret99")
    finally:
        ours.removeHandler(keep)
        ours.setLevel(level)
    assert seen[:2] == [
        "calling https://portal.example.com/rest/7/***/batch",
        "bare secret: ***",
    ]
    assert seen[2] == "after the call: an0thersecret99", "the filter is gone after the call"


async def test_progress_and_log_lines_only_when_asked(
    sim: RunningSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common: dict[str, Any] = {"id_range": "1-60", "webhook_url": sim.webhook_url, **FAST}
    await asyncio.to_thread(export, out=tmp_path / "quiet", **common)
    quiet = capsys.readouterr()
    assert "progress:" not in quiet.err
    assert "exported 5" not in quiet.err
    ours = logging.getLogger("pipeline")
    level = ours.level
    ours.setLevel(logging.NOTSET)  # as in a fresh process (a CLI test may have set it)
    try:
        await asyncio.to_thread(export, out=tmp_path / "loud", progress=True, log=True, **common)
    finally:
        ours.setLevel(level)
    loud = capsys.readouterr()
    assert "progress: 60/60 deals" in loud.err
    assert "INFO exported" in loud.err
    assert sim.secret not in loud.err + loud.out


@pytest.mark.parametrize("bad", [{"id_range": "1-3"}, {"concurrency": 300}])
def test_a_generator_is_not_read_when_the_call_is_refused(bad: dict[str, Any]) -> None:
    generator = (i for i in range(1, 4))
    with pytest.raises(UsageError):
        export(out="unused", ids=generator, webhook_url=FAKE_WEBHOOK, **bad)
    assert next(generator) == 1, "a generator can be read only once: refuse before reading"
