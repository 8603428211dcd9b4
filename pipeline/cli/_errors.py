"""How the CLI turns our exceptions into one masked line and an exit code (never a traceback)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, NoReturn, TypeVar

import click

from pipeline.errors import FatalPortalError, OutputError, PipelineError, UsageError
from pipeline.redact import mask_text
from pipeline.summary import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_USAGE

T = TypeVar("T")


def fail(message: str, code: int, secrets: Iterable[str] = ()) -> NoReturn:
    click.echo(f"deal-export: error: {mask_text(message, secrets)}", err=True)
    sys.exit(code)


def run_guarded(
    main: Callable[[], Coroutine[Any, Any, T]], secrets: Callable[[], Iterable[str]]
) -> T:
    """Run `main` on a fresh event loop, mapping failures to exit codes with secrets masked.

    `secrets` is called late, so credentials learned while loading the config are masked too.
    """
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        click.echo(
            "deal-export: interrupted; committed chunks are kept, run the same command to resume",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, secrets())
    except FatalPortalError as exc:
        fail(f"the portal refused the run: {exc}", EXIT_FATAL, secrets())
    except OutputError as exc:
        fail(f"output: {exc}", EXIT_FATAL, secrets())
    except PipelineError as exc:
        fail(str(exc), EXIT_FATAL, secrets())
    except OSError as exc:
        fail(f"{exc.strerror or exc} ({exc.filename or ''})", EXIT_FATAL, secrets())


__all__ = ["fail", "run_guarded"]
