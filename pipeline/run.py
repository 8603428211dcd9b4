"""One export run, end to end: the only module that knows every stage.

    IDs (file / ranges / stdin / discovery) ─> chunks of `output.chunk_size` sorted unique IDs
      ─> fetch_batches (one continuous stream, so the portal stays busy across chunk borders;
         one handover per answered request)
      ─> per-chunk buffers ─(bounded queue)─> writer task: normalise + write_chunk (checkpoint)
      ─> finalize (manifest, _SUCCESS, watermark) ─> RunResult (counts, exit code)

Chunks are cut from the ascending unique IDs, so the same input always yields the same chunks:
a re-run skips the committed ones and rewrites the others under the same file names. Buffers of
unfinished chunks are bounded by the fetch engine's in-flight window, not by the input size.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa

from pipeline.clock import Clock, ScaledClock
from pipeline.config import OutputConfig, RunConfig
from pipeline.config_load import IdsConfig, effective_config_dict
from pipeline.entity import DEAL, Entity, entity_named
from pipeline.errors import OutputError, PipelineError, UsageError
from pipeline.fetch import (
    FetchStats,
    PortalClient,
    discover_modified_ids,
    fetch_batches,
    fetch_deals,
)
from pipeline.fetch.auth import TokenSink, TokensRotated
from pipeline.ids import IdSet, load_ids
from pipeline.ids.idset import IdCollector, IdRuns
from pipeline.normalise import EntitySchema, SchemaDrift, TableBuilder, compare_snapshots
from pipeline.outcomes import DealFailed, DealFetched, FetchedBatch
from pipeline.output import (
    OutputRoot,
    PartitionSpec,
    failed_table,
    holds_retryable_failures,
    invalid_input_row,
    read_pending_input,
    read_watermark,
    record_error_row,
    with_rows,
)
from pipeline.output.delta import (
    DeltaSink,
    delta_entity,
    delta_watermark,
    is_delta_output,
    locate,
)
from pipeline.output.layout import MANIFEST_FILE
from pipeline.output.lineage import with_lineage
from pipeline.output.manifest import fingerprint_id_arrays
from pipeline.output.partition import partition_problem
from pipeline.output.placement import check_placement
from pipeline.output.sink import Sink
from pipeline.output.store import Store
from pipeline.progress import Progress
from pipeline.summary import RunCounts, exit_code_for

if TYPE_CHECKING:
    from pipeline.reconcile import ReconcileResult

log = logging.getLogger(__name__)

#: Completed chunks waiting for the writer; small, so a slow disk slows the fetch (backpressure).
WRITE_QUEUE_SIZE = 1

#: Deal payloads a chunk buffer holds before they become typed Arrow columns: the dicts cost
#: several kilobytes a deal, the columns a few hundred bytes, and each normalise call has a fixed
#: cost that parts of this size make small (bench/bench_normalise.py --chunk).
NORMALISE_EVERY = 500

#: Outcomes counted before the progress display hears of them (it takes a lock and the clock).
PROGRESS_EVERY = 50

#: An answer with at least this many deals is converted at once, so its dicts die with it.
CONVERT_AT_ONCE = 250

#: Work is committed at least this often (run's clock, seconds): a chunk not complete by then
#: is committed as a piece, so a crash on a slow portal loses at most a minute of its budget.
PIECE_EVERY_S = 60.0

#: A chunk whose typed parts reach this many Arrow bytes before it is complete is committed as
#: a piece, so memory is bounded by bytes, not by deals: a chunk of 10,000 simulator deals
#: (~2 kB of JSON each) holds ~12.8 MB from list answers, ~14.3 MB from get answers (typed in
#: smaller parts), and is never cut, while deals of 20 kB (long notes,
#: pasted e-mails) would hold ~150 MB per chunk. Such pieces take a write slot like a chunk.
PIECE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a finished run reports: the verdict, and the figures behind it."""

    run_id: str
    output: str
    counts: RunCounts
    exit_code: int
    seconds: float
    resumed: bool
    chunks_written: int
    chunks_skipped: int
    fetch_stats: dict[str, float | int]
    drift: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    #: The CRM entity exported (`pipeline.entity.ENTITIES`), for the summary's words.
    entity: str = DEAL.name
    #: `--detect-deletes`: the reconciliation's figures (`ReconcileResult.fields`) and its
    #: sentence under "summary"; empty when deletions were not looked for.
    deletions: dict[str, Any] = field(default_factory=dict)


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class _ChunkBuffer:
    """Outcomes of one chunk until every one of its IDs has exactly one: fetched deals as typed
    parts (`builder`) plus the last payloads not yet converted (`pending`), failures as is.

    `received` counts every outcome this session; the rest holds only what no piece took yet.
    `since`: clock.monotonic() when the oldest outcome not yet committed arrived (None: none).
    """

    index: int
    expected: int
    builder: TableBuilder
    #: Deals not converted yet: requested IDs and their payloads, position by position.
    pending_ids: list[int] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    failed: list[DealFailed] = field(default_factory=list)
    received: int = 0
    since: float | None = None

    @property
    def complete(self) -> bool:
        return self.received == self.expected

    def add_deals(self, ids: list[int], payloads: list[dict[str, Any]]) -> None:
        self.received += len(ids)
        self.pending_ids.extend(ids)
        self.pending.extend(payloads)

    def add_failed(self, failed: list[DealFailed]) -> None:
        self.received += len(failed)
        self.failed.extend(failed)

    def take_pending(self) -> tuple[list[int], list[dict[str, Any]]]:
        taken = self.pending_ids, self.pending
        self.pending_ids, self.pending = [], []
        return taken

    def take_piece(self) -> _ChunkBuffer | None:
        """What the buffer holds so far, as a piece to commit (None when it holds nothing);
        the buffer goes on collecting the chunk's other IDs."""
        if not (self.builder.rows or self.pending or self.failed):
            return None
        held = len(self.pending) + len(self.failed) + self.builder.rows
        piece = _ChunkBuffer(
            self.index, held, self.builder, self.pending_ids, self.pending, self.failed, held
        )
        self.builder = self.builder.fresh()
        self.pending_ids, self.pending, self.failed, self.since = [], [], [], None
        return piece


