"""The folder sink's names: which path in a root is data, a sidecar, a checkpoint or metadata."""

from __future__ import annotations

import re
from typing import Any

import orjson

from pipeline.output.lock import LOCK_NAME
from pipeline.output.store import is_temp_name

RUN_FILE = "_run.json"
MANIFEST_FILE = "_manifest.json"
SUCCESS_FILE = "_SUCCESS"
SCHEMA_FILE = "_schema.json"
STATE_FILE = "_state.json"
#: The IDs an incremental run discovered, kept so that resuming it exports the same set.
INPUT_FILE = "_input.parquet"
CHECKPOINT_DIR = "_checkpoints"
ERRORS_DIR = "_errors"

#: The glob DuckDB and Polars users should read (relative to the root): it matches data files
#: in any partition layout and never `_errors/*.parquet` or hidden temp files.
DATASET_GLOB = "**/part-*.parquet"

#: A run chunk, a piece of one (`000003-p002`, committed before the chunk is complete), a retry.
_KEY = r"(?:\d{6,}(?:-p\d{3,})?|r[0-9A-Za-z]+-\d{6,})"
_DATA_RE = re.compile(rf"^part-(?P<key>{_KEY})-(?P<n>\d+)\.parquet$")
SIDECAR_RE = re.compile(rf"^chunk-(?P<key>{_KEY})\.parquet$")
CHECKPOINT_RE = re.compile(rf"^chunk-(?P<key>{_KEY})\.json$")
_METADATA_FILES = {
    RUN_FILE,
    MANIFEST_FILE,
    SUCCESS_FILE,
    SCHEMA_FILE,
    STATE_FILE,
    INPUT_FILE,
    LOCK_NAME,
}


def dataset_glob(root: str) -> str:
    """The recommended glob for `read_parquet(..., hive_partitioning=true)` / `pl.scan_parquet`."""
    return root.rstrip("/") + "/" + DATASET_GLOB


def dumps(value: Any) -> bytes:
    """JSON as every metadata file is written: indented, keys sorted (stable diffs)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def chunk_key(chunk_index: int) -> str:
    return f"{chunk_index:06d}"


def checkpoint_path(key: str) -> str:
    return f"{CHECKPOINT_DIR}/chunk-{key}.json"


def sidecar_path(key: str) -> str:
    return f"{ERRORS_DIR}/chunk-{key}.parquet"


def data_name(key: str, n: int) -> str:
    return f"part-{key}-{n}.parquet"


def is_data_path(path: str) -> bool:
    parts = path.split("/")
    if not _DATA_RE.match(parts[-1]):
        return False
    return len(parts) == 1 or (len(parts) == 2 and "=" in parts[0] and parts[0][0] not in "._")


def is_sidecar_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and parts[0] == ERRORS_DIR and bool(SIDECAR_RE.match(parts[1]))


def is_ours(path: str) -> bool:
    parts = path.split("/")
    if is_temp_name(parts[-1]) or is_data_path(path):
        return True
    if len(parts) == 1:
        return path in _METADATA_FILES
    return len(parts) == 2 and (
        (parts[0] == CHECKPOINT_DIR and bool(CHECKPOINT_RE.match(parts[1])))
        or is_sidecar_path(path)
    )
