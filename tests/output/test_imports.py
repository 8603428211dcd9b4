"""A folder run leaves pyarrow's object-store bindings unloaded (their code is resident memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_PROBE = """
import sys
from pathlib import Path
import pipeline.cli.run, pipeline.run, pipeline.output.store
from pipeline.output.store import Store
Store.from_root(sys.argv[1])
print(sorted(m for m in ("pyarrow.fs", "pyarrow.parquet", "pyarrow._s3fs") if m in sys.modules))
"""


def test_the_run_path_to_a_folder_does_not_import_pyarrow_fs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_a_uri_root_imports_pyarrow_fs(tmp_path: Path) -> None:
    probe = _PROBE.replace(
        "Store.from_root(sys.argv[1])", "Store.from_root('file://' + sys.argv[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert "pyarrow.fs" in out.stdout


_DELTA_PROBE = """
import sys
import pyarrow as pa
from pipeline.output.delta import table
from pipeline.output.delta.errors_table import Failures
from pipeline.output.delta.location import locate
from pipeline.output.sidecar import SIDECAR_SCHEMA
rows = pa.table({"ID": pa.array([1, 2], pa.int64()), "TITLE": ["a", "b"]})
where = locate(sys.argv[1] + "/deals")
table.create(where, rows, [], {"kind": "chunk"}, table.Writer("zstd", 1000))
current = table.open_table(where)
table.append(current, rows, {"kind": "chunk"}, new_columns=False, writer=table.Writer("zstd", 1000))
failure = {name: None for name in SIDECAR_SCHEMA.names}
failure.update(id=3, stage="fetch", message="Not found", retryable=False, attempts=1)
failures = Failures(locate(sys.argv[1] + "/deals/_errors"))
failures.replace({3}, pa.Table.from_pylist([failure], schema=SIDECAR_SCHEMA))
failure.update(id=4)
failures.replace({4}, pa.Table.from_pylist([failure], schema=SIDECAR_SCHEMA))
loaded = ("pyarrow.fs", "pyarrow.parquet", "pyarrow._s3fs", "pyarrow.dataset")
print(sorted(m for m in loaded if m in sys.modules))
"""


def test_a_local_delta_backfill_leaves_pyarrow_fs_and_dataset_unloaded(tmp_path: Path) -> None:
    # A local Delta table's files are written by the folder sink's encoder and its errors table
    # indexed from the rows it was created with: deltalake's code is resident, pyarrow's dataset,
    # Acero and S3 code need not be.
    out = subprocess.run(
        [sys.executable, "-c", _DELTA_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
