"""Delta sink: merging a nightly delta into a large table, and the files each sink leaves.

    .venv/bin/python -m bench.bench_delta [--rows 1000000] [--delta 10000] [--export 100000]
    .venv/bin/python -m bench.bench_delta --quick

1. Merge. A real `deal-export run --table-format delta` of 2,000 simulator deals gives a sample of
   normalised rows (lineage and partition columns included); the sample is tiled to `--rows`
   rows with fresh IDs and written as one Delta table (fast: one append, not timed). The delta
   (`--delta` deals: 80% random IDs the table holds, with a changed TITLE; 20% new IDs) is
   prepared in this process and handed over as a Parquet file; a child process opens the table
   with `DeltaSink` and commits it as one chunk, which is one MERGE on `ID`. The child reports
   the merge's wall time and its peak RSS (VmHWM) before and after; `wait4()` gives the whole
   child's peak RSS. The merged table is checked: rows = before + new.
2. Files. `deal-export run --ids 1-<export> --ids-format range` against the unlimited simulator,
   once per sink (default settings: DATE_CREATE by month, chunks of 10,000), then
   `deal-export compact` on the Delta output: number and median size of the data files a
   reader sees (folder: `part-*.parquet` outside `_` directories; Delta: the live files of the
   current version).

Prints one JSON line and writes bench/results/bench_delta.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bench import write_result
from bench.bench_e2e import (
    LIMITS_OFF,
    SimulatorProcess,
    child_env,
    export_command,
    exported_count,
    run_measured,
)

SAMPLE_DEALS = 2_000
UPDATE_SHARE = 0.8


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run(command: list[str], env: dict[str, str], timeout_s: float) -> Any:
    done = run_measured(command, env=env, timeout_s=timeout_s)
    if done.code not in (0, 3):
        raise SystemExit(f"{' '.join(command[:5])} exited {done.code}: {done.stderr[-1500:]}")
    return done


def sample_table(sim: SimulatorProcess, tmp: Path) -> pa.Table:
    """Normalised deals as the Delta sink stores them, from a real run."""
    from deltalake import DeltaTable

    out = tmp / "sample"
    command = export_command(f"1-{SAMPLE_DEALS}", out, [*LIMITS_OFF, "--table-format", "delta"])
    _run(command, child_env(BITRIX24_WEBHOOK_URL=sim.webhook_url), 300)
    return DeltaTable(str(out)).to_pyarrow_table()


LINEAGE = ["_run_id", "_extracted_at", "_deleted_at", "DATE_CREATE_month"]


def build_big_table(sample: pa.Table, rows: int, where: Path) -> tuple[pa.Table, float]:
    """`rows` rows tiled from `sample` with IDs 1..rows, written in one append; the rows and
    the seconds taken."""
    from deltalake import write_deltalake

    started = time.monotonic()
    reps = -(-rows // sample.num_rows)
    big = pa.concat_tables([sample] * reps).slice(0, rows)
    index = big.column_names.index("ID")
    big = big.set_column(index, "ID", pa.array(range(1, rows + 1), pa.int64()))
    write_deltalake(str(where), big, mode="append", partition_by=["DATE_CREATE_month"])
    return big, time.monotonic() - started


def delta_chunk(big: pa.Table, delta: int) -> tuple[pa.Table, int]:
    """A nightly delta as the sink receives it: `UPDATE_SHARE` of it deals the table holds
    (random IDs, TITLE edited), the rest new IDs; and how many are updates."""
    updates = int(delta * UPDATE_SHARE)
    picked = sorted(random.Random(7).sample(range(big.num_rows), updates))
    old = big.take(pa.array(picked, pa.int64())).drop_columns(LINEAGE)
    fresh = old.slice(0, delta - updates)
    first = big.num_rows + 1
    fresh_ids = pa.array(range(first, first + fresh.num_rows), pa.int64())
    fresh = fresh.set_column(fresh.column_names.index("ID"), "ID", fresh_ids)
    chunk = pa.concat_tables([old, fresh])
    titles = pc.binary_join_element_wise(chunk.column("TITLE"), "(edited)", " ")
    chunk = chunk.set_column(chunk.column_names.index("TITLE"), "TITLE", titles)
    return chunk.sort_by("ID"), updates


def merge_child(table_uri: str, chunk_file: str) -> None:
    """In its own process: one `DeltaSink.write_chunk` of the chunk in `chunk_file`."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from pipeline.config import OutputConfig
    from pipeline.output.delta import DeltaSink

    chunk = pq.read_table(chunk_file)
    before_rows = DeltaTable(table_uri).count()
    config = OutputConfig(root=table_uri, table_format="delta", chunk_size=chunk.num_rows)
    rss_before = _vm_hwm_mb()
    with DeltaSink.open(config, "bench-merge", input_fingerprint="bench") as sink:
        started = time.monotonic()
        sink.write_chunk(0, chunk)
        merge_s = time.monotonic() - started
    after = DeltaTable(table_uri).count()
    print(
        json.dumps(
            {
                "merge_s": round(merge_s, 2),
                "rss_before_merge_mb": round(rss_before, 1),
                "peak_rss_mb": round(_vm_hwm_mb(), 1),
                "rows_before": before_rows,
                "rows_after": after,
            }
        )
    )


