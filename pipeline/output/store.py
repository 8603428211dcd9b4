"""The one filesystem seam of the output layer: an output root on a local disk or in object storage.

Every other module of `pipeline.output` reads and writes through `Store`, with paths relative to
the root and `/`-separated, so local and object-store outputs share all logic.

Atomicity, as each store allows it:

* local: `write_atomic` writes `.<name>.<random>.tmp` in the target directory, fsyncs it and
  `os.replace`s it over the final name. A reader sees the old file or the new one, never a half
  one; a crash leaves at most a hidden temp file (dot-prefixed, not `*.parquet`), removed by
  `remove_temp_files` on the next open.
* object stores (S3, GCS via pyarrow): there is no rename (pyarrow's `move` is copy + delete), but
  a single object upload becomes visible only when it completes. `write_atomic` therefore uploads
  the final key directly from one in-memory buffer: a listing shows a finished object or nothing.
  An interrupted upload is never completed with partial content because the bytes are handed over
  in one call before the stream is closed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import orjson

# `pyarrow.fs` also imports the S3, GCS, Azure and HDFS bindings, and the S3 one loads
# libarrow_s3 with the AWS SDK: about 8 MB of resident code pages on a run that writes to a
# local folder. Its classes are those of `pyarrow._fs` (pyarrow `python/pyarrow/fs.py` imports
# them from there), so local roots need only that; `pyarrow.fs` is imported for a URI root.
import pyarrow._fs as pafs

from pipeline.errors import OutputError

_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def os_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Disk full, permission denied, store unreachable: an OutputError, never a traceback.

    The message names the first argument's `uri` when it has one (an open sink)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            uri = getattr(args[0], "uri", None) if args else None
            where = uri if isinstance(uri, str) else "the output root"
            raise OutputError(f"cannot write {where}: {exc}") from exc

    return wrapper


def json_object(raw: bytes | None) -> dict[str, Any] | None:
    """`raw` parsed as a JSON object; None for nothing, garbage (a torn write) or a non-object."""
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class Entry:
    """A file below the root: its relative path and size in bytes."""

    path: str
    size: int


def is_temp_name(name: str) -> bool:
    """True for the hidden temp names `write_atomic` uses (basename only)."""
    return bool(_TEMP_RE.match(name))


class Store:
    """An output root. Local roots use `os` directly (fsync, rename); others use pyarrow."""

    def __init__(self, fs: pafs.FileSystem, base: str, *, uri: str) -> None:
        self.fs = fs
        self.base = base.rstrip("/") or base
        self.uri = uri
        self.local = isinstance(fs, pafs.LocalFileSystem)

    @classmethod
    def from_root(cls, root: str, filesystem: pafs.FileSystem | None = None) -> Store:
        """Resolve `root`: a local path (relative or absolute) or a `scheme://` URI pyarrow knows.

        With an explicit `filesystem`, `root` is a path on it (e.g. `bucket/prefix` for S3).
        """
        if filesystem is not None:
            return cls(filesystem, root.rstrip("/"), uri=root)
        if "://" not in root:
            path = os.path.abspath(os.path.expanduser(root))
            return cls(pafs.LocalFileSystem(), path, uri=path)
        # As pyarrow.fs is imported, it registers the S3 finalizer pyarrow runs at exit
        # (`ensure_s3_finalized`, GH-38364); an object-store root gets that as before.
        import pyarrow.fs  # noqa: F401

        try:
            fs, path = pafs.FileSystem.from_uri(root)
        except (ValueError, OSError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) here
            raise OutputError(f"cannot open output root {display_uri(root)}: {exc}") from None
        return cls(fs, path, uri=root)

    def child(self, rel: str) -> Store:
        """The directory `rel` of this root as a root of its own (same filesystem)."""
        rel = rel.strip("/")
        # The path goes before a URI's query (`s3://b/p?endpoint_override=...`).
        where, sep, query = self.uri.partition("?")
        return Store(self.fs, self.abs(rel), uri=f"{where.rstrip('/')}/{rel}{sep}{query}")

    # -- paths ----------------------------------------------------------------------------------

    def abs(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self.base}/{rel}" if rel else self.base

    # -- reading --------------------------------------------------------------------------------

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's content, or None if it does not exist."""
        path = self.abs(rel)
        if self.local:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        try:
            with self.fs.open_input_stream(path) as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            if "not exist" in str(exc).lower() or "not found" in str(exc).lower():
                return None
            raise

    def exists(self, rel: str) -> bool:
        info = self.fs.get_file_info(self.abs(rel))
        return bool(info.type != pafs.FileType.NotFound)

    def list_files(self, rel: str = "") -> list[Entry]:
        """Every file below `rel` (recursive), as paths relative to the root; [] if missing."""
        base = self.abs(rel)
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        out: list[Entry] = []
        prefix = self.abs("").rstrip("/") + "/"
        for info in self.fs.get_file_info(sel):
            if info.type != pafs.FileType.File:
                continue
            path = info.path
            if not path.startswith(prefix):  # pragma: no cover - pyarrow returns full paths
                continue
            out.append(Entry(path[len(prefix) :], int(info.size or 0)))
        return out

    def list_dirs(self) -> list[str]:
        """Top-level directories of the root (object stores: common prefixes)."""
        sel = pafs.FileSelector(self.abs(""), recursive=False, allow_not_found=True)
        return [
            info.base_name
            for info in self.fs.get_file_info(sel)
            if info.type == pafs.FileType.Directory
        ]

    # -- writing --------------------------------------------------------------------------------

    def ensure_root(self) -> None:
        """Create the root directory (local) or check the bucket is reachable (object stores)."""
        self.refuse_a_file()
        try:
            if self.local:
                os.makedirs(self.abs(""), exist_ok=True)
            else:
                self.fs.get_file_info(pafs.FileSelector(self.abs(""), allow_not_found=True))
        except OSError as exc:
            raise OutputError(f"cannot use output root {display_uri(self.uri)}: {exc}") from None

    def refuse_a_file(self) -> None:
        """A local root that names an existing file is a mistake worth one clear line (the
        alternative is the operating system's `[Errno 17] File exists`)."""
        if self.local and os.path.lexists(self.base) and not os.path.isdir(self.base):
            raise OutputError(
                f"output root {self.uri} is an existing file, not a directory; name a directory "
                "(it is created if missing)"
            )

    def read_json(self, rel: str) -> dict[str, Any] | None:
        """The JSON object in `rel`, or None if it is missing, empty or not an object."""
        return json_object(self.read_bytes(rel))

    def write_atomic(self, rel: str, data: bytes | memoryview) -> None:
        """Make `rel` hold exactly `data`, all or nothing (see the module docstring)."""
        path = self.abs(rel)
        if not self.local:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            # Ctrl-C and CancelledError included: nothing half-written may stay behind.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def move(self, src: str, dst: str) -> None:
        """Put the finished file `src` at `dst`, replacing it.

        Locally a rename, atomic. Object stores have no rename: the store copies the object
        server-side (S3 CopyObject), which makes `dst` appear whole or not at all, and then the
        staged object is deleted.
        """
        if self.local:
            target = self.abs(dst)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(self.abs(src), target)
            return
        self.fs.copy_file(self.abs(src), self.abs(dst))
        self.delete(src)

    def sync_dirs(self, rels: set[str]) -> None:
        """Make renames in these directories durable before a checkpoint refers to them."""
        if not self.local:
            return
        for rel in rels:
            path = self.abs(rel)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def delete(self, rel: str) -> None:
        """Remove a file; a missing file is fine."""
        path = self.abs(rel)
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(path)

    def delete_dir(self, rel: str) -> None:
        """Remove a directory and everything below it; missing is fine."""
        path = self.abs(rel)
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(path)
        else:
            self.fs.delete_file(path)

    def remove_dir_if_empty(self, rel: str) -> None:
        """Drop one directory if nothing is left in it (local only; object stores have none)."""
        if self.local:
            with contextlib.suppress(OSError):
                os.rmdir(self.abs(rel))

    def remove_empty_dirs(self) -> None:
        """Drop directories left empty by cleanup (local only; object stores have no dirs)."""
        if not self.local:
            return
        root = self.abs("")
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            if dirpath != root and not dirnames and not filenames:
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)

    def remove_temp_files(self) -> int:
        """Delete hidden temp files left by a crash mid-write; returns how many."""
        removed = 0
        for entry in self.list_files():
            if is_temp_name(entry.path.rsplit("/", 1)[-1]):
                self.delete(entry.path)
                removed += 1
        return removed


def display_uri(uri: str) -> str:
    """The root as it may appear in messages and the manifest: credentials removed."""
    from pipeline.redact import mask_url

    return mask_url(uri)


__all__ = ["Entry", "Store", "display_uri", "is_temp_name"]