@dataclass(frozen=True, slots=True)
class _Unit:
    """A write for the writer task: a complete chunk, or a piece of one (`sized`: cut for
    its bytes, holding a write slot, as a chunk does; a piece cut for its age holds none)."""

    buf: _ChunkBuffer
    piece: bool = False
    sized: bool = False


class _Chunks:
    """Chunk boundaries over the ascending unique IDs, and which chunks are still to do."""

    def __init__(
        self,
        ids: pa.Array | IdRuns,
        size: int,
        committed: set[int],
        pieces: Mapping[int, frozenset[int]] | None = None,
    ) -> None:
        self.ids = ids
        self.size = size
        self.count = (len(ids) + size - 1) // size
        self.pending = [i for i in range(self.count) if i not in committed]
        #: IDs of pending chunks already committed in pieces: skipped, never fetched again.
        self.pieces = {i: ids for i, ids in (pieces or {}).items() if i not in committed}
        self._starts = [ids[i * size].as_py() for i in range(self.count)]

    def remaining(self, index: int) -> int:
        """IDs of chunk `index` that still need an outcome (its pieces hold the others)."""
        return len(self.ids_of(index)) - len(self.pieces.get(index, ()))

    def index_of(self, deal_id: int) -> int:
        return bisect.bisect_right(self._starts, deal_id) - 1

    def ids_of(self, index: int) -> pa.Array:
        return self.ids.slice(index * self.size, self.size)

    def stream(self) -> Iterator[int]:
        """The IDs still to fetch, chunk by chunk; a plain iterator, which the fetch engine
        takes a slice at a time (an async one costs an await per ID, a generator a resumption
        per ID: `chain` walks each chunk's list in C)."""
        return chain.from_iterable(self._pending_lists())

    def _pending_lists(self) -> Iterator[list[int]]:
        for index in self.pending:
            done = self.pieces.get(index)
            ids = self.ids_of(index).to_pylist()
            yield ids if done is None else [deal_id for deal_id in ids if deal_id not in done]


@dataclass(frozen=True, slots=True)
class ResolvedIds:
    """The IDs of a run; for incremental runs also the watermark and how they were found."""

    idset: IdSet
    watermark: str | None = None
    discovery: dict[str, Any] | None = None
    #: Taken from the unfinished run being resumed instead of asking the portal again.
    reused: bool = False


def discovery_start(ids: IdsConfig, output_root: str, entity: Entity = DEAL) -> datetime:
    """Since when an incremental selection asks the portal (no request made); UsageError if
    the settings cannot say."""
    since = ids.modified_since
    if ids.since_last_run:
        previous = _watermark(output_root)
        if previous is not None:
            since = datetime.fromisoformat(str(previous))
        elif ids.start_from is not None:
            since = ids.start_from  # the first incremental run: nothing to continue from yet
        else:
            raise UsageError(
                f"--since-last-run: {output_root} holds no watermark of a previous successful "
                "run; add --start-from TIME for the first run (or run once with "
                "--modified-since TIME or --ids)"
            )
    if since is None:
        raise UsageError(
            f"say which {entity.plural} to export: --ids FILE, --modified-since or --since-last-run"
        )
    return since


def _watermark(output_root: str) -> Any:
    """The last completed run's watermark: from a Delta table's history, else `_state.json`
    (read first on an object store, where asking for a Delta log costs a request)."""
    if "://" not in output_root:
        if is_delta_output(output_root):
            return delta_watermark(output_root)
        return read_watermark(output_root)
    found = read_watermark(output_root)
    if found is None and is_delta_output(output_root):
        return delta_watermark(output_root)
    return found


def _open_sink(output: OutputConfig, run_id: str, fingerprint: str, entity: str) -> Sink:
    check_placement(output.root, output.table_format)
    if output.table_format == "delta":
        return DeltaSink.open(output, run_id, input_fingerprint=fingerprint, entity=entity)
    return OutputRoot.open(output, run_id, input_fingerprint=fingerprint)


