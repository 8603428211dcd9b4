"""The Python API: one call exports deals, one call retries what may pass, both return a result.

    from pipeline import export, retry

    result = export(out="./deals", ids=[101, 102, 103])       # or ids_file=, id_range=, ...
    if result.exit_code == 3:                                  # retryable failures: try again
        result = retry(out="./deals")
    print(result.exported, result.failures_by_reason)

Every setting goes through the same loader as the command line (`pipeline.config_load`), so the
API accepts and rejects exactly what `deal-export run` does, with the same messages. Credentials
come from `webhook_url=`, `token_file=` or the environment variables the CLI reads
(`BITRIX24_WEBHOOK_URL`, ...). Usage and fatal problems raise the `pipeline.errors` tree; a run
that finished with failures a retry may fix returns its result (exit code 3), it does not raise.

Logging: records go to the `pipeline.*` loggers and propagate to whatever the host configured
(Airflow's and Dagster's task logs capture them); no handler is added and the root logger is
not touched unless `log=True`. For the duration of a call each `pipeline.*` logger masks the
run's secrets in its records before any handler sees them. No progress display by default.

This module imports the pipeline's heavy parts (Arrow, aiohttp) only when a call starts, so
`import pipeline` stays as cheap as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, SupportsIndex

from pipeline.entity import EntityName
from pipeline.errors import UsageError
from pipeline.memory import one_worker

if TYPE_CHECKING:
    from pipeline.config import Auth
    from pipeline.config_load import LoadedConfig
    from pipeline.ids import IdSet
    from pipeline.logs import SecretFilter
    from pipeline.progress import Progress
    from pipeline.run import RunResult
    from pipeline.token_file import TokenSaver

_log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Budget = float | Literal["off"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportResult:
    """What a finished `export` or `retry` reports.

    `exit_code` is the CLI's: 0 every ID accounted for (only permanent failures such as deleted
    deals), 3 some IDs failed for reasons a retry may fix, 1 the run finished but cannot be
    trusted (an ID unaccounted for, or every deal refused for permissions). `requested` counts
    valid IDs with duplicates, `unique` without; `invalid` counts rejected input values (they are
    rows of the error sidecar, never sent). `failures_by_reason` maps "permanent" and
    "retryable" to {reason: count}. `sidecar` is the `_errors` folder of `output` when the run
    recorded any failure or invalid input (else None), `manifest` the run's `_manifest.json`.
    `watermark` is where the next `since_last_run` into `output` starts (None before the first
    incremental run).
    """

    exit_code: int
    run_id: str
    output: str
    requested: int
    unique: int
    exported: int
    failed_permanent: int
    failed_retryable: int
    invalid: int
    duplicates: int
    record_errors: int
    failures_by_reason: Mapping[str, Mapping[str, int]]
    sidecar: str | None
    manifest: str
    seconds: float
    watermark: str | None
    resumed: bool
    drift: tuple[str, ...] = field(default=())
    #: `detect_deletes`: listed, gone, deleted, denied, ... (`deal-export reconcile`'s figures).
    deletions: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def ok(self) -> bool:
        """Every ID accounted for, and nothing left that a retry could still fetch."""
        return self.exit_code == 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for Airflow's XCom or Dagster metadata)."""
        return {
            "exit_code": self.exit_code,
            "ok": self.ok,
            "run_id": self.run_id,
            "output": self.output,
            "requested": self.requested,
            "unique": self.unique,
            "exported": self.exported,
            "failed_permanent": self.failed_permanent,
            "failed_retryable": self.failed_retryable,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "record_errors": self.record_errors,
            "failures_by_reason": {k: dict(v) for k, v in self.failures_by_reason.items()},
            "sidecar": self.sidecar,
            "manifest": self.manifest,
            "seconds": self.seconds,
            "watermark": self.watermark,
            "resumed": self.resumed,
            "drift": list(self.drift),
            "deletions": dict(self.deletions),
        }


# ------------------------------------------------------------------------------------- export


