"""`deal-export compact`: optimize and vacuum a Delta output, never below a safe retention."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import FetchConfig
from pipeline.config_load import IdsConfig
from pipeline.run import export
from pipeline.simulator import FaultConfig
from tests.output.delta.helpers import delta_config, fetch_failures, rows, table_of


def _data_files(root: Path) -> list[Path]:
    # The log's checkpoints are Parquet files too, but no data file.
    return [p for p in root.rglob("*.parquet") if not {"_errors", "_delta_log"} & set(p.parts)]


async def test_compact_merges_small_files_and_vacuum_keeps_a_safe_retention(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=120, seed=3)
    root = tmp_path / "deals"
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    await export(
        delta_config(sim, root, fetch=FetchConfig(max_attempts=1), chunk_size=10),
        IdsConfig(source="1-10", format="range"),
    )
    sim.set_faults(FaultConfig())
    await export(
        delta_config(sim, root, chunk_size=10),
        IdsConfig(source="11-120", format="range"),
    )
    before_rows = rows(root)
    failures = fetch_failures(root)
    live_before = len(table_of(root).file_uris())

    runner = CliRunner()
    done = runner.invoke(cli, ["compact", str(root)])
    assert done.exit_code == 0, done.output
    assert "data table:" in done.output
    assert "errors table:" in done.output
    assert len(table_of(root).file_uris()) < live_before
    # Files just replaced are younger than 7 days: the default retention keeps them.
    assert len(_data_files(root)) > len(table_of(root).file_uris())
    assert rows(root).equals(before_rows)

    refused = runner.invoke(cli, ["compact", str(root), "--retention-hours", "0"])
    assert refused.exit_code == 2
    assert "--force" in refused.output

    forced = runner.invoke(cli, ["compact", str(root), "--retention-hours", "0", "--force"])
    assert forced.exit_code == 0, forced.output
    assert len(_data_files(root)) == len(table_of(root).file_uris())
    assert rows(root).equals(before_rows)
    assert fetch_failures(root) == failures


def test_compact_of_a_file_or_a_broken_log_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    result = CliRunner().invoke(cli, ["compact", str(a_file)])
    assert result.exit_code == 1
    assert "Delta table operation failed: OSError" in result.output
    broken = tmp_path / "broken" / "_delta_log"
    broken.mkdir(parents=True)
    (broken / "00000000000000000000.json").write_text('{"commitInfo":{"timestamp":17')
    result = CliRunner().invoke(cli, ["compact", str(broken.parent)])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1, result.output  # no native stack trace under it
    assert "Traceback" not in result.output
    assert "\x1b[" not in result.output


def test_compact_refuses_a_folder_output(tmp_path: Path) -> None:
    (tmp_path / "part-000000-0.parquet").write_bytes(b"")
    result = CliRunner().invoke(cli, ["compact", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a Delta table" in result.output
