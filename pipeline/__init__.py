"""Export Bitrix24 CRM deals into typed, partitioned Parquet with an error sidecar.

Data flows one way: config -> ID source -> fetch -> normalise -> write -> run summary.

The Python API (`pipeline.api`):

    from pipeline import export, retry

    result = export(out="./deals", ids=[101, 102, 103])
    if result.exit_code == 3:
        result = retry(out="./deals")

The API's names are imported on first use, so `import pipeline` (and `deal-export --help`)
does not pay for Arrow or aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.errors import (
    FatalPortalError,
    OutputError,
    PipelineError,
    TransientError,
    UsageError,
)

if TYPE_CHECKING:
    from pipeline.api import ExportResult, export, export_async, retry, retry_async

__version__ = "0.1.0"

_API = frozenset({"ExportResult", "export", "export_async", "retry", "retry_async"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


__all__ = [
    "ExportResult",
    "FatalPortalError",
    "OutputError",
    "PipelineError",
    "TransientError",
    "UsageError",
    "__version__",
    "export",
    "export_async",
    "retry",
    "retry_async",
]
