"""`make demo` is the README's first command: it must work and say what it did."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from pipeline.demo import run_args
from pipeline.simulator.config import DEFAULT_SECRET


def test_demo_exports_from_the_simulator_and_shows_typed_columns(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stdout
    assert "decimal128" in done.stdout
    assert "timestamp[us, tz=UTC]" in done.stdout
    assert (tmp_path / "demo-output" / "_SUCCESS").exists()
    assert DEFAULT_SECRET not in done.stdout + done.stderr
    # Issue 14 B13: the command shown is the one that ran (overwrite included).
    shown = [line for line in done.stdout.splitlines() if line.startswith("$ deal-export ")]
    assert shown == [f"$ {shlex.join(['deal-export', *run_args()])}"]
    assert "--existing-data-behavior overwrite" in shown[0]