async def resolve_ids(
    ids: IdsConfig,
    client: PortalClient,
    output_root: str,
    *,
    stdin: BinaryIO | None = None,
) -> ResolvedIds:
    """The IDs of this run: read from the input, or discovered through the client's entity's
    list method.

    An interrupted incremental run is resumed with the IDs it discovered then (kept in the
    output root), not with a fresh discovery: the portal's answer moves on as records change,
    and a different ID list would cut different chunks than the ones already committed.
    """
    if ids.source is not None:
        idset = await asyncio.to_thread(
            load_ids,
            ids.source,
            column=ids.column,
            fmt=ids.format,  # type: ignore[arg-type]
            stdin=stdin,
            noun=client.entity.name,
        )
        return ResolvedIds(idset)
    since = discovery_start(ids, output_root, client.entity)
    discovery = {"modified_since": since.isoformat(), "overlap_s": ids.overlap_s}
    pending = read_pending_input(output_root) if output_root else None
    if pending is not None and pending[1].get("discovery") == discovery:
        stored, meta = pending
        collector = IdCollector()
        collector.values.extend(stored.to_pylist())
        collector.lines = len(stored)
        idset = collector.finish(f"modified since {since.isoformat()} (as first discovered)")
        return ResolvedIds(idset, meta.get("watermark"), discovery, reused=True)
    watermark = datetime.fromtimestamp(client.clock.now(), UTC).isoformat(timespec="seconds")
    collector = IdCollector()
    async for deal_id in discover_modified_ids(client, since, timedelta(seconds=ids.overlap_s)):
        collector.values.append(deal_id)
        collector.lines += 1
    idset = collector.finish(f"modified since {since.isoformat()}")
    return ResolvedIds(idset, watermark, discovery)