def measure_merge(sim: SimulatorProcess, tmp: Path, rows: int, delta: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    sample = sample_table(sim, tmp)
    table = tmp / "big"
    big, build_s = build_big_table(sample, rows, table)
    chunk, updates = delta_chunk(big, delta)
    del big
    chunk_file = tmp / "delta.parquet"
    pq.write_table(chunk, chunk_file)
    command = [sys.executable, "-m", "bench.bench_delta", "--merge-child", str(table)]
    done = _run([*command, "--chunk", str(chunk_file)], child_env(), 900)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    inserted = delta - updates
    if result["rows_after"] != rows + inserted:
        raise SystemExit(f"the merged table is wrong: {result}")
    result.update(
        rows=rows,
        delta=delta,
        updated=updates,
        inserted=inserted,
        build_s=round(build_s, 1),
        child_wall_s=round(done.wall_s, 2),
        child_peak_rss_mb=round(done.peak_rss_mb, 1),
    )
    return result


def _sizes(paths: list[Path]) -> dict[str, Any]:
    sizes = [p.stat().st_size for p in paths]
    return {
        "files": len(sizes),
        "median_file_kb": round(statistics.median(sizes) / 1024, 1) if sizes else 0,
        "total_mb": round(sum(sizes) / 2**20, 2),
    }


def folder_files(root: Path) -> list[Path]:
    return [
        p
        for p in root.rglob("part-*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
    ]


def delta_files(root: Path) -> list[Path]:
    from deltalake import DeltaTable

    return [Path(uri.removeprefix("file://")) for uri in DeltaTable(str(root)).file_uris()]


def measure_files(sim: SimulatorProcess, tmp: Path, n: int) -> dict[str, Any]:
    env = child_env(BITRIX24_WEBHOOK_URL=sim.webhook_url)
    out: dict[str, Any] = {"ids": n}
    for sink, extra in (("parquet", []), ("delta", ["--table-format", "delta"])):
        root = tmp / f"export_{sink}"
        done = _run(export_command(f"1-{n}", root, [*LIMITS_OFF, *extra]), env, 900)
        files = folder_files(root) if sink == "parquet" else delta_files(root)
        out[sink] = {
            "exported": exported_count(done.stdout),
            "wall_s": round(done.wall_s, 1),
            **_sizes(files),
        }
    compact = [sys.executable, "-m", "pipeline", "compact", str(tmp / "export_delta")]
    _run(compact, child_env(), 600)
    out["delta_compacted"] = _sizes(delta_files(tmp / "export_delta"))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_delta")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--delta", type=int, default=10_000)
    parser.add_argument("--export", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="50k rows, 1k delta, 5k export")
    parser.add_argument("--merge-child", metavar="TABLE", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.merge_child:
        merge_child(args.merge_child, args.chunk)
        return
    if args.quick:
        args.rows, args.delta, args.export = 50_000, 1_000, 5_000
    portal = max(args.export, SAMPLE_DEALS)
    with (
        tempfile.TemporaryDirectory(prefix="bench_delta_") as tmp,
        SimulatorProcess(["--deals", str(portal)]) as sim,
    ):
        merge = measure_merge(sim, Path(tmp), args.rows, args.delta)
        files = measure_files(sim, Path(tmp), args.export)
    write_result(
        "bench_delta",
        {
            "merge": merge,
            "files": files,
            "command": f"python -m bench.bench_delta --rows {args.rows} --delta {args.delta} "
            f"--export {args.export}",
        },
    )


if __name__ == "__main__":
    main()
