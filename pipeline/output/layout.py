"""The folder sink's names: which path in a root is data, a sidecar, a checkpoint or metadata."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import orjson

from pipeline.output.lock import LOCK_NAME
from pipeline.output.store import is_temp_name

RUN_FILE = "_run.json"
MANIFEST_FILE = "_manifest.json"
SUCCESS_FILE = "_SUCCESS"
SCHEMA_FILE = "_schema.json"
CHECKPOINT_DIR = "_checkpoints"
ERRORS_DIR = "_errors"
#: Where a chunk's files wait until its commit moves them into place. The `_` prefix keeps
#: pyarrow's discovery out, and the `.staged` suffix keeps every `*.parquet` glob (DuckDB,
#: Polars) away from them too, since those globs do not skip `_` directories.
STAGING_DIR = "_staging"
STAGED_SUFFIX = ".staged"

#: Run state, apart from the dataset's files: one directory at the top of the output (the
#: folder the user names), never inside a data directory.
STATE_DIR = "_deal_export"
STATE_PATH = f"{STATE_DIR}/state.json"
#: The IDs an incremental run discovered, kept so that resuming it exports the same set.
PENDING_INPUT_PATH = f"{STATE_DIR}/input.parquet"
_STATE_FILES = {STATE_PATH, PENDING_INPUT_PATH}
#: Where outputs written before the state moved kept it (read once, then migrated).
LEGACY_STATE_FILE = "_state.json"
LEGACY_INPUT_FILE = "_input.parquet"

#: `existing_data_behavior = "new_run"`: each run writes into its own `run_id=<id>/` directory,
#: a Hive key, so a reader of the whole output gets a `run_id` column for free.
RUN_DIR_KEY = "run_id"

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
    LEGACY_STATE_FILE,
    LEGACY_INPUT_FILE,
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


def staging_dir(key: str) -> str:
    return f"{STAGING_DIR}/{key}"


def staged_path(key: str, name: str) -> str:
    """Where file `name` of chunk `key` waits for its commit (flat: the final path is known)."""
    return f"{staging_dir(key)}/{name}{STAGED_SUFFIX}"


def run_dir_name(run_id: str) -> str:
    return f"{RUN_DIR_KEY}={quote(run_id, safe='')}"


def is_run_dir(name: str) -> bool:
    return name.startswith(RUN_DIR_KEY + "=") and len(name) > len(RUN_DIR_KEY) + 1


def is_data_path(path: str) -> bool:
    parts = path.split("/")
    if not _DATA_RE.match(parts[-1]):
        return False
    return len(parts) == 1 or (len(parts) == 2 and "=" in parts[0] and parts[0][0] not in "._")


def is_sidecar_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and parts[0] == ERRORS_DIR and bool(SIDECAR_RE.match(parts[1]))


def is_ours(path: str) -> bool:
    """A path of one export's root (the whole output, or one `run_id=` directory of it)."""
    parts = path.split("/")
    if is_temp_name(parts[-1]) or is_data_path(path) or path in _STATE_FILES:
        return True
    if parts[0] == STAGING_DIR:
        return len(parts) == 3 and parts[2].endswith(STAGED_SUFFIX)
    if len(parts) == 1:
        return path in _METADATA_FILES
    return len(parts) == 2 and (
        (parts[0] == CHECKPOINT_DIR and bool(CHECKPOINT_RE.match(parts[1])))
        or is_sidecar_path(path)
    )


def is_ours_in_runs(path: str) -> bool:
    """A path of a `new_run` output: the lock and state at the top, an export per run dir."""
    top, _, rest = path.partition("/")
    if is_run_dir(top) and rest:
        return is_ours(rest) and not rest.startswith(STATE_DIR + "/")
    return path in _STATE_FILES or path == LOCK_NAME or is_temp_name(path.rsplit("/", 1)[-1])


def holds_run_dirs(paths: list[str]) -> bool:
    return any(is_run_dir(p.split("/", 1)[0]) and "/" in p for p in paths)