class _Exporter:
    """The state of one run while it fetches and writes."""

    def __init__(
        self,
        out: Sink,
        schema: EntitySchema,
        chunks: _Chunks,
        idset: IdSet,
        progress: Progress | None,
        client: PortalClient,
        committed: set[int],
    ) -> None:
        self.out = out
        self.schema = schema
        self.chunks = chunks
        self.idset = idset
        self.progress = progress
        self.client = client
        self.buffers: dict[int, _ChunkBuffer] = {}
        self.written = 0
        self.pieces = 0
        self._clock = client.clock
        # Complete chunks in the writer's hands (waiting or being written): backpressure.
        self._slots = asyncio.Semaphore(WRITE_QUEUE_SIZE)
        # Set when a buffer starts holding uncommitted work, for the piece ticker.
        self._armed = asyncio.Event()
        # Outcomes not yet told to the progress display, and how many of them failed.
        self._unreported = self._failed = self._unavailable = 0
        # Invalid input lines ride with chunk 0; once chunk 0 is committed they are recorded.
        self._input_rows_pending = 0 not in committed and (bool(idset.invalid) or not chunks.count)

    def _builder(self) -> TableBuilder:
        # In the sink's file order, so that a commit writes each file from a slice of the chunk.
        return TableBuilder(self.schema, self.out.file_groups)

    def _buffer(self, index: int) -> _ChunkBuffer:
        buf = self.buffers.get(index)
        if buf is None:
            expected = self.chunks.remaining(index)
            buf = self.buffers[index] = _ChunkBuffer(index, expected, self._builder())
        return buf

    async def run(self) -> None:
        # Unbounded: pieces go in at once, in the order they were cut (a chunk's pieces always
        # before the chunk itself); complete chunks are bounded by `_slots` instead.
        queue: asyncio.Queue[_Unit | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer(queue), name="chunk-writer")
                ticker = tg.create_task(self._ticker(queue), name="piece-ticker")
                if self._input_rows_pending and not self.chunks.pending:
                    # Only invalid lines (or nothing) to record: they still need their sidecar.
                    await self._put_chunk(queue, _ChunkBuffer(0, 0, self._builder()))
                for index in self.chunks.pending:
                    if not self.chunks.remaining(index):
                        # Its pieces hold every ID: only the chunk's own commit is missing.
                        await self._put_chunk(queue, self._buffer(index))
                        del self.buffers[index]
                await self._fetch(queue)
                ticker.cancel()
                # Only after a clean fetch: if either side fails, the group cancels the other.
                queue.put_nowait(None)
        except BaseExceptionGroup as group:
            raise _most_telling(group) from None

    async def _put_chunk(self, queue: asyncio.Queue[_Unit | None], buf: _ChunkBuffer) -> None:
        await self._slots.acquire()
        queue.put_nowait(_Unit(buf))

    async def _ticker(self, queue: asyncio.Queue[_Unit | None]) -> None:
        """Commit what a chunk holds as a piece once its oldest uncommitted outcome is
        PIECE_EVERY_S old, so a crash loses at most that much work (on the run's clock)."""
        clock = self._clock
        while True:
            await self._armed.wait()
            self._armed.clear()
            while True:
                started = [b.since for b in self.buffers.values() if b.since is not None]
                if not started:
                    break
                wait = min(started) + PIECE_EVERY_S - clock.monotonic()
                if wait > 0:
                    await clock.sleep(wait)
                    continue
                now = clock.monotonic()
                for buf in list(self.buffers.values()):
                    if buf.since is not None and buf.since + PIECE_EVERY_S <= now:
                        piece = buf.take_piece()
                        buf.since = None
                        if piece is not None:
                            queue.put_nowait(_Unit(piece, piece=True))

    def _started(self, buf: _ChunkBuffer, since: float | None = None) -> None:
        """`buf` holds uncommitted work since `since` (default: now)."""
        if buf.since is None:
            buf.since = self._clock.monotonic() if since is None else since
            self._armed.set()
        elif since is not None and since < buf.since:
            buf.since = since

    async def _fetch(self, queue: asyncio.Queue[_Unit | None]) -> None:
        async with contextlib.aclosing(fetch_batches(self.chunks.stream(), self.client)) as got:
            async for batch in got:
                await self._take(batch, queue)
        self._report()

    async def _take(self, batch: FetchedBatch, queue: asyncio.Queue[_Unit | None]) -> None:
        """One answer's outcomes into their chunks' buffers; its payloads are converted before
        the next answer is asked for when there are many of them (the engine's credits)."""
        touched: list[_ChunkBuffer] = []
        ids = batch.ids
        if ids:
            for index, lo, hi in self._runs(ids):
                buf = self._buffer(index)
                buf.add_deals(ids[lo:hi], batch.payloads[lo:hi])
                touched.append(buf)
        for failure in batch.failed:
            buf = self._buffer(self.chunks.index_of(failure.id))
            buf.add_failed([failure])
            self._count_failure(failure)
            touched.append(buf)
        self._unreported += len(batch)
        if self._unreported >= PROGRESS_EVERY:
            self._report()
        big = len(ids) >= CONVERT_AT_ONCE
        for buf in {b.index: b for b in touched}.values():
            if buf.since is None:
                self._started(buf)
            if buf.complete:
                self._report()
                del self.buffers[buf.index]
                await self._put_chunk(queue, buf)
            elif len(buf.pending) >= NORMALISE_EVERY or (big and buf.pending):
                await self._convert(buf)
                if buf.builder.nbytes >= PIECE_BYTES:
                    await self._put_sized_piece(queue, buf)

    async def _put_sized_piece(self, queue: asyncio.Queue[_Unit | None], buf: _ChunkBuffer) -> None:
        """Commit what `buf` holds as a piece (PIECE_BYTES), once the writer has room: the
        fetch waits meanwhile, so pieces do not pile up in memory ahead of a slow store."""
        await self._slots.acquire()
        # Cut only now: the ticker may have taken the buffer's work as a piece meanwhile.
        piece = buf.take_piece()
        if piece is None:
            self._slots.release()
            return
        queue.put_nowait(_Unit(piece, piece=True, sized=True))

    def _runs(self, ids: list[int]) -> list[tuple[int, int, int]]:
        """(chunk index, start, end) of the consecutive stretches of `ids` in one chunk; an
        answer nearly always falls in one chunk, which costs two look-ups."""
        chunks = self.chunks
        first = chunks.index_of(min(ids))
        if first == chunks.index_of(max(ids)):
            return [(first, 0, len(ids))]
        runs: list[tuple[int, int, int]] = []
        start, current = 0, chunks.index_of(ids[0])
        for position in range(1, len(ids)):
            index = chunks.index_of(ids[position])
            if index != current:
                runs.append((current, start, position))
                start, current = position, index
        runs.append((current, start, len(ids)))
        return runs

    async def _convert(self, buf: _ChunkBuffer) -> None:
        """Turn the buffer's payloads into a typed part in a worker thread (the fetch goes on
        meanwhile), so no chunk holds more than NORMALISE_EVERY payload dicts. The builder
        orders the chunk by ID when it finishes, so parts need not be sorted."""
        since = buf.since
        ids, payloads = buf.take_pending()
        converted = await asyncio.to_thread(buf.builder.convert, payloads, ids)
        # A piece cut meanwhile did not take this part: it is still as old as it was.
        buf.builder.append(converted)
        self._started(buf, since)

    def _count_failure(self, outcome: DealFailed) -> None:
        if outcome.retryable:
            self._failed += 1
        else:
            self._unavailable += 1

    def _report(self) -> None:
        if self.progress is not None and self._unreported:
            self.progress.advance(
                self._unreported, failed=self._failed, unavailable=self._unavailable
            )
        self._unreported = self._failed = self._unavailable = 0

    async def _writer(self, queue: asyncio.Queue[_Unit | None]) -> None:
        while True:
            unit = await queue.get()
            if unit is None:
                return
            buf = unit.buf
            if unit.piece:
                ids = buf.builder.requested_ids() + buf.pending_ids
                ids += [f.id for f in buf.failed]
                table, rows = await asyncio.to_thread(self._prepare, buf, piece=True)
                await self.out.awrite_piece(
                    buf.index, table, tuple(ids), rows, {"fetched": table.num_rows}
                )
                self.pieces += 1
                if unit.sized:
                    self._slots.release()
            else:
                table, rows = await asyncio.to_thread(self._prepare, buf)
                await self.out.awrite_chunk(buf.index, table, rows, {"fetched": table.num_rows})
                self.written += 1
                self._slots.release()
            # Committed: let the chunk's table go now, not when the next one is ready (it would
            # otherwise stay alive through the next chunk's fetch and typing).
            del unit, buf, table, rows
            await asyncio.to_thread(_release_arrow_memory)

    def _prepare(self, buf: _ChunkBuffer, *, piece: bool = False) -> tuple[pa.Table, pa.Table]:
        seen = datetime.now(UTC)
        run_id = self.out.run_id
        ids, payloads = buf.take_pending()
        if ids:
            buf.builder.add(payloads, ids)
        # The payloads are typed: free their dicts before the chunk is typed as a whole.
        del ids, payloads
        table, rows = _chunk_tables([], buf.failed, self.schema, run_id, seen, builder=buf.builder)
        if buf.index == 0 and self._input_rows_pending and not piece:
            # Invalid input lines belong to no chunk; chunk 0 carries them so they are committed
            # (and replaced on a rewrite) together with real work.
            rows = with_rows(
                rows, (invalid_input_row(i, run_id=run_id, seen=seen) for i in self.idset.invalid)
            )
        return table, rows


