"""`python -m bench.chaos [--quick] [--only NAME ...] [--results PATH] [--work DIR] [--seed N]`

Exit status 0 when every scenario passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench.chaos import all_scenarios
from bench.chaos.runner import run_suite, write_results

RESULTS = Path(__file__).resolve().parents[1] / "results" / "chaos.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the CI subset: smaller, fewer kills")
    parser.add_argument("--only", action="append", help="run scenarios whose name starts so")
    parser.add_argument(
        "--results",
        type=Path,
        help=f"where to write the JSON results (default: {RESULTS.name} for the full suite, "
        "none for --quick)",
    )
    parser.add_argument("--work", type=Path, help="keep the scenarios' files in this directory")
    parser.add_argument(
        "--seed", type=int, help="seed of the kill moments and ID files (default: fixed)"
    )
    ns = parser.parse_args(argv)
    work: Path | None = ns.work
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    suite = asyncio.run(
        run_suite(
            all_scenarios(ns.quick),
            quick=ns.quick,
            work=work,
            only=set(ns.only) if ns.only else None,
            seed=ns.seed,
        )
    )
    target = ns.results or (None if ns.quick or ns.only else RESULTS)
    if target is not None:
        write_results(suite, target)
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
