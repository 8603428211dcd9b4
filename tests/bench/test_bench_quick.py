"""The benchmark suite's CI subset: `python -m bench --quick` runs green and meets its goals.

The full figures come from `make bench` (bench/README.md); this keeps the suite from rotting and
holds the ceiling ratio and flat-memory goals on every change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK_RESULTS = Path("/tmp/deal-export-bench-quick")


@pytest.mark.timeout(400)
def test_quick_bench_runs_and_meets_the_goals() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ceiling = json.loads((QUICK_RESULTS / "bench_ceiling.json").read_text())
    for run in ceiling["runs"]:
        assert run["exit_code"] == 0, run
        assert run["http_429"] == 0, run
        assert run["http_429_commands"] == 0, run
        assert run["ratio"] <= ceiling["goal"], run
    scale = json.loads((QUICK_RESULTS / "bench_scale.json").read_text())
    assert scale["memory_flat"], scale["peak_rss_mb"]