def _release_arrow_memory() -> None:
    """Hand back to the OS the pages Arrow's pool still holds once a chunk's tables are gone.

    Between commits the resident pages of pyarrow's default pool (then mimalloc; on Linux now
    jemalloc, `pipeline.memory`) ran 15-65 MB above
    the bytes Arrow had allocated (/proc smaps of its arena against `total_allocated_bytes`),
    and the longer a run, the higher the peak of that slack it met. One collection per commit,
    from a worker thread (on a CLI run the one that typed and wrote the chunk, whose mimalloc
    heap is the one this collects: `pipeline.memory`), measured peak RSS at
    100k IDs 216 -> 205 MB (median of 6 runs) and at 1M 242 -> 234 MB (one run each), CPU
    within noise. pyarrow's docs call `MemoryPool.release_unused` possibly expensive: once per
    chunk of 10,000 deals it is not.
    """
    pa.default_memory_pool().release_unused()


def _chunk_tables(
    fetched: list[DealFetched],
    failed: list[DealFailed],
    schema: EntitySchema,
    run_id: str,
    seen: datetime,
    *,
    builder: TableBuilder | None = None,
) -> tuple[pa.Table, pa.Table]:
    """A chunk's data table and sidecar rows, in ID order: export and retry build them alike.
    `builder` holds the chunk's deals already converted; `fetched` are the rest.

    Every row carries its lineage: the run that extracted it and when (`seen`, one value per
    chunk: the moment its last deal had arrived)."""
    builder = builder or TableBuilder(schema)
    if fetched:
        ordered = sorted(fetched, key=_fetched_id)
        builder.add([f.payload for f in ordered], [f.id for f in ordered])
    table, record_errors = builder.finish()
    table = with_lineage(table, run_id, seen)
    rows = failed_table(sorted(failed, key=_id), run_id=run_id, seen=seen)
    if record_errors:
        rows = with_rows(
            rows, (record_error_row(e, run_id=run_id, seen=seen) for e in record_errors)
        )
    return table, rows


def _counts_from_manifest(manifest: Mapping[str, Any], idset: IdSet) -> RunCounts:
    """The verdict comes from what is committed in the output, not from this session's memory,
    so a resumed run also counts the chunks earlier sessions wrote, with the same exact reasons
    (the portal's code or message) as a run that wrote every chunk itself."""
    counts = manifest.get("counts", {})
    reasons = counts.get("failed_by_reason", {})
    permanent = Counter({str(k): int(n) for k, n in reasons.get("permanent", {}).items()})
    retryable = Counter({str(k): int(n) for k, n in reasons.get("retryable", {}).items()})
    return RunCounts(
        requested=idset.counts.valid,
        unique=idset.counts.unique,
        exported=int(counts.get("exported", 0)),
        duplicates=idset.counts.duplicates,
        invalid_input=idset.counts.invalid,
        failed_permanent=dict(permanent),
        failed_retryable=dict(retryable),
        record_errors=int(counts.get("normalise_errors", 0)),
    )


async def export(
    config: RunConfig,
    ids: IdsConfig,
    *,
    progress_factory: Callable[[int], Progress] | None = None,
    clock: Clock | None = None,
    stdin: BinaryIO | None = None,
    run_id: str | None = None,
    on_tokens_rotated: TokensRotated | None = None,
    on_drift: Callable[[SchemaDrift], None] | None = None,
    setting_names: Mapping[str, str] | None = None,
    idset: IdSet | None = None,
) -> RunResult:
    """Run one export. Raises UsageError, FatalPortalError or OutputError for the CLI to map.

    The partition settings are checked against the fields method before any record (or ID) is
    asked for, and before anything is written. `setting_names` says how the user gave each
    setting (`"output.partition_by": "--partition-by"`), for that error. An output that already
    holds a completed export of this input with retryable failures is not refused: those IDs
    are retried, as `retry_failed` does, and the verdict is the whole export's after that.

    `idset`, when given, is the run's IDs already read (the Python API's iterable source) and
    replaces the `ids` selection.
    """
    started = time.monotonic()
    run_id = run_id or new_run_id()
    stats = FetchStats()
    _check_detect_deletes(config.output, setting_names or {})
    async with _client(config, clock, stats, on_tokens_rotated) as client:
        # A local ID input is checked before the first request; discovery, which spends the
        # portal's budget, waits until the partition settings are known to fit the fields.
        local = ids.source is not None or idset is not None
        resolved = (
            (
                ResolvedIds(idset)
                if idset is not None
                else await resolve_ids(ids, client, config.output.root, stdin=stdin)
            )
            if local
            else None
        )
        if not local:
            # A bad selection fails before any request.
            discovery_start(ids, config.output.root, client.entity)
        schema = await _portal_schema(client)
        _check_partitioning(config.output, schema, setting_names or {})
        if resolved is None:
            resolved = await resolve_ids(ids, client, config.output.root, stdin=stdin)
        fingerprint = client.entity.tag_fingerprint(
            await asyncio.to_thread(
                fingerprint_id_arrays,
                resolved.idset.arrays(65536),
                chunk_size=config.output.chunk_size,
            )
        )
        # A Delta output converges by itself: the same command re-merges every ID.
        converge = (
            config.output.table_format != "delta"
            and (config.output.existing_data_behavior != "overwrite")
            and (await asyncio.to_thread(holds_retryable_failures, config.output, fingerprint))
        )
        if not converge:
            written = await _write_export(
                config,
                client,
                stats,
                schema,
                resolved,
                fingerprint,
                run_id,
                started,
                on_drift,
                progress_factory,
            )
            if config.output.detect_deletes:
                written = await _detect_deletes(config.output, client, written)
            await _settle_tokens(on_tokens_rotated)
            return written
    log.info(
        "%s already holds this export with failures a retry may fix: retrying exactly those "
        "(as deal-export retry does)",
        config.output.root,
    )
    result = await retry_failed(
        config,
        config.output.root,
        clock=clock,
        run_id=run_id,
        on_tokens_rotated=on_tokens_rotated,
        entity=config.entity,
    )
    counts = _counts_from_manifest(result.manifest, resolved.idset)
    return dataclasses.replace(
        result, counts=counts, exit_code=exit_code_for(counts), seconds=time.monotonic() - started
    )