async def export_async(
    *,
    out: PathLike,
    entity: EntityName | None = None,
    ids: Iterable[SupportsIndex] | None = None,
    ids_file: PathLike | None = None,
    ids_column: str | None = None,
    ids_format: Literal["auto", "text", "csv", "parquet"] | None = None,
    id_range: range | str | None = None,
    modified_since: datetime | None = None,
    since_last_run: bool = False,
    webhook_url: str | None = None,
    token_file: PathLike | None = None,
    config: PathLike | None = None,
    plan: Literal["standard", "enterprise", "custom"] | None = None,
    rate: float | None = None,
    burst: int | None = None,
    headroom: float | None = None,
    operating_budget: Budget | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    max_attempts: int | None = None,
    strategy: Literal["get", "list", "auto"] | None = None,
    chunk_size: int | None = None,
    partition_by: str | None = None,
    partition_transform: Literal["none", "value", "year", "month", "day"] | None = None,
    existing_data_behavior: Literal["error", "overwrite", "resume", "new_run"] | None = None,
    table_format: Literal["parquet", "delta"] | None = None,
    schema_contract: Literal["add-columns", "evolve", "freeze"] | None = None,
    break_lock: bool = False,
    detect_deletes: bool | None = None,
    hard_delete: bool | None = None,
    progress: bool = False,
    log: bool = False,
) -> ExportResult:
    """Export deals into `out`; the coroutine behind `export` (see there for every argument).

    For callers already inside an event loop:

        result = await export_async(out="./deals", id_range="1-500")

    An iterable `ids` is read on the loop's thread, before the first request.
    """
    secrets = _Secrets(webhook_url)
    with secrets.active(log):
        overrides = {
            **_id_overrides(
                ids is not None, ids_file, ids_column, ids_format, id_range, modified_since,
                since_last_run,
            ),
            **_output_overrides(out, chunk_size, partition_by, partition_transform,
                                existing_data_behavior),
            "output.table_format": table_format,
            "output.schema_contract": schema_contract,
            "output.detect_deletes": detect_deletes,
            "output.hard_delete": hard_delete,
            "entity": entity,
            **_portal_overrides(
                webhook_url=webhook_url, token_file=token_file, plan=plan, rate=rate, burst=burst,
                headroom=headroom, operating_budget=operating_budget, concurrency=concurrency,
                batch_size=batch_size, max_attempts=max_attempts, strategy=strategy,
            ),
        }  # fmt: skip
        loaded = secrets.load(config, overrides)
        # Read only once every argument and setting is known good: a generator can be read once.
        idset = _read_iterable(ids, loaded.entity) if ids is not None else None
        if idset is None:
            _require_id_source(loaded)
        from pipeline import run

        run_config = loaded.run_config()
        secrets.handler_format(run_config.log_format)
        if break_lock:
            await _break_lock(run_config.output.root)
        result = await run.export(
            run_config,
            loaded.ids,
            idset=idset,
            on_tokens_rotated=secrets.token_saver(run_config.auth),
            progress_factory=_progress_factory() if progress else None,
        )
        return await _result(result, run_config.output.root)


