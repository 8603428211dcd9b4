"""Running exports into a Delta output against the simulator, and reading the table back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.output.delta import errors_table_uri, locate
from pipeline.output.delta.commits import Commit, ours
from pipeline.simulator import RunningSimulator

UNLIMITED = LimitsConfig(rate=0, operating_budget_s=None)


def delta_config(
    sim: RunningSimulator, root: Path | str, *, fetch: FetchConfig | None = None, **output: Any
) -> RunConfig:
    settings: dict[str, Any] = {"chunk_size": 40, "table_format": "delta", **output}
    return RunConfig(
        auth=WebhookAuth(sim.webhook_url),
        output=OutputConfig(root=str(root), **settings),
        limits=UNLIMITED,
        fetch=fetch or FetchConfig(),
    )


def table_of(root: Path | str) -> DeltaTable:
    where = locate(str(root))
    return DeltaTable(where.uri, storage_options=where.storage_options)


def rows(root: Path | str) -> pa.Table:
    return table_of(root).to_pyarrow_table().sort_by("ID")


def errors_of(root: Path | str) -> pa.Table:
    where = locate(str(root))
    uri = errors_table_uri(str(root))
    if not DeltaTable.is_deltatable(uri, storage_options=where.storage_options):
        return pa.table({"id": pa.array([], pa.int64()), "stage": pa.array([], pa.string())})
    return DeltaTable(uri, storage_options=where.storage_options).to_pyarrow_table()


def fetch_failures(root: Path | str) -> list[int]:
    table = errors_of(root)
    return sorted(table.filter(pc.equal(table.column("stage"), "fetch")).column("id").to_pylist())


def our_commits(root: Path | str) -> list[Commit]:
    return ours(table_of(root).history())


def operations(root: Path | str) -> list[str]:
    """Operations of the table's commits, oldest first."""
    return [h["operation"] for h in reversed(table_of(root).history())]