def _check_detect_deletes(output: OutputConfig, names: Mapping[str, str]) -> None:
    """Deletions are tracked in a Delta table only: refuse anything else before any request."""
    detect = names.get("output.detect_deletes", "output.detect_deletes")
    if output.detect_deletes and output.table_format != "delta":
        raise UsageError(
            f"{detect} needs a Delta output (--table-format delta): a folder export keeps each "
            "run's rows as they were, so there is no row to mark; nothing was fetched"
        )
    if output.hard_delete and not output.detect_deletes:
        hard = names.get("output.hard_delete", "output.hard_delete")
        raise UsageError(f"{hard} applies only with --detect-deletes; nothing was fetched")


async def _detect_deletes(output: OutputConfig, client: PortalClient, run: RunResult) -> RunResult:
    """After the run's data is committed, with the client still open: mark the deals the portal
    deleted, refresh the ones it listed late, and record the rows left undecided (`Access
    denied` keeps the row) in the errors table; the run's verdict takes the worse exit code.
    The output's lock is held again throughout, so no other run writes in between."""
    # Imported here: the deletion check and the ~10 modules it needs cost an export that does
    # not ask for it ~5 ms of start-up.
    from pipeline.reconcile import detect_and_apply_deletes

    where = locate(output.root)
    out = await asyncio.to_thread(DeltaSink.open_existing, output.root, run.run_id)
    with out:
        try:
            found = await detect_and_apply_deletes(
                client,
                where.uri,
                run_id=run.run_id,
                hard=output.hard_delete,
                storage_options=where.storage_options,
                recheck_failures=True,
            )
        except PipelineError as exc:
            # Same error, class and exit code; the message adds that the data is safe.
            exc.args = (_not_reconciled(exc, run), *exc.args[1:])
            raise
        if found.present or found.failures or found.verdict.deleted:
            await asyncio.to_thread(_fold_reconciliation, out, found, client.entity)
    deletions = {**found.fields(), "output": run.output, "summary": found.summary()}
    exit_code = run.exit_code or found.exit_code
    return dataclasses.replace(run, exit_code=exit_code, deletions=deletions)


def _not_reconciled(exc: Exception, run: RunResult) -> str:
    """The error of a deletion check that failed, saying the run's data is safe anyway."""
    return (
        f"{exc} (the run's {run.counts.exported:,} records are committed to {run.output}; "
        "deletions were not looked for: the next --detect-deletes run or deal-export reconcile "
        "does it)"
    )


def _fold_reconciliation(out: DeltaSink, found: ReconcileResult, entity: Entity) -> None:
    """One more commit of the run: the deals listed late merged, the errors table holding the
    undecided rows, and no failure left for a deal that is gone."""
    snapshot = out.read_schema()
    if snapshot is None:
        raise OutputError(f"{out.uri} has no schema snapshot; cannot merge the deals listed late")
    schema = EntitySchema.from_snapshot(snapshot, entity)
    seen = datetime.now(UTC)
    table, rows = _chunk_tables(found.present, found.failures, schema, out.run_id, seen)
    if found.verdict.deleted:
        out.settle_failures(found.verdict.deleted)
    out.apply_retry(table, rows)
    out.finalize()


async def _portal_schema(client: PortalClient) -> EntitySchema:
    entity = client.entity
    fields = await client.call(entity.fields_method)
    if not isinstance(fields, dict) or not fields:
        raise OutputError(
            f"{entity.fields_method} returned no field descriptions; cannot type {entity.plural}"
        )
    return EntitySchema.from_fields(fields, entity)


def _check_partitioning(
    output: OutputConfig, schema: EntitySchema, names: Mapping[str, str]
) -> None:
    spec = PartitionSpec.from_config(output)
    types = {c.name: c.kind.arrow_type for c in schema.columns}
    problem = partition_problem(spec, types, schema.entity.name)
    if problem is None:
        return
    setting = names.get("output.partition_by", "output.partition_by")
    transform = names.get("output.partition_transform")
    if transform is not None:
        setting += f" with {transform} {spec.transform}"
    entity = schema.entity
    raise UsageError(
        f"{setting}: {problem} (checked against {entity.fields_method}; no {entity.name} was "
        "fetched and nothing was written)"
    )