def export(
    *,
    out: PathLike,
    entity: EntityName | None = None,
    ids: Iterable[SupportsIndex] | None = None,
    ids_file: PathLike | None = None,
    ids_column: str | None = None,
    ids_format: Literal["auto", "text", "csv", "parquet"] | None = None,
    id_range: range | str | None = None,
    modified_since: datetime | None = None,
    since_last_run: bool = False,
    webhook_url: str | None = None,
    token_file: PathLike | None = None,
    config: PathLike | None = None,
    plan: Literal["standard", "enterprise", "custom"] | None = None,
    rate: float | None = None,
    burst: int | None = None,
    headroom: float | None = None,
    operating_budget: Budget | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    max_attempts: int | None = None,
    strategy: Literal["get", "list", "auto"] | None = None,
    chunk_size: int | None = None,
    partition_by: str | None = None,
    partition_transform: Literal["none", "value", "year", "month", "day"] | None = None,
    existing_data_behavior: Literal["error", "overwrite", "resume", "new_run"] | None = None,
    table_format: Literal["parquet", "delta"] | None = None,
    schema_contract: Literal["add-columns", "evolve", "freeze"] | None = None,
    break_lock: bool = False,
    detect_deletes: bool | None = None,
    hard_delete: bool | None = None,
    progress: bool = False,
    log: bool = False,
) -> ExportResult:
    """Export deals into typed, partitioned Parquet with an error sidecar, like `deal-export run`.

        from pipeline import export

        result = export(out="s3://lake/deals", ids=(row[0] for row in cursor))
        assert result.ok, result.failures_by_reason

    Runs the pipeline on its own event loop (`asyncio.run`), so it suits an Airflow
    PythonOperator or a Dagster asset; inside a running loop use `export_async`.

    `entity` is the CRM entity exported: `"deal"` (the default) or `"lead"`.

    Which records, exactly one of:
      `ids`            any iterable of ints (a list, a generator, a range, numpy ints). It is
                       read once, lazily, into a compact int64 array (8 bytes per ID), never
                       into a Python list; 0, negatives and values above 2^63-1 become
                       invalid-input rows of the sidecar (item number as the line), anything
                       that is not an integer raises UsageError.
      `ids_file`       a text, CSV or Parquet file, format from its name as on the CLI
                       (`ids_format`, `ids_column` as `--ids-format`, `--ids-column`).
      `id_range`       `range(1, 501)` (step 1) or `"1-500,700"`.
      `modified_since` a timezone-aware datetime: discovery through the entity's list method.
      `since_last_run` discovery from the watermark of the last completed run into `out`.
    With none of them, the `[ids]` section of `config` (or DEAL_EXPORT_IDS_*) decides.

    Credentials: `webhook_url`, or `token_file` (OAuth; endpoint and client from the
    environment or `config`), or the CLI's environment variables (BITRIX24_WEBHOOK_URL, ...).
    The other settings are the CLI options of the same names; `config` is a TOML file as for
    `--config`. Precedence: arguments > environment > config file > defaults.
    `table_format="delta"` merges into one Delta table keyed by ID instead of writing a
    folder of Parquet files (`schema_contract` as `--schema-contract`).
    `detect_deletes=True` (a Delta output only, as `--detect-deletes`): after the run, mark
    the rows of deals the portal deleted (`hard_delete=True`: remove them).
    `partition_by="none"` writes an unpartitioned dataset. `progress=True` draws the CLI's
    progress display on stderr. `log=True` also prints the run's log lines on stderr (text or
    the config's `log_format`); by default records only propagate to the host's logging.

    Raises `UsageError` (bad argument, setting or input), `FatalPortalError` (credentials,
    scope, plan: nothing can be fetched), `OutputError` (output locked, unwritable or
    inconsistent); messages never hold a secret. A run that finished with failures a retry may
    fix does NOT raise: it returns a result with `exit_code == 3` (`ok` is False); call `retry`.
    """
    return _run_sync(
        export_async,
        out=out, entity=entity, ids=ids, ids_file=ids_file, ids_column=ids_column,
        ids_format=ids_format,
        id_range=id_range, modified_since=modified_since, since_last_run=since_last_run,
        webhook_url=webhook_url, token_file=token_file, config=config, plan=plan, rate=rate,
        burst=burst, headroom=headroom, operating_budget=operating_budget,
        concurrency=concurrency, batch_size=batch_size, max_attempts=max_attempts,
        strategy=strategy,
        chunk_size=chunk_size, partition_by=partition_by,
        partition_transform=partition_transform, existing_data_behavior=existing_data_behavior,
        table_format=table_format, schema_contract=schema_contract,
        detect_deletes=detect_deletes, hard_delete=hard_delete,
        break_lock=break_lock, progress=progress, log=log,
    )  # fmt: skip


# -------------------------------------------------------------------------------------- retry


