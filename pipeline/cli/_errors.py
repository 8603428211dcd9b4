"""How the CLI turns our exceptions into one masked line and an exit code (never a traceback)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import click

from pipeline.errors import FatalPortalError, OutputError, PipelineError, UsageError
from pipeline.logs import current_run_id, json_record
from pipeline.redact import mask_text
from pipeline.summary import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_USAGE

T = TypeVar("T")


def fail(
    message: str, code: int, secrets: Iterable[str] = (), *, as_json: bool = False
) -> NoReturn:
    text = mask_text(message, secrets)
    if as_json:
        record = json_record(
            created=time.time(),
            level="error",
            logger="pipeline.cli",
            event="run_failed",
            message=text,
            run_id=current_run_id(),
            fields={"exit_code": code},
        )
        click.echo(record, err=True)
    else:
        click.echo(f"deal-export: error: {text}", err=True)
    sys.exit(code)


def json_wanted(args: Sequence[str], env: Mapping[str, str]) -> bool:
    """Whether the user asked for JSON logs, judged before (or without) a parsed config, so that
    even an unknown option or a broken config file is reported as a JSON record."""
    wanted = env.get("DEAL_EXPORT_LOG_FORMAT", "").strip().lower() == "json"
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            wanted = args[i + 1] == "json"
        elif arg.startswith("--log-format="):
            wanted = arg.split("=", 1)[1] == "json"
    return wanted


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


__all__ = ["fail", "json_wanted", "run_guarded"]