async def _write_export(
    config: RunConfig,
    client: PortalClient,
    stats: FetchStats,
    schema: EntitySchema,
    resolved: ResolvedIds,
    fingerprint: str,
    run_id: str,
    started: float,
    on_drift: Callable[[SchemaDrift], None] | None,
    progress_factory: Callable[[int], Progress] | None = None,
) -> RunResult:
    idset, watermark = resolved.idset, resolved.watermark
    with _open_sink(config.output, run_id, fingerprint, config.entity) as out:
        if resolved.discovery is not None and not resolved.reused:
            out.write_input(
                idset.array(), {"discovery": resolved.discovery, "watermark": watermark}
            )
        drift = _check_drift(out, schema, on_drift)
        drift_lines = list(drift.get("changes", []))
        out.write_schema(schema.snapshot())
        committed = out.committed_chunks()
        chunks = _Chunks(idset.ids, config.output.chunk_size, committed, out.committed_pieces())
        skipped = chunks.count - len(chunks.pending)
        in_pieces = sum(len(ids) for ids in chunks.pieces.values())
        progress = progress_factory(len(idset.ids)) if progress_factory else None
        if progress is not None:
            progress.follow_waits(client.pacer.wait_totals)
        if progress is not None and (skipped or in_pieces):
            done_before = sum(len(chunks.ids_of(i)) for i in range(chunks.count)) - sum(
                chunks.remaining(i) for i in chunks.pending
            )
            progress.event("resume", chunks_committed=skipped, deals=done_before)
            progress.resume(done_before)
        exporter = _Exporter(out, schema, chunks, idset, progress, client, committed)
        try:
            await exporter.run()
        finally:
            if progress is not None:
                progress.close()
        missing = set(range(chunks.count)) - out.committed_chunks()
        if exporter.buffers or missing:
            # Never mark an output complete that is not: it stays resumable instead.
            raise OutputError(
                f"{len(missing)} chunk(s) ended without every ID accounted for; nothing "
                "was marked complete. Run the same command again to redo them, and please "
                "report this run"
            )
        if watermark is not None and resolved.discovery is not None and out.retryable_ids():
            # Deals that failed for a passing reason must come back in the next incremental
            # run (a nightly run replaces this root, sidecar included): keep the start point.
            watermark = str(resolved.discovery["modified_since"])
            log.warning(
                "some %s failed for reasons a retry may fix: the watermark stays at %s, "
                "so the next --since-last-run asks for them again",
                schema.entity.plural,
                watermark,
            )
        manifest = out.finalize(
            counts={
                "requested": idset.counts.valid,
                "unique": idset.counts.unique,
                "duplicates_dropped": idset.counts.duplicates,
                "invalid_input_lines": idset.counts.invalid,
                "input_lines": idset.counts.lines,
            },
            config=effective_config_dict(config),
            limits={**stats.as_dict(), "strategy": client.strategy.report()},
            watermark=watermark,
            schema_drift=drift,
        )
        resumed = out.resumed
        uri = out.uri
    counts = _counts_from_manifest(manifest, idset)
    return RunResult(
        run_id=run_id,
        output=uri,
        counts=counts,
        exit_code=exit_code_for(counts),
        seconds=time.monotonic() - started,
        resumed=resumed,
        chunks_written=exporter.written,
        chunks_skipped=skipped,
        fetch_stats=stats.as_dict(),
        drift=drift_lines,
        manifest=manifest,
        entity=schema.entity.name,
    )


async def retry_failed(
    config: RunConfig,
    root: str,
    *,
    clock: Clock | None = None,
    run_id: str | None = None,
    on_tokens_rotated: TokensRotated | None = None,
    entity: str | None = None,
) -> RunResult:
    """Re-fetch the sidecar IDs whose failure is retryable and fold them into the same dataset.

    Records that now arrive become data (a new retry chunk); IDs that fail again keep one
    sidecar row with their attempts added up. The schema is the one the export was written
    with, so a retry never mixes column types into the dataset. The entity is the one the
    output records; `entity`, when given, must be that one (UsageError otherwise).
    """
    started = time.monotonic()
    run_id = run_id or new_run_id()
    stats = FetchStats()
    opened: Sink = (
        DeltaSink.open_existing(root, run_id)
        if is_delta_output(root)
        else OutputRoot.open_existing(root, run_id)
    )
    with opened as out:
        kind = _entity_of_output(root, out.uri, entity)
        config = dataclasses.replace(config, entity=kind.name)
        snapshot = out.read_schema()
        if snapshot is None:
            raise OutputError(f"{out.uri} has no schema snapshot (_schema.json); cannot retry")
        schema = EntitySchema.from_snapshot(snapshot, kind)
        retry_ids = out.retryable_ids()
        permanent: Counter[str] = Counter()
        retryable: Counter[str] = Counter()
        exported = 0
        fetched: list[DealFetched] = []
        failed: list[DealFailed] = []

        async def commit() -> None:
            # Committed a chunk at a time: memory stays bounded on a large replay, and a crash
            # or a fatal answer keeps what was already fetched.
            seen = datetime.now(UTC)
            table, rows = await asyncio.to_thread(
                _chunk_tables, fetched, failed, schema, run_id, seen
            )
            await out.aapply_retry(table, rows, {"fetched": len(fetched)})
            fetched.clear()
            failed.clear()

        strategy: dict[str, Any] = {}
        if retry_ids:
            size = out.config.chunk_size
            async with _client(config, clock, stats, on_tokens_rotated) as client:
                async for outcome in fetch_deals(_aiter(retry_ids), client):
                    if isinstance(outcome, DealFetched):
                        fetched.append(outcome)
                        exported += 1
                    else:
                        failed.append(outcome)
                        reason = outcome.code or outcome.message
                        (retryable if outcome.retryable else permanent)[reason] += 1
                    if len(fetched) + len(failed) >= size:
                        await commit()
                strategy = client.strategy.report()
            if fetched or failed:
                await commit()
        manifest = out.finalize(limits={**stats.as_dict(), "strategy": strategy})
        uri = out.uri
    await _settle_tokens(on_tokens_rotated)
    counts_section = manifest.get("counts", {})
    counts = RunCounts(
        requested=len(retry_ids),
        unique=len(retry_ids),
        exported=exported,
        failed_permanent=dict(permanent),
        failed_retryable=dict(retryable),
        record_errors=int(counts_section.get("normalise_errors", 0)),
    )
    return RunResult(
        run_id=run_id,
        output=uri,
        counts=counts,
        exit_code=exit_code_for(counts),
        seconds=time.monotonic() - started,
        resumed=True,
        chunks_written=0,
        chunks_skipped=0,
        fetch_stats=stats.as_dict(),
        manifest=manifest,
        entity=kind.name,
    )