async def retry_async(
    *,
    out: PathLike,
    entity: EntityName | None = None,
    webhook_url: str | None = None,
    token_file: PathLike | None = None,
    config: PathLike | None = None,
    plan: Literal["standard", "enterprise", "custom"] | None = None,
    rate: float | None = None,
    burst: int | None = None,
    headroom: float | None = None,
    operating_budget: Budget | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    max_attempts: int | None = None,
    strategy: Literal["get", "list", "auto"] | None = None,
    break_lock: bool = False,
    log: bool = False,
) -> ExportResult:
    """The coroutine behind `retry` (see there), for callers already inside an event loop:
    `result = await retry_async(out="./deals")`."""
    secrets = _Secrets(webhook_url)
    with secrets.active(log):
        overrides = {
            "output.root": os.fspath(out),
            "entity": entity,
            **_portal_overrides(
                webhook_url=webhook_url, token_file=token_file, plan=plan, rate=rate, burst=burst,
                headroom=headroom, operating_budget=operating_budget, concurrency=concurrency,
                batch_size=batch_size, max_attempts=max_attempts, strategy=strategy,
            ),
        }  # fmt: skip
        loaded = secrets.load(config, overrides)
        from pipeline import run

        run_config = loaded.run_config()
        secrets.handler_format(run_config.log_format)
        if break_lock:
            await _break_lock(run_config.output.root)
        result = await run.retry_failed(
            run_config,
            run_config.output.root,
            on_tokens_rotated=secrets.token_saver(run_config.auth),
            # The output says which entity it holds; a given one must agree with it.
            entity=run_config.entity if "entity" in loaded.names else None,
        )
        return await _result(result, run_config.output.root)


def retry(
    *,
    out: PathLike,
    entity: EntityName | None = None,
    webhook_url: str | None = None,
    token_file: PathLike | None = None,
    config: PathLike | None = None,
    plan: Literal["standard", "enterprise", "custom"] | None = None,
    rate: float | None = None,
    burst: int | None = None,
    headroom: float | None = None,
    operating_budget: Budget | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    max_attempts: int | None = None,
    strategy: Literal["get", "list", "auto"] | None = None,
    break_lock: bool = False,
    log: bool = False,
) -> ExportResult:
    """Re-fetch the sidecar IDs of `out` whose failure may pass, like `deal-export retry OUT`.

        from pipeline import export, retry

        result = export(out="./deals", id_range="1-5000")
        if result.exit_code == 3:
            result = retry(out="./deals")

    Deals that now arrive are written into the same dataset and leave the sidecar; IDs that
    fail again stay with their attempts added up; permanent failures are left alone. The entity
    is the one `out` holds; an `entity` given must be that one (UsageError otherwise). Settings,
    credentials, errors and the result are those of `export`: failures that may still pass
    return `exit_code == 3`, they do not raise.
    """
    return _run_sync(
        retry_async,
        out=out, entity=entity, webhook_url=webhook_url, token_file=token_file, config=config,
        plan=plan,
        rate=rate, burst=burst, headroom=headroom, operating_budget=operating_budget,
        concurrency=concurrency, batch_size=batch_size, max_attempts=max_attempts,
        strategy=strategy,
        break_lock=break_lock, log=log,
    )  # fmt: skip


# ------------------------------------------------------------------------------- the plumbing


def _run_sync(fn: Callable[..., Any], **kwargs: Any) -> ExportResult:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # asyncio.run would fail with a bare RuntimeError after creating the coroutine.
        name = fn.__name__.removesuffix("_async")
        raise UsageError(f"{name}() cannot run inside an event loop; await {fn.__name__}() instead")
    result: ExportResult = asyncio.run(_on_one_worker(fn(**kwargs)))
    return result


async def _on_one_worker(work: Awaitable[ExportResult]) -> ExportResult:
    """The loop `_run_sync` made is ours: give it one worker thread, as the CLI does, so the
    Arrow pages of a chunk are returned after its commit (`pipeline.memory.one_worker`). An
    `*_async` call keeps its caller's executor."""
    asyncio.get_running_loop().set_default_executor(one_worker())
    return await work


