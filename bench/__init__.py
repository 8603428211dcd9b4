"""Benchmarks: each module runs as `python -m bench.<name>` and records one JSON line.

`python -m bench` runs them all and writes bench/README.md from their results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def write_result(name: str, result: dict[str, Any]) -> None:
    """Print the result as one JSON line and keep it as `bench/results/<name>.json`."""
    line = json.dumps(result, ensure_ascii=False)
    print(line)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(line + "\n", encoding="utf-8")
