"""Synthetic deal tables for the output tests, and the child process of the crash test.

Run as a script: `python synth.py ROOT CHUNKS CRASH_AFTER` writes CHUNKS chunks into ROOT (resuming
what is committed) and SIGKILLs itself at its CRASH_AFTER-th low-level file operation (0 = never).
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa

ROWS_PER_CHUNK = 120
FAIL_EVERY = 7  # every 7th ID fails to fetch and goes to the sidecar instead of the data
SEEN = datetime(2024, 9, 1, tzinfo=UTC)

SCHEMA = pa.schema(
    [
        pa.field("ID", pa.int64(), nullable=False),
        pa.field("TITLE", pa.string()),
        pa.field("DATE_CREATE", pa.timestamp("us", tz="UTC")),
        pa.field("OPPORTUNITY", pa.decimal128(18, 2)),
        pa.field("STAGE_ID", pa.string()),
        pa.field("CATEGORY_ID", pa.int64()),
        pa.field("TAGS", pa.list_(pa.string())),
        pa.field("CLOSED", pa.bool_()),
    ]
)


def chunk_ids(chunk: int, rows: int = ROWS_PER_CHUNK) -> list[int]:
    return list(range(chunk * rows + 1, chunk * rows + rows + 1))


def deal_row(i: int) -> dict[str, Any]:
    return {
        "ID": i,
        "TITLE": f"Сделка #{i}",
        # spread over ~6 months; every 50th deal has no creation date (null partition)
        "DATE_CREATE": None
        if i % 50 == 0
        else datetime(2024, 3, 1, tzinfo=UTC) + timedelta(hours=37 * (i % 120)),
        "OPPORTUNITY": Decimal(i) * Decimal("10.25"),
        "STAGE_ID": ["NEW", "C1:WON", "LOSE"][i % 3],
        "CATEGORY_ID": None if i % 11 == 0 else i % 4,
        "TAGS": [f"t{i % 5}"] if i % 2 else [],
        "CLOSED": i % 3 != 0,
    }


def deals(ids: list[int]) -> pa.Table:
    return pa.Table.from_pylist([deal_row(i) for i in ids], schema=SCHEMA)


def chunk(
    index: int, rows: int = ROWS_PER_CHUNK, run_id: str = "run-1"
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """(data, sidecar rows) of one chunk: failures are retryable every other time."""
    from pipeline.outcomes import DealFailed
    from pipeline.output import failed_row

    ids = chunk_ids(index, rows)
    ok = [i for i in ids if i % FAIL_EVERY]
    failed = [
        failed_row(
            DealFailed(
                id=i,
                code="INTERNAL_SERVER_ERROR" if i % 2 else "NOT_FOUND",
                message="boom" if i % 2 else "Not found",
                http_status=500 if i % 2 else 400,
                attempts=5 if i % 2 else 1,
                retryable=bool(i % 2),
                error_class="transient" if i % 2 else "permanent",
            ),
            run_id=run_id,
            seen=SEEN,
        )
        for i in ids
        if i % FAIL_EVERY == 0
    ]
    return deals(ok), failed


def _arm(crash_after: int) -> None:
    """SIGKILL this process at its n-th write/rename/unlink: lands between and inside files."""
    count = 0
    originals = {name: getattr(os, name) for name in ("write", "replace", "unlink", "fsync")}

    def wrap(name: str) -> Any:
        real = originals[name]

        def hooked(*args: Any, **kwargs: Any) -> Any:
            nonlocal count
            count += 1
            if count == crash_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return hooked

    for name in originals:
        setattr(os, name, wrap(name))


def main(argv: list[str]) -> int:
    from pipeline.config import OutputConfig
    from pipeline.output import OutputRoot

    root, chunks, crash_after = argv[0], int(argv[1]), int(argv[2])
    if crash_after:
        _arm(crash_after)
    config = OutputConfig(root=root, max_rows_per_group=50)
    with OutputRoot.open(config, "run-1", input_fingerprint="fp-1", lock_settle_s=0) as out:
        print("opened", flush=True)
        done = out.committed_chunks()
        for index in range(chunks):
            if index in done:
                continue
            data, errors = chunk(index)
            out.write_chunk(index, data, errors, {"requested": ROWS_PER_CHUNK})
            print("chunk", index, flush=True)
        out.finalize(counts={"requested": chunks * ROWS_PER_CHUNK})
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