def _entity_of_output(root: str, shown: str, wanted: str | None) -> Entity:
    """The entity a finished output was exported from (its manifest's configuration; outputs
    written before entities existed hold deals), checked against the one the caller asked for."""
    # A Delta output records its entity in its commits, not in a manifest.
    recorded = delta_entity(root) if is_delta_output(root) else None
    manifest = (
        {"config": {"entity": recorded}}
        if recorded is not None
        else Store.from_root(root).read_json(MANIFEST_FILE) or {}
    )
    written = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    name = written.get("entity") if isinstance(written, dict) else None
    try:
        found = entity_named(name) if isinstance(name, str) else DEAL
    except ValueError:
        raise OutputError(
            f"{shown} was exported from an entity this version does not know ({name!r})"
        ) from None
    if wanted is not None and wanted != found.name:
        raise UsageError(
            f"--entity {wanted}: {shown} holds {found.plural}, not {entity_named(wanted).plural}; "
            f"retry it with --entity {found.name} (or without --entity)"
        )
    return found


async def _settle_tokens(rotated: TokensRotated | None) -> None:
    """After the data is committed: a rotated pair that could not be saved is tried once more;
    if it still cannot be, the run fails, since the next one is certain to be refused."""
    if isinstance(rotated, TokenSink):
        problem = await asyncio.to_thread(rotated.settle)
        if problem is not None:
            raise PipelineError(problem)


def _id(outcome: DealFailed) -> int:
    return outcome.id


def _fetched_id(outcome: DealFetched) -> int:
    return outcome.id


async def _aiter(values: list[int]) -> AsyncIterator[int]:
    for value in values:
        yield value


def _client(
    config: RunConfig, clock: Clock | None, stats: FetchStats, rotated: TokensRotated | None
) -> PortalClient:
    return PortalClient(
        config.auth,
        limits=config.limits,
        transport=config.transport,
        fetch=config.fetch,
        clock=clock or ScaledClock(),
        on_tokens_rotated=rotated,
        stats=stats,
        entity=entity_named(config.entity),
    )


def _most_telling(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error the operator should see from a failed task group: ours before anything else,
    an interrupt before a cancellation echo."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for wanted in (PipelineError, KeyboardInterrupt, Exception):
        for exc in leaves:
            if isinstance(exc, wanted):
                return exc
    return leaves[0] if leaves else group


def _check_drift(
    out: Sink, schema: EntitySchema, on_drift: Callable[[SchemaDrift], None] | None
) -> dict[str, Any]:
    """Refuse a resume over changed column types, then report drift since the previous run."""
    current = schema.snapshot()
    started = out.read_schema() if out.resumed else None
    if started is not None and (out.committed_chunks() or out.committed_pieces()):
        _refuse_type_changes(started, current)
    return _report_drift(out.previous_schema() or started, current, on_drift)


def _refuse_type_changes(started: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    changed = compare_snapshots(started, current)
    if changed.type_changed:
        # Committed chunks hold the old types; mixing would silently coerce one into the other.
        raise OutputError(
            "the portal changed field types since this export started: "
            + "; ".join(changed.describe())
            + ". Resuming would mix types in one column; re-run with "
            "existing_data_behavior = 'overwrite' (or a new output root)"
        )


def _report_drift(
    baseline: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    on_drift: Callable[[SchemaDrift], None] | None,
) -> dict[str, Any]:
    """Drift from the previous completed run's fields (kept with the run state, so `overwrite`
    does not lose them) to the portal's: logged, and returned for the manifest."""
    if baseline is None:
        return {}
    try:
        drift = compare_snapshots(baseline, current)
    except ValueError as exc:
        log.warning("cannot compare the portal's fields with the previous run's: %s", exc)
        return {}
    if not drift:
        return {}
    for line in drift.describe():
        log.warning("schema drift since the previous run: %s", line)
    if on_drift is not None:
        on_drift(drift)
    return {
        "changes": drift.describe(),
        "added": list(drift.added),
        "removed": list(drift.removed),
        "type_changed": [change.name for change in drift.type_changed],
    }


__all__ = [
    "ResolvedIds",
    "RunResult",
    "discovery_start",
    "export",
    "new_run_id",
    "resolve_ids",
    "retry_failed",
]