def _id_overrides(
    has_iterable: bool,
    ids_file: PathLike | None,
    ids_column: str | None,
    ids_format: str | None,
    id_range: range | str | None,
    modified_since: datetime | None,
    since_last_run: bool,
) -> dict[str, object]:
    """The loader keys of the chosen ID source (none for an iterable, read beforehand)."""
    given = [
        name
        for name, present in (
            ("ids", has_iterable),
            ("ids_file", ids_file is not None),
            ("id_range", id_range is not None),
            ("modified_since", modified_since is not None),
            ("since_last_run", since_last_run),
        )
        if present
    ]
    if len(given) > 1:
        raise UsageError(f"pass only one ID source, not {' and '.join(given)}")
    if (ids_column is not None or ids_format is not None) and ids_file is None:
        raise UsageError("ids_column and ids_format apply to ids_file only")
    if ids_file is not None:
        return {
            "ids.source": os.fspath(ids_file),
            "ids.column": ids_column,
            "ids.format": ids_format,
        }
    if id_range is not None:
        return {"ids.source": _range_spec(id_range), "ids.format": "range"}
    if modified_since is not None:
        since = modified_since
        return {"ids.modified_since": since.isoformat() if isinstance(since, datetime) else since}
    if since_last_run:
        return {"ids.since_last_run": True}
    return {}


def _range_spec(value: range | str) -> str:
    """`range(1, 501)` -> `"1-500"`, checked by the CLI's range reader like `--ids 1-500`."""
    if isinstance(value, str):
        return value
    if not isinstance(value, range):
        raise UsageError(f"id_range must be a range or a string like '1-500,700', not {value!r}")
    if value.step != 1:
        raise UsageError(f"id_range must have step 1, not {value!r}; pass ids={value!r} instead")
    if not value:
        raise UsageError(f"id_range {value!r} is empty")
    return f"{value.start}-{value.stop - 1}"


def _output_overrides(
    out: PathLike,
    chunk_size: int | None,
    partition_by: str | None,
    partition_transform: str | None,
    existing_data_behavior: str | None,
) -> dict[str, object]:
    values: dict[str, object] = {
        "output.root": os.fspath(out),
        "output.partition_by": partition_by,
        "output.partition_transform": partition_transform,
        "output.existing_data_behavior": existing_data_behavior,
        "output.chunk_size": chunk_size,
    }
    if isinstance(partition_by, str) and partition_by.lower() == "none":
        # As `--partition-by none` does: no partition column, so no transform either.
        values["output.partition_by"] = None
        values["output.partition_transform"] = "none"
    return values


def _portal_overrides(
    *,
    webhook_url: str | None,
    token_file: PathLike | None,
    plan: str | None,
    rate: float | None,
    burst: int | None,
    headroom: float | None,
    operating_budget: Budget | None,
    concurrency: int | None,
    batch_size: int | None,
    max_attempts: int | None,
    strategy: str | None = None,
) -> dict[str, object]:
    """The CLI's portal options under the loader keys `deal-export` maps them to."""
    return {
        "portal.webhook_url": webhook_url,
        "portal.oauth.token_file": os.fspath(token_file) if token_file is not None else None,
        "limits.plan": plan,
        "limits.rate": rate,
        "limits.burst": burst,
        "limits.headroom": headroom,
        "limits.operating_budget_s": operating_budget,
        "fetch.concurrency": concurrency,
        "fetch.batch_size": batch_size,
        "fetch.max_attempts": max_attempts,
        "fetch.strategy": strategy,
    }


#: The keyword argument behind each loader key, so that an error names what the caller passed
#: (`concurrency must be <= 256`), as the CLI's errors name the flag the user typed.
_ARGUMENT_NAMES: Final[Mapping[str, str]] = {
    "output.root": "out",
    "output.partition_by": "partition_by",
    "output.partition_transform": "partition_transform",
    "output.existing_data_behavior": "existing_data_behavior",
    "output.chunk_size": "chunk_size",
    "portal.webhook_url": "webhook_url",
    "portal.oauth.token_file": "token_file",
    "limits.plan": "plan",
    "limits.rate": "rate",
    "limits.burst": "burst",
    "limits.headroom": "headroom",
    "limits.operating_budget_s": "operating_budget",
    "fetch.concurrency": "concurrency",
    "fetch.batch_size": "batch_size",
    "fetch.max_attempts": "max_attempts",
    "fetch.strategy": "strategy",
    "output.table_format": "table_format",
    "output.schema_contract": "schema_contract",
    "output.detect_deletes": "detect_deletes",
    "output.hard_delete": "hard_delete",
    "entity": "entity",
    "ids.column": "ids_column",
    "ids.modified_since": "modified_since",
}


