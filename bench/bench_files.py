"""Files: what writing a data file costs, laid out as a run writes them and as one file.

The peer comparison's portal (`bench_peer`: 36,100 deals over 68 months, seed 1, empty
multiple fields as `[]`) is exported by `deal-export run` (its first 30,000 readable IDs, limits
off) into a folder: one file per chunk and `DATE_CREATE` month, the default layout. Each file is
read back and encoded again by the run's own encoder (`pipeline.output.encode.Encoding`, the
default zstd and row group size) on this thread's CPU clock, best of `--rounds`; then the same
rows as one table in one file. The difference over the number of files is the fixed cost of a
file (the Parquet writer's set-up, column writers and footer, per column: Arrow C++), and per
deal it is what the partitioned layout costs a run beyond writing its bytes. The same is done
with lz4 and no codec, as a reference for bytes against CPU. The run's own CPU per deal is
shown beside it.

    .venv/bin/python -m bench.bench_files [--ids 30000] [--rounds 5]

Prints one JSON line and writes bench/results/bench_files.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import memory

# The run's allocator options (pipeline/memory.py), which Arrow reads when it loads: the
# encoder is timed as a run's worker runs it.
memory.configure()

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench import write_result  # noqa: E402
from bench.bench_e2e import (  # noqa: E402
    LIMITS_OFF,
    SimulatorProcess,
    child_env,
    export_command,
    exported_count,
    run_measured,
)
from bench.bench_peer import EMPTIES, SEED, visible_ids  # noqa: E402
from pipeline.output.encode import Encoding  # noqa: E402
from pipeline.settings import default  # noqa: E402

PORTAL_DEALS = 36_100
CODECS = ("zstd", "lz4", "none")


def _best_cpu(work: Callable[[], int], rounds: int) -> tuple[float, int]:
    """The least thread CPU seconds of `rounds` calls of `work`, and what it returned."""
    best, out = float("inf"), 0
    for _ in range(rounds):
        started = time.thread_time()
        out = work()
        best = min(best, time.thread_time() - started)
    return best, out


def _encode_all(encoding: Encoding, tables: list[pa.Table]) -> int:
    return sum(encoding.encode(table).size for table in tables)


def _codec_figures(
    tables: list[pa.Table], whole: pa.Table, codec: str, row_group_size: int, rounds: int
) -> dict[str, Any]:
    encoding = Encoding(codec, row_group_size)
    deals = whole.num_rows
    encoding.encode(tables[0])  # the plan of a schema is made once, at its first file
    laid_out_s, laid_out_bytes = _best_cpu(lambda: _encode_all(encoding, tables), rounds)
    one_s, one_bytes = _best_cpu(lambda: encoding.encode(whole).size, rounds)
    return {
        "us_per_deal_as_laid_out": round(laid_out_s / deals * 1e6, 2),
        "us_per_deal_one_file": round(one_s / deals * 1e6, 2),
        "fixed_ms_per_file": round((laid_out_s - one_s) / len(tables) * 1e3, 3),
        "mb_as_laid_out": round(laid_out_bytes / 1e6, 2),
        "mb_one_file": round(one_bytes / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ids", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on the run, seconds")
    args = parser.parse_args(argv)
    ids, _ = visible_ids(PORTAL_DEALS, args.ids)
    default_codec = default("output.compression", str)
    row_group_size = default("output.max_rows_per_group", int)

    with tempfile.TemporaryDirectory(prefix="bench_files_") as tmp:
        ids_file = Path(tmp) / "ids.txt"
        ids_file.write_text("\n".join(map(str, ids)) + "\n")
        out = Path(tmp) / "out"
        sim_args = ["--deals", str(PORTAL_DEALS), "--seed", str(SEED), *EMPTIES]
        with SimulatorProcess(sim_args) as sim:
            run = run_measured(
                export_command(str(ids_file), out, LIMITS_OFF),
                env=child_env(BITRIX24_WEBHOOK_URL=sim.webhook_url),
                timeout_s=args.timeout,
            )
        if run.code != 0:
            raise SystemExit(f"deal-export run exited {run.code}: {run.stderr[-2000:]}")
        deals = exported_count(run.stdout)
        # Data files only: the sidecar and the run's own files live under `_` folders.
        paths = sorted(p for p in out.rglob("*.parquet") if p.relative_to(out).parts[0][0] != "_")
        tables = [pq.read_table(p) for p in paths]
    whole = pa.concat_tables(tables).combine_chunks()
    if whole.num_rows != deals:
        raise SystemExit(f"the files hold {whole.num_rows} rows, the run exported {deals}")
    codecs = {
        codec: _codec_figures(tables, whole, codec, row_group_size, args.rounds)
        for codec in (default_codec, *(c for c in CODECS if c != default_codec))
    }
    result = {
        "bench": "bench_files",
        "simulator": f"deal-export simulate --port 0 {' '.join(sim_args)}",
        "command": "deal-export run --ids FILE --out DIR --no-progress "
        + " ".join(LIMITS_OFF)
        + "; then each data file, and all of them as one, through Encoding.encode",
        "ids": args.ids,
        "deals": deals,
        "files": len(tables),
        "columns": whole.num_columns,
        "median_rows_per_file": statistics.median(t.num_rows for t in tables),
        "default_codec": default_codec,
        "run_cpu_us_per_deal": round(run.cpu_s / deals * 1e6, 1),
        "codecs": codecs,
        "rounds": args.rounds,
    }
    write_result("bench_files", result)


if __name__ == "__main__":
    main()
