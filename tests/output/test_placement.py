"""An output never lands where another export's reader looks: over an export of the other
format, or below another export's root (every deal it holds would be read twice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import UsageError
from pipeline.output.placement import check_placement


def _folder_export(root: Path) -> Path:
    (root / "_checkpoints").mkdir(parents=True)
    (root / "_manifest.json").write_text("{}")
    (root / "DATE_CREATE_month=2024-01").mkdir()
    return root


def _delta_table(root: Path) -> Path:
    (root / "_delta_log").mkdir(parents=True)
    (root / "_errors" / "_delta_log").mkdir(parents=True)
    return root


def test_a_delta_table_is_refused_over_a_folder_export_and_the_reverse(tmp_path: Path) -> None:
    folder = _folder_export(tmp_path / "folder")
    delta = _delta_table(tmp_path / "delta")
    with pytest.raises(UsageError, match="holds a folder export"):
        check_placement(str(folder), "delta")
    with pytest.raises(UsageError, match="holds a Delta table: add --table-format delta"):
        check_placement(str(delta), "parquet")
    # Each format into its own kind of root, a new root, or an empty folder: allowed.
    check_placement(str(folder), "parquet")
    check_placement(str(delta), "delta")
    check_placement(str(tmp_path / "new"), "delta")
    (tmp_path / "empty").mkdir()
    check_placement(str(tmp_path / "empty"), "parquet")


@pytest.mark.parametrize("table_format", ["parquet", "delta"])
def test_an_output_inside_another_export_is_refused(tmp_path: Path, table_format: str) -> None:
    folder = _folder_export(tmp_path / "folder")
    delta = _delta_table(tmp_path / "delta")
    for inside, kind in [
        (folder / "DATE_CREATE_month=2024-01" / "x", "folder export"),
        (folder / "_errors", "folder export"),
        (delta / "_errors" / "deeper", "Delta table"),
        (delta / "part", "Delta table"),
    ]:
        with pytest.raises(UsageError, match=f"is inside the {kind} at "):
            check_placement(str(inside), table_format)
    # A sibling of an export is not inside it.
    check_placement(str(tmp_path / "sibling" / "out"), table_format)


def test_object_store_roots_are_left_to_the_sinks() -> None:
    check_placement("s3://bucket/deals", "delta")
