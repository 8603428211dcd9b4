from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output import DATASET_GLOB, OutputRoot, dataset_glob, read_watermark


def _open(root: Path, **kw: Any) -> OutputRoot:
    fp = kw.pop("input_fingerprint", "fp")
    run_id = kw.pop("run_id", "run-1")
    return OutputRoot.open(
        OutputConfig(root=str(root), **kw), run_id, input_fingerprint=fp, lock_settle_s=0
    )


def _visible_files(root: Path) -> list[str]:
    """Files a reader could take for data: not under `_`/`.` names."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        out += [
            os.path.relpath(os.path.join(dirpath, f), root)
            for f in filenames
            if not f.startswith(("_", "."))
        ]
    return sorted(out)


def _all_files(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


@pytest.mark.parametrize(
    ("partition_by", "transform", "key"),
    [
        ("DATE_CREATE", "month", "DATE_CREATE_month"),
        ("DATE_CREATE", "year", "DATE_CREATE_year"),
        ("DATE_CREATE", "day", "DATE_CREATE_day"),
        ("STAGE_ID", "value", "STAGE_ID_value"),
        ("CATEGORY_ID", "value", "CATEGORY_ID_value"),
        (None, "none", None),
    ],
)
def test_dataset_reads_back_in_pyarrow_duckdb_polars(
    tmp_path: Path, synth: ModuleType, partition_by: str | None, transform: str, key: str | None
) -> None:
    with _open(tmp_path, partition_by=partition_by, partition_transform=transform) as out:
        for index in range(3):
            data, errors = synth.chunk(index, rows=60)
            out.write_chunk(index, data, errors)
        out.finalize(counts={"requested": 180})
    expected = sorted(i for i in range(1, 181) if i % synth.FAIL_EVERY)

    table = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    assert sorted(table.column("ID").to_pylist()) == expected
    for name in synth.SCHEMA.names:  # every data column survives with its type
        assert table.schema.field(name).type == synth.SCHEMA.field(name).type
    assert "id" not in table.column_names  # the sidecar is never read as data
    by_id = {r["ID"]: r for r in table.to_pylist()}
    assert {k: by_id[8][k] for k in synth.SCHEMA.names} == synth.deal_row(8)

    glob = dataset_glob(str(tmp_path))
    rows = duckdb.sql(
        f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true) ORDER BY ID"
    ).fetchall()
    cols = duckdb.sql(
        f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true) LIMIT 0"
    ).columns
    frame = pl.read_parquet(glob, hive_partitioning=True).sort("ID")
    assert [r[cols.index("ID")] for r in rows] == expected
    assert frame["ID"].to_list() == expected
    if key is None:
        assert all("=" not in f for f in _visible_files(tmp_path))
        return
    assert key in table.column_names
    assert key in cols
    assert key in frame.columns
    # the discovered partition value agrees with the column it was derived from
    sample = by_id[8]
    if transform == "month":
        assert sample[key] == sample["DATE_CREATE"].strftime("%Y-%m")
        assert by_id[50][key] is None  # null date -> __HIVE_DEFAULT_PARTITION__ -> null
        duck_nulls = duckdb.sql(
            f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
            f"WHERE {key} IS NULL"
        ).fetchall()
        assert duck_nulls == [(sum(1 for i in expected if i % 50 == 0),)]
        assert frame.filter(pl.col(key).is_null())["ID"].to_list() == [
            i for i in expected if i % 50 == 0
        ]
    if partition_by == "STAGE_ID":
        assert {r["STAGE_ID"] == r[key] for r in by_id.values()} == {True}
        assert set(frame[key].to_list()) == {"NEW", "C1:WON", "LOSE"}
    # metadata and sidecar names are never picked up by the recommended glob
    assert not any(p.startswith("_") for p in pl.scan_parquet(glob).collect_schema().names())


def test_files_layout_names_and_row_groups(tmp_path: Path, synth: ModuleType) -> None:
    with _open(tmp_path, max_rows_per_group=10) as out:
        data, errors = synth.chunk(2, rows=60)
        out.write_chunk(2, data, errors)
    visible = _visible_files(tmp_path)
    assert visible
    assert all(
        v.split("/")[0].startswith("DATE_CREATE_month=") and "/part-000002-" in v for v in visible
    )
    meta = pq.read_metadata(tmp_path / visible[0])
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 10
    sidecar = pq.read_table(tmp_path / "_errors" / "chunk-000002.parquet")
    assert sidecar.column("id").to_pylist() == [
        i for i in synth.chunk_ids(2, 60) if i % synth.FAIL_EVERY == 0
    ]
    ckpt = json.loads((tmp_path / "_checkpoints" / "chunk-000002.json").read_text())
    assert {f["path"] for f in ckpt["files"]} == set(visible)
    assert ckpt["rows"] == data.num_rows


def test_rewriting_a_chunk_replaces_it_even_when_partitions_change(
    tmp_path: Path, synth: ModuleType
) -> None:
    with _open(tmp_path) as out:
        data, errors = synth.chunk(0)
        out.write_chunk(0, data, errors)
        first = set(_visible_files(tmp_path))
        # same IDs, but every deal now created in one other month: old partitions must go
        moved = data.set_column(
            data.schema.get_field_index("DATE_CREATE"),
            "DATE_CREATE",
            pa.array([synth.SEEN] * data.num_rows, pa.timestamp("us", tz="UTC")),
        )
        with pytest.raises(OutputError, match="already committed"):
            out.write_chunk(0, moved, [])
        out.write_chunk(0, moved, [], replace=True)
        assert _visible_files(tmp_path) == ["DATE_CREATE_month=2024-09/part-000000-0.parquet"]
        out.write_chunk(1, *synth.chunk(1))
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    ids = table.column("ID").to_pylist()
    assert len(ids) == len(set(ids))
    chunk0 = [i for i in ids if i <= synth.ROWS_PER_CHUNK]
    assert sorted(chunk0) == sorted(data.column("ID").to_pylist())
    assert len(first) > 1
    assert not (tmp_path / "_errors" / "chunk-000000.parquet").exists()  # no errors any more
    assert (tmp_path / "_errors" / "chunk-000001.parquet").exists()


def test_second_run_into_same_root_is_refused(tmp_path: Path, synth: ModuleType) -> None:
    with _open(tmp_path) as out:
        with pytest.raises(OutputError, match=r"is locked by run run-1 .*pid"):
            _open(tmp_path, run_id="run-2")
        # and from another process too
        code = (
            "import sys\n"
            "from pipeline.config import OutputConfig\n"
            "from pipeline.errors import OutputError\n"
            "from pipeline.output import OutputRoot\n"
            "try:\n"
            f"    OutputRoot.open(OutputConfig(root={str(tmp_path)!r}), 'other')\n"
            "except OutputError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 3, proc.stderr
        assert "locked by run run-1" in proc.stdout
        assert "Traceback" not in proc.stderr
        out.write_chunk(0, synth.deals([1]), [])
    with _open(tmp_path, run_id="run-3") as again:  # released on close
        assert again.committed_chunks() == {0}


def test_lock_of_a_killed_process_is_not_stale(tmp_path: Path) -> None:
    code = (
        "import os, signal\n"
        "from pipeline.config import OutputConfig\n"
        "from pipeline.output import OutputRoot\n"
        f"OutputRoot.open(OutputConfig(root={str(tmp_path)!r}), 'dead')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -9
    assert (tmp_path / "_lock").exists()
    with _open(tmp_path, run_id="next") as out:
        assert out.resumed


def test_existing_data_behaviors(tmp_path: Path, synth: ModuleType) -> None:
    with _open(tmp_path) as out:
        out.write_chunk(0, *synth.chunk(0))
        out.write_schema({"fields": {"ID": "int64"}})
        out.finalize(counts={"requested": 120}, watermark="2024-09-01T00:00:00+00:00")
    assert (tmp_path / "_SUCCESS").exists()

    with pytest.raises(OutputError) as err:
        _open(tmp_path)
    text = str(err.value)
    assert "already holds a completed export" in text
    for option in ("'overwrite'", "'resume'", "new output root"):
        assert option in text

    with _open(tmp_path, existing_data_behavior="resume") as out:
        assert out.resumed
        assert out.committed_chunks() == {0}
        assert (tmp_path / "_SUCCESS").exists()  # untouched until something changes
        out.write_chunk(1, *synth.chunk(1))
        assert not (tmp_path / "_SUCCESS").exists()
        out.finalize()
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert manifest["chunks"] == 2
    assert manifest["counts"]["requested"] == 120

    with pytest.raises(OutputError, match="different input"):
        _open(tmp_path, existing_data_behavior="resume", input_fingerprint="other")

    assert read_watermark(str(tmp_path)) == "2024-09-01T00:00:00+00:00"
    with _open(tmp_path, existing_data_behavior="overwrite", input_fingerprint="new") as out:
        assert not out.resumed
        assert out.committed_chunks() == set()
        assert _visible_files(tmp_path) == []
        assert sorted(os.listdir(tmp_path)) == ["_deal_export", "_lock", "_run.json"]
        # The watermark outlives the wipe until this run completes with its own.
        assert out.read_watermark() == "2024-09-01T00:00:00+00:00"
        out.write_chunk(0, synth.deals([1, 2]), [])
        out.finalize()
    assert ds.dataset(str(tmp_path)).count_rows() == 2


def test_unfinished_output_resumes_whatever_the_behavior(tmp_path: Path, synth: ModuleType) -> None:
    with _open(tmp_path) as out:
        out.write_chunk(0, *synth.chunk(0))
    for behavior in ("error", "overwrite", "resume"):
        with _open(tmp_path, existing_data_behavior=behavior) as out:
            assert out.resumed
            assert out.committed_chunks() == {0}
    with pytest.raises(OutputError, match="unfinished export of a different input"):
        _open(tmp_path, input_fingerprint="changed")
    with pytest.raises(OutputError, match="different layout"):
        _open(tmp_path, partition_by="STAGE_ID", partition_transform="value")
    with pytest.raises(OutputError, match="chunk_size"):
        _open(tmp_path, chunk_size=5)
    with _open(tmp_path, existing_data_behavior="overwrite", input_fingerprint="changed") as out:
        assert out.committed_chunks() == set()


def test_foreign_files_are_never_touched(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for behavior in ("error", "overwrite", "resume"):
        with pytest.raises(OutputError, match="did not write"):
            _open(tmp_path, existing_data_behavior=behavior)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_manifest_then_success_then_state_are_written_last(
    tmp_path: Path, synth: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real = os.replace

    def spy(src: str, dst: str) -> None:
        order.append(os.path.relpath(dst, tmp_path))
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with _open(tmp_path) as out:
        out.write_chunk(0, *synth.chunk(0))
        out.write_chunk(1, *synth.chunk(1))
        manifest = out.finalize(
            counts={"requested": 250, "unique": 240, "duplicates_dropped": 10},
            config={"auth": {"url": "https://p/rest/1/topsecret9/"}, "token": "x"},
            limits={"requests": 7, "limit_waits": 0, "operating_seconds": 1.5},
            watermark="w1",
        )
    chunk_order = [o for o in order if o.startswith("_checkpoints/")]
    assert order[-3:] == ["_manifest.json", "_SUCCESS", "_deal_export/state.json"]
    assert chunk_order == ["_checkpoints/chunk-000000.json", "_checkpoints/chunk-000001.json"]
    # each checkpoint comes after its chunk's data and sidecar files are staged (written in
    # full under `_staging/`), and before they are moved to where readers look
    first_ckpt = order.index(chunk_order[0])
    assert any(o.endswith("part-000000-0.parquet.staged") for o in order[:first_ckpt])
    assert order.index("_staging/000000/chunk-000000.parquet.staged") < first_ckpt
    assert order.index("_errors/chunk-000000.parquet") > first_ckpt
    assert not any(o.endswith("part-000000-0.parquet") for o in order[:first_ckpt])

    on_disk = json.loads((tmp_path / "_manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert "topsecret9" not in (tmp_path / "_manifest.json").read_text()
    assert on_disk["config"] == {"auth": {"url": "https://p/rest/1/***/"}}
    counts = on_disk["counts"]
    failed = [i for i in range(1, 241) if i % synth.FAIL_EVERY == 0]
    assert counts["exported"] == 240 - len(failed)
    assert counts["failed"] == len(failed)
    assert counts["failed_by_class"] == {
        "permanent": sum(1 for i in failed if i % 2 == 0),
        "transient": sum(1 for i in failed if i % 2),
    }
    assert (counts["requested"], counts["duplicates_dropped"]) == (250, 10)
    assert on_disk["limits"]["requests"] == 7
    assert on_disk["dataset_glob"] == DATASET_GLOB
    assert on_disk["schema_fingerprint"].startswith("sha256:")
    assert sum(f["rows"] for f in on_disk["files"]) == counts["exported"]
    for f in on_disk["files"] + on_disk["error_files"]:
        blob = (tmp_path / f["path"]).read_bytes()
        assert len(blob) == f["bytes"]
        import hashlib

        assert hashlib.sha256(blob).hexdigest() == f["sha256"]


def test_incomplete_finalize_writes_no_success(tmp_path: Path, synth: ModuleType) -> None:
    with _open(tmp_path) as out:
        out.write_chunk(0, *synth.chunk(0))
        manifest = out.finalize(completed=False, watermark="ignored")
    assert manifest["completed"] is False
    assert not (tmp_path / "_SUCCESS").exists()
    assert not (tmp_path / "_deal_export" / "state.json").exists()
    with _open(tmp_path) as out:  # still resumable under "error"
        assert out.committed_chunks() == {0}


def test_accounting_mistakes_are_refused(tmp_path: Path, synth: ModuleType) -> None:
    data, errors = synth.chunk(0)
    with _open(tmp_path) as out:
        with pytest.raises(OutputError, match="appears twice"):
            out.write_chunk(0, pa.concat_tables([data, data.slice(0, 1)]), errors)
        dup = [dict(errors[0], id=data.column("ID")[0].as_py())]
        with pytest.raises(OutputError, match="accounted for twice"):
            out.write_chunk(0, data, dup)
        with pytest.raises(OutputError, match="no line number"):
            out.write_chunk(0, data, [{"stage": "input", "raw_value": "x"}])
        assert out.committed_chunks() == set()


def test_interrupt_mid_write_leaves_no_visible_partial_file(
    tmp_path: Path, synth: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = os.fsync

    def interrupt_on_third(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        real(fd)

    with _open(tmp_path) as out:
        out.write_chunk(0, *synth.chunk(0))
        monkeypatch.setattr(os, "fsync", interrupt_on_third)
        with pytest.raises(KeyboardInterrupt):
            out.write_chunk(1, *synth.chunk(1))
        monkeypatch.setattr(os, "fsync", real)
    assert not [f for f in _all_files(tmp_path) if f.endswith(".tmp")]
    for f in _visible_files(tmp_path):
        pq.read_metadata(tmp_path / f)  # every visible file is complete
    with _open(tmp_path) as out:
        assert out.committed_chunks() == {0}
        # the interrupted chunk's finished files are gone: nothing vouched for them
        assert all("part-000001-" not in f for f in _all_files(tmp_path))
        out.write_chunk(1, *synth.chunk(1))
    ids = ds.dataset(str(tmp_path), partitioning="hive").to_table().column("ID").to_pylist()
    assert len(ids) == len(set(ids)) == sum(1 for i in range(1, 241) if i % synth.FAIL_EVERY)


def test_debris_from_a_crash_is_removed_on_open(tmp_path: Path, synth: ModuleType) -> None:
    with _open(tmp_path) as out:
        out.write_chunk(0, *synth.chunk(0))
    month = next(p for p in tmp_path.iterdir() if p.name.startswith("DATE_CREATE_month="))
    (month / ".part-000001-0.parquet.0123456789ab.tmp").write_bytes(b"half")
    pq.write_table(pa.table({"ID": [999999]}), month / "part-000001-0.parquet")
    (tmp_path / "_errors" / "chunk-000001.parquet").write_bytes(b"x")
    ckpt = tmp_path / "_checkpoints" / "chunk-000000.json"
    with _open(tmp_path) as out:
        assert out.committed_chunks() == {0}
    assert not (month / "part-000001-0.parquet").exists()
    assert not (tmp_path / "_errors" / "chunk-000001.parquet").exists()
    assert not list(month.glob(".*.tmp"))
    # a checkpoint whose file was damaged no longer vouches for the chunk
    first = json.loads(ckpt.read_text())["files"][0]["path"]
    (tmp_path / first).write_bytes(b"truncated")
    with _open(tmp_path) as out:
        assert out.committed_chunks() == set()
    assert _visible_files(tmp_path) == []


async def test_cancelled_async_write_finishes_before_cancellation_propagates(
    tmp_path: Path, synth: ModuleType
) -> None:
    import asyncio

    with _open(tmp_path) as out:
        task = asyncio.create_task(out.awrite_chunk(0, *synth.chunk(0)))
        await asyncio.sleep(0)  # let the worker thread start
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the write was all-or-nothing and is over: nothing in flight, nothing half-visible
        assert not [f for f in _all_files(tmp_path) if f.endswith(".tmp")]
        assert out.committed_chunks() == {0}  # the write completed despite the cancel
        record = await out.awrite_chunk(1, *synth.chunk(1))
        assert record["key"] == "000001"
    for f in _visible_files(tmp_path):
        pq.read_metadata(tmp_path / f)


def test_io_failures_are_output_errors(
    tmp_path: Path, synth: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot"):
        _open(blocker / "sub")
    with _open(tmp_path / "out") as out:
        real = os.write

        def disk_full(fd: int, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", disk_full)
        with pytest.raises(OutputError, match="No space left on device"):
            out.write_chunk(0, *synth.chunk(0))
        monkeypatch.setattr(os, "write", real)
        assert out.committed_chunks() == set()
    assert not [f for f in _all_files(tmp_path / "out") if f.endswith(".tmp")]


def test_racing_runs_exactly_one_gets_the_root(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pipeline.config import OutputConfig\n"
        "from pipeline.errors import OutputError\n"
        "from pipeline.output import OutputRoot\n"
        "try:\n"
        f"    out = OutputRoot.open(OutputConfig(root={str(tmp_path)!r}), sys.argv[1])\n"
        "except OutputError:\n"
        "    print('refused', flush=True); sys.exit(0)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()  # hold the lock until the test lets go\n"
        "out.close()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, f"racer-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    try:
        answers = sorted(p.stdout.readline().strip() for p in procs if p.stdout)
    finally:
        for p in procs:
            p.communicate(timeout=60)
    assert answers == ["locked", "refused", "refused", "refused"]
    assert not (tmp_path / "_lock").exists()


def test_overwrite_keeps_the_watermark_until_the_new_run_sets_its_own(
    tmp_path: Path, synth: ModuleType
) -> None:
    with _open(tmp_path) as out:
        out.write_chunk(0, *synth.chunk(0))
        out.finalize(watermark="2026-11-26T00:00:00+00:00")
    with _open(tmp_path, existing_data_behavior="overwrite", input_fingerprint="other") as out:
        assert out.committed_chunks() == set()
        # A run that dies here must still find where the last successful run ended.
        assert out.read_watermark() == "2026-11-26T00:00:00+00:00"
    assert read_watermark(str(tmp_path)) == "2026-11-26T00:00:00+00:00"


def test_every_accounting_rule_is_refused_with_its_own_message(
    tmp_path: Path, synth: ModuleType
) -> None:
    data, errors = synth.chunk(0)
    first = data.column("ID")[0].as_py()
    fetch = dict(errors[0])
    no_id = data.set_column(
        data.schema.get_field_index("ID"),
        "ID",
        pa.array([None, *data.column("ID").to_pylist()[1:]], pa.int64()),
    )
    cases = [
        (no_id, errors, "the data has rows without ID"),
        (data, [dict(fetch, id=None)], "a fetch error row has no id"),
        (data, [fetch, dict(fetch)], f"deal {fetch['id']} is accounted for twice"),
        (data, [dict(fetch, id=first)], f"deal {first} is accounted for twice"),
        (data, [{"stage": "normalise", "id": 10**9}], "normalise error for deal 1000000000 not"),
    ]
    with _open(tmp_path) as out:
        for table, rows, message in cases:
            with pytest.raises(OutputError, match=message):
                out.write_chunk(0, table, rows)
        # The same rules let a sound chunk through: data, its fetch rows and a normalise row.
        ok = [*errors, {"stage": "normalise", "id": first, "field": "TITLE"}]
        out.write_chunk(0, data, ok)
        assert out.committed_chunks() == {0}
