"""Benchmarks: each module runs as `python -m bench.<name>` and records one JSON line.

`python -m bench` runs them all and writes bench/README.md from their results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Set by `python -m bench --quick` (and tests) so that a run's figures land outside the work
#: tree; unset, results are the committed `bench/results/<name>.json`.
RESULTS_ENV = "DEAL_EXPORT_BENCH_RESULTS"
RESULTS_DIR = Path(os.environ.get(RESULTS_ENV) or Path(__file__).parent / "results")


def write_result(name: str, result: dict[str, Any]) -> None:
    """Print the result as one JSON line and keep it as `<results dir>/<name>.json`."""
    line = json.dumps(result, ensure_ascii=False)
    print(line)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(line + "\n", encoding="utf-8")
