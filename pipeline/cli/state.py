"""`deal-export state show|set|reset OUTPUT`: see and move the incremental watermark.

The state is the one a completed run commits last (`_deal_export/state.json` at the top of
OUTPUT, beside the data or the `run_id=` directories, see `pipeline.output`); `set`
and `reset` replace it in one atomic write under the root's lock, so they are refused while a
run writes there and can never leave half a state behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC
from typing import Any, TypeVar

import click

from pipeline.cli._errors import fail, json_wanted
from pipeline.config_load import parse_timestamp
from pipeline.errors import OutputError, UsageError
from pipeline.output import read_state, set_watermark
from pipeline.output.delta import delta_state, is_delta_output
from pipeline.run import new_run_id
from pipeline.summary import EXIT_FATAL, EXIT_USAGE

T = TypeVar("T")


def _guarded(action: Callable[[], T]) -> T:
    as_json = json_wanted((), os.environ)
    try:
        return action()
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    except OutputError as exc:
        fail(f"output: {exc}", EXIT_FATAL, as_json=as_json)
    except OSError as exc:
        fail(f"{exc.strerror or exc} ({exc.filename or ''})", EXIT_FATAL, as_json=as_json)


def _describe(state: dict[str, Any] | None) -> str:
    mark = None if state is None else state.get("watermark")
    if mark is None:
        return "watermark: none (the next --since-last-run needs --start-from TIME)"
    line = f"watermark: {mark}"
    if state and state.get("moved_by"):
        line += f" (set by hand at {state.get('moved_at')})"
    elif state and state.get("run_id"):
        line += f" (run {state['run_id']}, completed {state.get('at')})"
    return line


def _read_state(output: str) -> dict[str, Any] | None:
    """A Delta output's state is in its commit history; a folder's in `_state.json`."""
    if is_delta_output(output):
        return delta_state(output)
    return read_state(output)


def _refuse_delta(output: str) -> None:
    if is_delta_output(output):
        raise UsageError(
            f"{output} is a Delta table: its watermark is committed with each run's data and is "
            "not moved by hand; for one run from another time use --modified-since TIME (its "
            "completion commits the next watermark), or start a new --out"
        )


@click.group()
def state() -> None:
    """Show or move the watermark the next `run --since-last-run` starts from.

    \b
    Example:
      deal-export state show ./deals
      deal-export state set ./deals 2026-11-01            # midnight UTC
      deal-export state reset ./deals                    # next run needs --start-from
    """


@state.command()
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="Print the state as one JSON object.")
def show(output: str, as_json: bool) -> None:
    """Print the watermark of the last completed run into OUTPUT."""
    current = _guarded(lambda: _read_state(output))
    if as_json:
        shown = {k: v for k, v in (current or {}).items() if k != "schema"}
        click.echo(json.dumps({"output": output, "watermark": None, **shown}))
    else:
        click.echo(_describe(current))


@state.command(name="set")
@click.argument("output")
@click.argument("time")
def set_(output: str, time: str) -> None:
    """Make the next --since-last-run into OUTPUT export deals modified since TIME.

    TIME is an ISO 8601 time with zone, or a date (midnight UTC). Refused while a run writes
    OUTPUT.
    """
    when = _guarded(lambda: parse_timestamp(time, "TIME"))
    mark = when.astimezone(UTC).isoformat(timespec="seconds")
    _guarded(lambda: _refuse_delta(output))
    before = _guarded(lambda: read_state(output))
    _guarded(lambda: set_watermark(output, mark, by=f"state-set-{new_run_id()}"))
    old = None if before is None else before.get("watermark")
    click.echo(f"watermark of {output}: {old or 'none'} -> {mark}")


@state.command()
@click.argument("output")
def reset(output: str) -> None:
    """Clear the watermark: the next --since-last-run into OUTPUT needs --start-from TIME.

    The field list kept for drift reports stays. Refused while a run writes OUTPUT.
    """
    _guarded(lambda: _refuse_delta(output))
    before = _guarded(lambda: read_state(output))
    _guarded(lambda: set_watermark(output, None, by=f"state-reset-{new_run_id()}"))
    old = None if before is None else before.get("watermark")
    click.echo(f"watermark of {output}: {old or 'none'} -> none")


__all__ = ["state"]
