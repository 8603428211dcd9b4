"""Peak memory and time to read, validate and deduplicate 10,000,000 deal IDs.

Generates a text file of N IDs (random order, ~5% duplicates, one invalid line in 1,000, some CRLF
and comment lines) in a temporary directory (or the same values as a CSV column or a Parquet int64
column, invalid ones as 0), then reads it in a fresh child process with
`pipeline.ids.load_ids` and reports the child's peak RSS (`ru_maxrss`) and wall time. The child is
killed after a timeout so the benchmark is bounded.

    .venv/bin/python -m bench.bench_ids [--ids 10000000] [--format text|csv|parquet]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

from bench import write_result

LIMIT_MB = 500
TIMEOUT_S = 300

_CHILD = r"""
import json, resource, sys, time
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
from pipeline.ids import load_ids
baseline = rss_mb()
t0 = time.perf_counter()
idset = load_ids(sys.argv[1], column=sys.argv[2] or None)
elapsed = time.perf_counter() - t0
print(json.dumps({
    "elapsed_s": round(elapsed, 2),
    "baseline_rss_mb": round(baseline, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "counts": idset.counts.as_dict(),
    "invalid_store_bytes": idset.invalid.nbytes(),
    "ids_bytes": idset.ids.nbytes,
}))
"""


def _write_text(path: Path, n: int, rng: random.Random, keep: array[int] | None) -> dict[str, int]:
    """Write the text input; when `keep` is given, also collect each line's value (0 = invalid)."""
    bad = [b"12abc", b"12.7", b"0", b"-5", b" 1 2", b"1e3", b"0x10", b"\xff\xfe", b"9" * 30]
    written = invalid = 0
    with path.open("wb") as f:
        f.write(b"# nightly export IDs\n")
        chunk: list[bytes] = []
        for i in range(n):
            if i % 1000 == 999:
                chunk.append(bad[(i // 1000) % len(bad)])
                invalid += 1
                value = 0
            else:
                # ~5% of IDs repeat one already drawn from the same small pool.
                value = rng.randrange(1, 50_000) if i % 20 == 0 else rng.randrange(1, 2**40)
                chunk.append(str(value).encode() + (b"\r" if i % 7 == 0 else b""))
            if keep is not None:
                keep.append(value)
            written += 1
            if len(chunk) >= 100_000:
                f.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            f.write(b"\n".join(chunk) + b"\n")
    return {"lines": written, "invalid_lines": invalid}


def _convert(text: Path, fmt: str, values: array[int]) -> Path:
    """The same IDs, in the same (unsorted) order, as a CSV column or a Parquet int64 column."""
    if fmt == "csv":
        out = text.with_suffix(".csv")
        with text.open("rb") as src, out.open("wb") as dst:
            src.readline()  # the comment line; CSV has a header instead
            dst.write(b"ID\n")
            shutil.copyfileobj(src, dst)
        return out
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = text.with_suffix(".parquet")
    ids = pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])
    pq.write_table(pa.table({"ID": ids}), out, row_group_size=1 << 20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=10_000_000)
    parser.add_argument("--format", choices=("text", "csv", "parquet"), default="text")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_ids_") as tmp:
        path = Path(tmp) / "ids.txt"
        t0 = time.perf_counter()
        values: array[int] | None = array("q") if args.format == "parquet" else None
        generated = _write_text(path, args.ids, random.Random(args.seed), values)
        if args.format != "text":
            path = _convert(path, args.format, values if values is not None else array("q"))
            del values
        gen_s = time.perf_counter() - t0
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        column = "ID" if args.format != "text" else ""
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), column],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        result = {
            "bench": "bench_ids",
            "format": args.format,
            "ids": args.ids,
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "generate_s": round(gen_s, 1),
            **generated,
            **child,
            "ids_per_s": round(args.ids / child["elapsed_s"]) if child["elapsed_s"] else None,
            "limit_mb": LIMIT_MB,
            "within_limit": child["peak_rss_mb"] < LIMIT_MB,
        }
    write_result("bench_ids", result)


if __name__ == "__main__":
    main()
