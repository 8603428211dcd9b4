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
