"""Where a run's output may go: not over an export of the other format, not inside another export.

A reader finds an export by its root: the folder sink's `**/part-*.parquet` glob (its manifest's
`dataset_glob`) or a Delta table's log. A Delta table written into a folder export's root, or an
export written below another export's root, puts its files where that reader looks, and every
deal it holds is read twice. Local roots only: an object store is checked by the sinks' own
opening (a listing per parent prefix would cost requests for every run).
"""

from __future__ import annotations

import os

from pipeline.errors import UsageError
from pipeline.output.delta import is_delta_output
from pipeline.output.layout import CHECKPOINT_DIR, MANIFEST_FILE

#: What marks a folder export's root (a Delta table's is its log: `is_delta_output`).
_FOLDER_MARKS = (MANIFEST_FILE, CHECKPOINT_DIR)


def _marks(directory: str) -> str | None:
    """The kind of export ("folder" or "delta") whose root the local `directory` is, if any."""
    if is_delta_output(directory):
        return "delta"
    if any(os.path.exists(os.path.join(directory, mark)) for mark in _FOLDER_MARKS):
        return "folder"
    return None


def check_placement(root: str, table_format: str) -> None:
    """Raise UsageError when a run of `table_format` ("parquet" or "delta") into the local
    `root` would write over an export of the other format or inside another export."""
    if "://" in root:
        return
    path = os.path.abspath(os.path.expanduser(root))
    here = _marks(path)
    if table_format == "delta" and here == "folder":
        raise UsageError(
            f"{root} holds a folder export (Parquet files and {CHECKPOINT_DIR}): a Delta table "
            "there would be read together with them; choose another --out for the Delta table"
        )
    if table_format != "delta" and here == "delta":
        raise UsageError(
            f"{root} holds a Delta table: add --table-format delta (or choose another "
            "--out for a folder export)"
        )
    parent = os.path.dirname(path)
    while parent and parent != path:
        kind = _marks(parent)
        if kind is not None:
            raise UsageError(
                f"{root} is inside the {'Delta table' if kind == 'delta' else 'folder export'} "
                f"at {parent}: its readers would read this output's files as its own; choose an "
                "--out outside it"
            )
        path, parent = parent, os.path.dirname(parent)


__all__ = ["check_placement"]