def _require_id_source(loaded: LoadedConfig) -> None:
    selection = loaded.ids
    if (
        selection.source is None
        and selection.modified_since is None
        and not selection.since_last_run
    ):
        raise UsageError(
            f"say which {loaded.entity}s to export: ids=, ids_file=, id_range=, modified_since= or "
            "since_last_run=True (or [ids] in the config file)"
        )


def _read_iterable(values: Iterable[SupportsIndex], noun: str = "deal") -> IdSet:
    """The IDs of an iterable, validated like file lines, streamed into the ID set's array."""
    from pipeline.ids.idset import IdCollector
    from pipeline.ids.validate import MAX_ID

    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise UsageError(
            f"ids must be an iterable of ints, not {type(values).__name__}; "
            "for a file pass ids_file=, for ranges id_range="
        )
    collector = IdCollector()
    append, invalid = collector.values.append, collector.invalid
    items = 0
    for items, value in enumerate(values, start=1):
        number = value if type(value) is int else _as_int(value, items)
        if 0 < number <= MAX_ID:
            append(number)
        else:
            invalid.add_text(items, str(number), _reason(number))
    collector.lines = items
    if not items:
        raise UsageError(f"ids holds no {noun} IDs (the iterable is empty)")
    if not collector.values:
        first = invalid[0]
        raise UsageError(
            f"ids holds no valid {noun} ID: all {len(invalid):,} values are invalid "
            f"(item {first.line}: {first.raw!r}: {first.reason})"
        )
    return collector.finish("ids (a Python iterable)")


def _as_int(value: object, item: int) -> int:
    # operator.index accepts numpy and other integer types, and refuses floats and strings
    # (a float ID or "12abc" is a caller's bug, not an input line to record).
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            return operator.index(value)  # type: ignore[arg-type]
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise UsageError(f"ids: item {item} is {type(value).__name__} {shown}, not an int")


def _reason(number: int) -> str:
    from pipeline.ids import validate

    if number == 0:
        return validate.REASON_ZERO
    return validate.REASON_NEGATIVE if number < 0 else validate.REASON_TOO_LARGE


async def _break_lock(root: str) -> None:
    from pipeline.output.lock import break_lock

    await asyncio.to_thread(break_lock, root)


def _progress_factory() -> Callable[[int], Progress]:
    from pipeline.clock import ScaledClock
    from pipeline.progress import Progress

    def start(total: int) -> Progress:
        shown = Progress(total=total, stream=sys.stderr, clock=ScaledClock())
        shown.start()
        return shown

    return start


def _watermark_of(root: str) -> object:
    """The last completed run's watermark: a Delta table keeps it in its commits."""
    from pipeline.output import read_watermark
    from pipeline.output.delta import delta_watermark, is_delta_output

    return delta_watermark(root) if is_delta_output(root) else read_watermark(root)


async def _result(run: RunResult, root: str) -> ExportResult:
    watermark = await asyncio.to_thread(_watermark_of, root)
    _log_summary(run)
    counts = run.counts
    error_files = run.manifest.get("error_files") or []
    return ExportResult(
        exit_code=run.exit_code,
        run_id=run.run_id,
        output=run.output,
        requested=counts.requested,
        unique=counts.unique,
        exported=counts.exported,
        failed_permanent=sum(counts.failed_permanent.values()),
        failed_retryable=sum(counts.failed_retryable.values()),
        invalid=counts.invalid_input,
        duplicates=counts.duplicates,
        record_errors=counts.record_errors,
        failures_by_reason=MappingProxyType(
            {
                "permanent": MappingProxyType(dict(counts.failed_permanent)),
                "retryable": MappingProxyType(dict(counts.failed_retryable)),
            }
        ),
        sidecar=f"{run.output.rstrip('/')}/_errors" if error_files else None,
        manifest=f"{run.output.rstrip('/')}/_manifest.json",
        seconds=run.seconds,
        watermark=None if watermark is None else str(watermark),
        resumed=run.resumed,
        drift=tuple(run.drift),
        deletions=MappingProxyType(
            {k: v for k, v in run.deletions.items() if k not in ("summary", "output")}
        ),
    )


