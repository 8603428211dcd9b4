"""A chunk built in the folder sink's file order commits the very files an ID-ordered one does,
and is written from zero-copy slices of the chunk."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.config import OutputConfig
from pipeline.normalise import DealSchema, TableBuilder
from pipeline.output import OutputRoot
from pipeline.output import partition as partition_module
from pipeline.output.partition import PartitionSpec, directory_codes, iter_split

FIELDS: dict[str, Any] = {
    "ID": {"type": "integer", "isMultiple": False, "title": "ID"},
    "TITLE": {"type": "string", "isMultiple": False, "title": "T"},
    "DATE_CREATE": {"type": "datetime", "isMultiple": False, "title": "C"},
    "OPPORTUNITY": {"type": "double", "isMultiple": False, "title": "O"},
    "STAGE_ID": {"type": "crm_status", "isMultiple": False, "title": "S"},
}
SCHEMA = DealSchema.from_fields(FIELDS)
START = datetime(2024, 1, 1, tzinfo=UTC)


def _deal(i: int) -> dict[str, Any]:
    # Creation grows with the ID, jittered by up to two days either way (as on a portal whose
    # deals were entered late): months overlap at their borders, so ID order is not file order.
    jitter = random.Random(i).uniform(-2, 2)
    created = START + timedelta(hours=2 * i + 24 * jitter)
    deal = {"ID": str(i), "TITLE": f"deal {i}", "OPPORTUNITY": f"{i}.25"}
    deal["STAGE_ID"] = "" if i % 13 == 0 else f"C{i * 7 % 4}:WON"
    if i % 17:
        deal["DATE_CREATE"] = created.isoformat()  # the others: null, their own directory
    return deal


def _parts() -> list[list[int]]:
    """Chunk IDs as a run meets them: list answers in order, with a few IDs left out of each
    and got later, and one answer large enough to be typed at once."""
    ids = list(range(1, 1_801))
    late = ids[5::23]
    on_time = [i for i in ids if i not in set(late)]
    parts = [on_time[:1_000], *(on_time[n : n + 150] for n in range(1_000, len(on_time), 150))]
    parts += [late[n : n + 20] for n in range(0, len(late), 20)]
    random.Random(3).shuffle(parts)
    return parts


def _built(group: Any) -> pa.Table:
    builder = TableBuilder(SCHEMA, group)
    for part in _parts():
        builder.add([_deal(i) for i in part], part)
    table, _ = builder.finish()
    return table


def _open(root: Path) -> OutputRoot:
    config = OutputConfig(root=str(root), partition_by="DATE_CREATE", partition_transform="month")
    return OutputRoot.open(config, "run-1", lock_settle_s=0)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*.parquet")
        if not p.relative_to(root).parts[0].startswith("_")
    }


@pytest.mark.parametrize("transform", ["month", "day", "value"])
def test_a_chunk_in_file_order_commits_the_same_files_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transform: str
) -> None:
    by_id = _built(None)
    config = OutputConfig(
        root=str(tmp_path / "ids"),
        partition_by="DATE_CREATE" if transform != "value" else "STAGE_ID",
        partition_transform=transform,  # type: ignore[arg-type]
    )
    with OutputRoot.open(config, "run-1", lock_settle_s=0) as out:
        out.write_chunk(0, by_id)
        old = out.checkpoint(0)
    files_config = dataclasses.replace(config, root=str(tmp_path / "files"))
    with OutputRoot.open(files_config, "run-1", lock_settle_s=0) as out:
        in_file_order = _built(out.file_groups)
        assert in_file_order.column("ID").to_pylist() != by_id.column("ID").to_pylist()
        # Every file is a slice of the chunk: no rows are copied out of it again.
        monkeypatch.setattr(partition_module, "_take_span", None)
        out.write_chunk(0, in_file_order)
        new = out.checkpoint(0)
    assert old is not None
    assert new is not None
    assert [f["path"] for f in new["files"]] == [f["path"] for f in old["files"]]
    assert [f["sha256"] for f in new["files"]] == [f["sha256"] for f in old["files"]]
    files = _files(tmp_path / "files")
    assert len(files) == len(old["files"]) > 3
    assert files == _files(tmp_path / "ids")


def test_the_folder_sinks_order_is_its_directories_then_ids(tmp_path: Path) -> None:
    with _open(tmp_path) as out:
        table = _built(out.file_groups)
    groups = list(iter_split(table, PartitionSpec("DATE_CREATE", "month")))
    for _, rows in groups:
        ids = rows.column("ID").to_pylist()
        assert ids == sorted(ids)
    assert sum(rows.num_rows for _, rows in groups) == table.num_rows
    assert [d for d, _ in groups] == sorted(d for d, _ in groups)


def test_directory_codes_decline_what_needs_no_order_or_is_refused_later() -> None:
    table = _built(None)
    month = PartitionSpec("DATE_CREATE", "month")
    assert directory_codes(table.slice(0, 0), month) is None
    assert directory_codes(table, PartitionSpec(None, "none")) is None
    # One directory only, or a table iter_split refuses with its own message.
    january = table.filter(pc.is_in(table.column("ID"), pa.array(range(200, 300))))
    january = january.filter(pc.is_valid(january.column("DATE_CREATE")))
    assert directory_codes(january, month) is None
    assert directory_codes(table.drop_columns(["DATE_CREATE"]), month) is None
    clash = table.append_column("DATE_CREATE_month", pa.nulls(table.num_rows, pa.string()))
    assert directory_codes(clash, month) is None
    codes = directory_codes(table, month)
    assert codes is not None
    assert len(codes) == table.num_rows
