"""How the CLI turns our exceptions into one masked line and an exit code (never a traceback)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from pipeline.errors import FatalPortalError, OutputError, PipelineError, UsageError
from pipeline.redact import mask_text
from pipeline.summary import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_USAGE

T = TypeVar("T")


def fail(
    message: str, code: int, secrets: Iterable[str] = (), *, as_json: bool = False
) -> NoReturn:
    text = mask_text(message, secrets)
    if as_json:
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "ERROR",
            "event": "run_failed",
            "message": text,
            "exit_code": code,
        }
        click.echo(json.dumps(record, ensure_ascii=False), err=True)
    else:
        click.echo(f"deal-export: error: {text}", err=True)
    sys.exit(code)


def run_guarded(
    main: Callable[[], Coroutine[Any, Any, T]],
    secrets: Callable[[], Iterable[str]],
    *,
    json_errors: bool = False,
) -> T:
    """Run `main` on a fresh event loop, mapping failures to exit codes with secrets masked.

    `secrets` is called late, so credentials learned while loading the config are masked too.
    With `json_errors` the failure is one JSON object, like every other line a scheduler reads.
    """
    # Schedulers stop tasks with SIGTERM: treat it as Ctrl-C, so the chunk being written is
    # finished or discarded cleanly and the exit code says "interrupted, resumable".
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        fail(
            "interrupted; committed chunks are kept, run the same command to resume",
            EXIT_INTERRUPTED,
            as_json=json_errors,
        )
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, secrets(), as_json=json_errors)
    except FatalPortalError as exc:
        fail(str(exc), EXIT_FATAL, secrets(), as_json=json_errors)
    except OutputError as exc:
        fail(f"output: {exc}", EXIT_FATAL, secrets(), as_json=json_errors)
    except PipelineError as exc:
        fail(str(exc), EXIT_FATAL, secrets(), as_json=json_errors)
    except OSError as exc:
        message = f"{exc.strerror or exc} ({exc.filename or ''})"
        fail(message, EXIT_FATAL, secrets(), as_json=json_errors)


__all__ = ["fail", "run_guarded"]