def _log_summary(run: RunResult) -> None:
    """The CLI's closing sentences as one record, so a scheduler's task log ends with them."""
    from pipeline.logs import log_event
    from pipeline.summary import render_summary

    this_attempt = int(run.fetch_stats.get("deals_fetched", run.counts.exported))
    lines = render_summary(
        run.counts,
        output=run.output,
        seconds=run.seconds,
        drift=run.drift,
        exported_now=this_attempt if run.resumed else None,
    )
    log_event(_log, "run_finished", "; ".join(lines), run_id=run.run_id, exit_code=run.exit_code)


class _Secrets:
    """The secrets of one call: masked in its log records and in the exceptions it raises."""

    def __init__(self, webhook_url: str | None) -> None:
        from pipeline.logs import SecretFilter
        from pipeline.urls import webhook_secret

        self.filter: SecretFilter = SecretFilter()
        self.known: list[str] = []
        self._handler: logging.Handler | None = None
        if webhook_url:
            self.add(webhook_url)
            secret = webhook_secret(webhook_url)
            if secret:
                self.add(secret)

    def add(self, secret: str) -> None:
        self.filter.add(secret)
        if secret and secret not in self.known:
            self.known.append(secret)

    def load(self, config: PathLike | None, overrides: Mapping[str, object]) -> LoadedConfig:
        from pipeline.config_load import load_config, secrets_of

        loaded = load_config(
            config_path=os.fspath(config) if config is not None else None,
            env=os.environ,
            overrides=overrides,
            flags=_ARGUMENT_NAMES,
        )
        for secret in secrets_of(loaded):
            self.add(secret)
        return loaded

    def token_saver(self, auth: Auth) -> TokenSaver | None:
        from pipeline.token_file import token_saver

        return token_saver(auth, self.add)

    def handler_format(self, log_format: str) -> None:
        if self._handler is not None and log_format == "json":
            from pipeline.logs import JsonFormatter

            self._handler.setFormatter(JsonFormatter())

    @contextlib.contextmanager
    def active(self, log: bool) -> Iterator[None]:
        """Mask records of every `pipeline.*` logger (a logger's filters see only the records
        logged on it, so each one gets the filter); with `log`, also print them on stderr."""
        loggers = _pipeline_loggers()
        for logger in loggers:
            logger.addFilter(self.filter)
        root = logging.getLogger("pipeline")
        level = root.level
        if log:
            self._handler = self._stderr_handler()
            root.addHandler(self._handler)
            if level == logging.NOTSET:
                root.setLevel(logging.INFO)
        try:
            yield
        except BaseException as exc:
            _mask_chain(exc, self.known)
            raise
        finally:
            for logger in loggers:
                logger.removeFilter(self.filter)
            if self._handler is not None:
                root.removeHandler(self._handler)
                root.setLevel(level)
                self._handler = None

    def _stderr_handler(self) -> logging.Handler:
        from pipeline.logs import TextFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(self.filter)
        handler.setFormatter(TextFormatter())
        return handler


def _pipeline_loggers() -> list[logging.Logger]:
    # Imported first, so that every module's logger exists before the filters go on.
    import pipeline.run  # noqa: F401

    names = [n for n in logging.root.manager.loggerDict if n.startswith("pipeline.")]
    loggers = [logging.getLogger("pipeline")]
    loggers.extend(
        logger
        for name in names
        if isinstance(logger := logging.root.manager.loggerDict[name], logging.Logger)
    )
    return loggers


def _mask_chain(exc: BaseException, secrets: list[str]) -> None:
    """Mask the secrets in the messages of `exc` and of every exception chained to it, which a
    traceback prints too (our messages are built masked; this also covers library errors)."""
    from pipeline.redact import mask_text

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # An OSError prints its strerror and filename attributes, not its args: leave it.
        if any(isinstance(a, str) for a in current.args) and not isinstance(current, OSError):
            current.args = tuple(
                mask_text(a, secrets) if isinstance(a, str) else a for a in current.args
            )
        current = current.__cause__ or current.__context__


__all__ = ["ExportResult", "export", "export_async", "retry", "retry_async"]
