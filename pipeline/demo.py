"""`make demo`: the whole job on the built-in simulator, as a new user would run it.

Starts `deal-export simulate` (a portal with the standard plan's limits), runs
`deal-export run` against it exactly as one would against a real portal (progress on stderr,
summary on stdout), peeks at the Parquet it wrote, and stops the simulator.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds

from pipeline.redact import mask_url

DEALS = 3000
OUT = Path("demo-output")


def _start_simulator() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "simulate",
            "--deals",
            str(DEALS),
            "--seed",
            "7",
            "--plan",
            "standard",
            "--operating-budget",
            "480",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1"):
        proc.kill()
        raise SystemExit(f"the simulator did not start (said {url!r})")
    return proc, url


def _peek(root: Path) -> None:
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    columns = ["ID", "TITLE", "STAGE_ID", "OPPORTUNITY", "CURRENCY_ID", "CLOSED", "DATE_CREATE"]
    print(f"\n{root}/ holds {table.num_rows:,} deals in {table.num_columns} typed columns:")
    for name in columns:
        print(f"  {name:<12} {table.schema.field(name).type}")
    sample = table.sort_by("ID").select(columns).slice(0, 3).to_pylist()
    for row in sample:
        print("  " + ", ".join(f"{k}={v!s:.32}" for k, v in row.items()))
    by_currency = table.group_by("CURRENCY_ID").aggregate([("OPPORTUNITY", "sum")])
    top = sorted(by_currency.to_pylist(), key=lambda r: str(r["CURRENCY_ID"]))[:3]
    sums = ", ".join(f"{r['CURRENCY_ID']} {r['OPPORTUNITY_sum']}" for r in top)
    print(f"  sum(OPPORTUNITY) by currency, exact decimals: {sums}, ...")
    errors = sorted((root / "_errors").glob("*.parquet"))
    print(f"  error sidecar: {len(errors)} file(s) under {root}/_errors/, e.g.")
    if errors:
        side = ds.dataset(errors, format="parquet").to_table()
        for row in side.slice(0, 2).to_pylist():
            print(f"    id={row['id']} stage={row['stage']} message={row['message']!r}")


def run_args() -> list[str]:
    """The `deal-export` arguments the demo runs, and prints: one list, so they cannot differ.
    (`overwrite`: running the demo twice replaces its output instead of refusing.)"""
    return [
        "run",
        "--ids",
        f"1-{DEALS + 100}",
        "--ids-format",
        "range",
        "--out",
        str(OUT),
        "--existing-data-behavior",
        "overwrite",
    ]


def main() -> None:
    sim, url = _start_simulator()
    try:
        print(f"Simulated portal with {DEALS:,} deals at {mask_url(url)}")
        print("(standard plan: 2 requests/s, burst 50, 480 s operating budget per 10 minutes)\n")
        args = run_args()
        print(f"$ {shlex.join(['deal-export', *args])}\n")
        env = {**os.environ, "BITRIX24_WEBHOOK_URL": url}
        done = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, check=False)
        if done.returncode not in (0, 3):
            raise SystemExit(done.returncode)
        _peek(OUT)
        print(
            "\nOn a real portal: export BITRIX24_WEBHOOK_URL='https://<portal>/rest/<user>/<secret>/'"
            "\nthen run the same command (see README.md)."
        )
    finally:
        sim.terminate()
        sim.wait(timeout=10)


if __name__ == "__main__":
    main()
