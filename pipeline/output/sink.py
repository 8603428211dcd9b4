"""The sink protocol: what a run and a retry need from a destination (plus one thread bridge).

`in_thread` is how async code commits a chunk to any sink.

`OutputRoot` (partitioned Parquet in a folder or bucket) and `DeltaSink` (one Delta table merged
on ID, `pipeline.output.delta`) implement it. A sink
opens locked for one run, recovering crash debris and applying the existing-data policy first;
commits are all-or-nothing and idempotent per chunk key, so a resumed run re-commits only what
is missing; failures travel with their chunk (the sidecar rows) and a retry merges its results
into them; `finalize` writes the manifest, then the completion marker, then the run state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeAlias, TypeVar

import pyarrow as pa

from pipeline.config import OutputConfig

#: Sidecar rows: a table of SIDECAR_SCHEMA, dicts with any subset of its columns, or nothing.
Rows: TypeAlias = pa.Table | Iterable[Mapping[str, Any]] | None

_R = TypeVar("_R")


class Sink(Protocol):
    """One destination, opened by one run (or one retry) and closed by it."""

    config: OutputConfig
    run_id: str
    #: True when this run continues an unfinished one (skip `committed_chunks()`).
    resumed: bool

    @property
    def uri(self) -> str:
        """Where the data goes, fit for messages (no credentials)."""
        ...

    def recover(self) -> None:
        """Delete crash debris no commit vouches for (`open` already does; idempotent)."""
        ...

    def committed_chunks(self) -> set[int]:
        """Indices of the run's chunks that are committed: a resume skips these."""
        ...

    def checkpoint(self, chunk_index: int) -> dict[str, Any] | None:
        """The commit record of one chunk, or None."""
        ...

    def write_chunk(
        self,
        chunk_index: int,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Commit one chunk's data and its failures (sidecar rows), all-or-nothing.

        A committed chunk is only rewritten with `replace=True` (a resuming run skips committed
        chunks, so anything else is a bug that would drop the chunk's rows); its old files then
        go, also in partitions the new data does not touch. Returns the checkpoint record.
        """
        ...

    async def awrite_chunk(
        self,
        chunk_index: int,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        """`write_chunk` from async code (see `in_thread`)."""
        ...

    def file_groups(self, data: pa.Table) -> pa.Array | None:
        """Each row's position among the files a commit of `data` writes (0, 1, ... in the
        order it writes them), or None when the sink has no use for an order other than by ID.

        A run builds its chunks in this order (by ID within a file, `TableBuilder`'s `group`),
        so a commit writes each file from a zero-copy slice instead of copying its rows out of
        an ID-ordered chunk. Any order of the rows commits the same files."""
        ...

    def committed_pieces(self) -> dict[int, frozenset[int]]:
        """For each chunk not committed whole: the IDs its committed pieces account for (a
        resume fetches only the chunk's other IDs)."""
        ...

    def write_piece(
        self,
        chunk_index: int,
        data: pa.Table,
        ids: tuple[int, ...],
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Commit part of a chunk that is not complete yet (so a crash loses at most the work
        since the last commit); `ids` are exactly the IDs it accounts for."""
        ...

    async def awrite_piece(
        self,
        chunk_index: int,
        data: pa.Table,
        ids: tuple[int, ...],
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`write_piece` from async code (see `in_thread`)."""
        ...

    def retryable_ids(self) -> list[int]:
        """IDs whose fetch failure a retry may fix, ascending."""
        ...

    def apply_retry(
        self, data: pa.Table, errors: Rows = None, stats: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Commit re-fetched deals as a new chunk and take their IDs out of the old sidecars.

        `data` holds the deals that now succeeded, `errors` the fetch rows of IDs that failed
        again (their `attempts` are added to the earlier ones, `first_seen` is kept) plus any
        normalise rows. Every ID in either must be a retryable sidecar entry. May be called
        several times per session; call `finalize()` afterwards. The new chunk is named
        `r<run id>-<seq>` so it never collides with run chunks or earlier retries.
        """
        ...

    async def aapply_retry(
        self, data: pa.Table, errors: Rows = None, stats: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """`apply_retry` from async code (see `in_thread`)."""
        ...

    def write_input(self, ids: pa.Array, meta: Mapping[str, Any]) -> None:
        """Keep a discovered ID list so a resume exports the same set."""
        ...

    def write_schema(self, schema: Mapping[str, Any]) -> None: ...

    def read_schema(self) -> dict[str, Any] | None: ...

    def read_watermark(self) -> Any:
        """The watermark of the last run that completed before this one opened."""
        ...

    def previous_schema(self) -> dict[str, Any] | None:
        """The schema snapshot of that run: what drift is measured against."""
        ...

    def heartbeat(self) -> None:
        """Keep the run's lock fresh during long waits."""
        ...

    def finalize(
        self,
        *,
        counts: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | Any = None,
        limits: Mapping[str, Any] | None = None,
        completed: bool = True,
        watermark: Any = None,
        schema_fingerprint: str | None = None,
        schema_drift: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the manifest (after everything else), then the completion marker, then the
        run state; returns the manifest.

        `counts` are the run's own totals (requested, unique, duplicates_dropped, ...); the
        output's totals (exported, failed, failed_by_class, invalid_input_lines,
        normalise_errors, retryable_failed) are computed from the checkpoints and win on a name
        clash. `config` is masked (`mask_config`); `limits` is what the portal's limits cost.
        With `completed=False` the manifest records progress and no `_SUCCESS` is written.
        `watermark` (any JSON value) goes to `_state.json` only for a completed run, and only
        after `_SUCCESS`, together with the schema snapshot (`previous_schema()` of the next run).
        `schema_fingerprint` defaults to a hash of the stored schema snapshot, so it names the
        schema alone, whichever session or `retry` finalizes. `schema_drift` is what changed
        since the previous completed run. Values left as None are carried over from the previous
        finalize (so `retry` keeps the run's counts).
        """
        ...

    def close(self) -> None:
        """Release the lock; an unfinalized sink stays resumable."""
        ...

    def __enter__(self) -> Sink:
        """A run holds its sink in a `with` block: leaving it closes the sink (`close`)."""
        ...

    def __exit__(self, *exc: object) -> None: ...


async def in_thread(fn: Callable[..., _R], /, *args: Any, **kwargs: Any) -> _R:
    """Run a commit in a worker thread, so encoding and fsync never block the event loop.

    Cancellation waits for the commit to finish (it is bounded and all-or-nothing) and then
    propagates, so the caller never closes the sink under a write still in flight.
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result
