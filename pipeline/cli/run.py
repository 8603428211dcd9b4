"""`deal-export run`: IDs -> fetch -> normalise -> write, with one summary at the end."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TextIO

import click

from pipeline.cli._errors import fail, json_wanted, run_guarded
from pipeline.cli._options import setting_option, setting_options, setting_values
from pipeline.cli._tokens import rotated_tokens
from pipeline.clock import ScaledClock
from pipeline.config_load import LoadedConfig, load_config, secrets_of
from pipeline.entity import entity_named
from pipeline.errors import UsageError
from pipeline.fetch.strategy import strategy_line
from pipeline.logs import LEVELS, json_record, log_event, parse_level, set_run_id, setup_logging
from pipeline.memory import one_worker
from pipeline.output.lock import break_lock
from pipeline.progress import DisplayStream, Mode, Progress
from pipeline.redact import mask_text
from pipeline.run import RunResult, export, new_run_id
from pipeline.settings import FLAGS as SETTING_FLAGS
from pipeline.summary import EXIT_USAGE, render_summary

_EPILOG = """\b
Exit codes: 0 every ID accounted for (only permanent failures such as deleted deals);
3 some IDs failed for reasons a retry may fix (run the same command again, or
deal-export retry, to retry exactly those); 1 fatal (auth, portal, output);
2 usage or input error; 130 interrupted (run the same command again to resume).
"""


#: The settings every command that talks to a portal accepts, in the order --help shows them.
PORTAL_SETTINGS: tuple[str, ...] = (
    "portal.webhook_url",
    "portal.webhook_url_file",
    "portal.oauth.token_file",
    "limits.plan",
    "limits.rate",
    "limits.burst",
    "limits.headroom",
    "limits.operating_budget_s",
    "fetch.concurrency",
    "fetch.batch_size",
    "fetch.max_attempts",
    "fetch.strategy",
    "transport.ca_bundle",
    "transport.verify_tls",
    "log_format",
    "entity",
)


def portal_options(fn: Any) -> Any:
    """Options shared by every command that talks to a portal."""
    for option in reversed(
        [
            click.option(
                "--config",
                "config_path",
                type=click.Path(dir_okay=False),
                help="TOML config file (see configs/).",
            ),
            setting_options(*PORTAL_SETTINGS),
            click.option(
                "--log-level",
                type=click.Choice(LEVELS),
                help="Least severe log lines shown (default info).",
            ),
            click.option(
                "--time-scale",
                type=float,
                default=1.0,
                hidden=True,
                help="Run the client's clock K times faster (simulator tests only).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def portal_overrides(kw: dict[str, Any]) -> dict[str, object]:
    """The portal settings given on the command line, as loader overrides."""
    values = setting_values(kw)
    return {key: values.get(key) for key in PORTAL_SETTINGS}


#: The option that sets each setting, so an error names what the user typed.
FLAGS: dict[str, str] = dict(SETTING_FLAGS)


def progress_option(fn: Any, *, shown: bool = True) -> Any:
    """`--progress/--no-progress` on every command, so a scheduler can pass it to each one."""
    help_text = "Show progress on stderr." if shown else "Accepted as for run; nothing to show."
    return click.option("--progress/--no-progress", default=True, help=help_text)(fn)


def quiet_progress_option(fn: Any) -> Any:
    """The same flag on a command without a progress display (it is accepted, not an error)."""
    return progress_option(fn, shown=False)


start_from_option = setting_option("ids.start_from")


def wants_json(kw: dict[str, Any]) -> bool:
    """JSON errors before the config is loaded: the flag, else the environment variable."""
    flag = kw.get("log_format")
    return flag == "json" if flag else json_wanted((), os.environ)


break_lock_option = click.option(
    "--break-lock",
    is_flag=True,
    help="Take over an object-store root's lock even if its holder may be alive (a warning "
    "names it). A dead holder on this host, or one silent past its lease, is taken over anyway.",
)


def load(
    kw: dict[str, Any], extra: dict[str, object], flags: dict[str, str] | None = None
) -> LoadedConfig:
    try:
        loaded = load_config(
            config_path=kw.get("config_path"),
            env=os.environ,
            overrides={**setting_values(kw), **extra},
            flags=FLAGS if flags is None else flags,
        )
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, as_json=wants_json(kw))
    # Only a --start-from typed with another selection is a mistake: a config file's start_from
    # stays harmlessly unused when the command line picks IDs another way for one run.
    typed = loaded.name_of("ids.start_from").startswith("-")
    if typed and loaded.ids.start_from is not None and not loaded.ids.since_last_run:
        fail(
            f"{loaded.name_of('ids.start_from')} applies only with --since-last-run "
            "(it is where the first incremental run starts)",
            EXIT_USAGE,
            as_json=wants_json(kw),
        )
    return loaded


#: The cyclic collector's first threshold during an export (CPython's default is 700). An export
#: keeps thousands of payload dicts alive at a time, and none of them is garbage a collection
#: could free (refcounting frees them): at 700 a 30,000-deal run spent ~0.23 CPU-s in ~440
#: young and 3 full collections, at 10,000 with the startup objects frozen ~0.05 s, nearly all
#: in the few young collections that found a decoded answer alive (one answer of list rows is
#: over 10,000 containers, and each collection walks every field of every row). At 30,000 or
#: 100,000 that run made no young collection at all (the live containers never reach the
#: threshold between answers; peak RSS the same). Cycles (an exception's traceback, asyncio's
#: futures) are still collected, later.
EXPORT_GC_THRESHOLD = 100_000


@contextmanager
def collecting_less() -> Iterator[None]:
    """The cyclic collector tuned for an export, and as it was afterwards (a test process
    runs many). The objects that exist when the export starts (modules, classes, functions)
    live as long as the process, so `gc.freeze` takes them out of every full collection in
    between (Python docs, `gc.freeze`); young collections run less often."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(EXPORT_GC_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def warn_if_insecure(loaded: LoadedConfig) -> None:
    """One warning line per run when certificates are not checked: anyone on the path could
    then read the webhook secret."""
    if not loaded.transport.verify_tls:
        log_event(
            logging.getLogger("pipeline.cli"),
            "tls_unverified",
            f"TLS certificate verification is off ({loaded.name_of('transport.verify_tls')}): "
            "the portal's identity is not checked; prefer --ca-bundle with the portal's CA",
            level=logging.WARNING,
        )


def start_logging(
    kw: dict[str, Any], log_format: Any, secrets: Iterable[str]
) -> tuple[DisplayStream, logging.Handler]:
    """Log to stderr through a stream a progress display can take over later (its bar then
    stays below every log line); every JSON record names this process's run id."""
    display = DisplayStream(sys.stderr)
    handler = setup_logging(
        log_format=log_format, secrets=secrets, stream=display, level=parse_level(kw["log_level"])
    )
    return display, handler


def progress_stream(kw: dict[str, Any]) -> TextIO:
    """Where progress goes: stderr, or nowhere with --no-progress."""
    if kw.get("progress", True):
        return sys.stderr
    return open(os.devnull, "w")  # closed with the process


@click.command(epilog=_EPILOG)
@setting_options("ids.source", "ids.column")
@click.option("--id-column", "id_column_alias", hidden=True)
@setting_options(
    "ids.format",
    "ids.modified_since",
    "ids.since_last_run",
    "ids.start_from",
    "ids.overlap_s",
    "output.root",
    "output.partition_by",
    "output.partition_transform",
    "output.existing_data_behavior",
    "output.chunk_size",
    "output.table_format",
    "output.schema_contract",
    "output.detect_deletes",
    "output.hard_delete",
)
@progress_option
@break_lock_option
@portal_options
def run(**kw: Any) -> None:
    """Export deals into typed, partitioned Parquet with an error sidecar.

    The webhook is read from BITRIX24_WEBHOOK_URL (or --webhook-file, or the config file).

    \b
    Example:
      export BITRIX24_WEBHOOK_URL=https://example.bitrix24.com/rest/1/<secret>/
      deal-export run --ids ids.txt --out ./deals
      deal-export run --since-last-run --out ./deals --config configs/nightly.toml
    """
    partition_by = kw.get("output_partition_by")
    extra: dict[str, object] = {"ids.column": kw.get("ids_column") or kw.get("id_column_alias")}
    if partition_by is not None and partition_by.lower() == "none":
        extra["output.partition_by"] = None
        extra["output.partition_transform"] = "none"
    loaded = load(kw, extra)
    try:
        config = loaded.run_config()
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, secrets_of(loaded), as_json=wants_json(kw))
    secrets = secrets_of(loaded)
    json_logs = config.log_format == "json"
    run_id = new_run_id()
    set_run_id(run_id)
    display, handler = start_logging(kw, config.log_format, secrets)
    warn_if_insecure(loaded)
    saver = rotated_tokens(config.auth, handler, secrets)
    clock = ScaledClock(kw.get("time_scale") or 1.0)

    def progress_factory(total: int) -> Progress:
        mode: Mode | None = "json" if json_logs else None
        stream = progress_stream(kw)
        label = entity_named(config.entity).plural
        progress = Progress(total=total, stream=stream, clock=clock, mode=mode, label=label)
        if progress.mode == "tty":
            display.attach(progress)
        progress.start()
        return progress

    async def main() -> RunResult:
        # One worker thread for the whole run: its Arrow pages are then returned after every
        # commit (see pipeline.memory). asyncio.run shuts it down at the end.
        asyncio.get_running_loop().set_default_executor(one_worker())
        if kw.get("break_lock"):
            await asyncio.to_thread(break_lock, config.output.root)
        return await export(
            config,
            loaded.ids,
            progress_factory=progress_factory,
            clock=clock,
            stdin=sys.stdin.buffer,
            on_tokens_rotated=saver,
            run_id=run_id,
            setting_names=loaded.names,
        )

    with collecting_less():
        result = run_guarded(main, lambda: secrets, json_errors=json_logs)
    report(result, json_logs=json_logs, secrets=secrets)
    sys.exit(result.exit_code)


def report(
    result: RunResult, *, json_logs: bool, secrets: Iterable[str] = (), retry: bool = False
) -> None:
    """The summary on stdout: sentences, or in JSON mode one object (Airflow's XCom reads the
    last line of stdout). A retry that found nothing to retry says so instead of counting 0."""
    this_attempt = int(result.fetch_stats.get("deals_fetched", result.counts.exported))
    deletions, deletion_lines = _deletions(result, secrets)
    entity = entity_named(result.entity)
    if retry and result.counts.requested == 0:
        lines = [
            f"nothing to retry: {result.output} holds no failures a retry may fix "
            f"(deleted or hidden {entity.plural} stay in the sidecar as permanent failures)"
        ]
    else:
        lines = render_summary(
            result.counts,
            output=result.output,
            seconds=result.seconds,
            drift=result.drift,
            exported_now=this_attempt if result.resumed else None,
            entity=entity,
        )
    strategy = result.manifest.get("limits", {}).get("strategy") or {}
    if strategy.get("ran") and result.counts.requested:
        lines.append(strategy_line(strategy, entity))
    if not json_logs:
        for line in [*lines, *deletion_lines]:
            click.echo(line)
        return
    record = json_record(
        created=time.time(),
        level="info",
        logger="pipeline.cli",
        event="run_finished",
        message=mask_text(" ".join([*lines, *deletion_lines]), secrets),
        run_id=result.run_id,
        fields={
            "output": mask_text(result.output, secrets),
            "exit_code": result.exit_code,
            "exported": result.counts.exported,
            "exported_this_attempt": this_attempt,
            "failed": result.counts.failed,
            "unavailable": sum(result.counts.failed_permanent.values()),
            "failed_retryable": sum(result.counts.failed_retryable.values()),
            "invalid_input": result.counts.invalid_input,
            "duplicates": result.counts.duplicates,
            "seconds": round(result.seconds, 3),
            "resumed": result.resumed,
            "drift": result.drift,
            "strategy": strategy,
            "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            **({"deletions": deletions} if deletions else {}),
        },
    )
    click.echo(record)


def _deletions(result: RunResult, secrets: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """`--detect-deletes`: the figures for the JSON record and the sentence for the summary."""
    deletions = dict(result.deletions)
    if not deletions:
        return {}, []
    line = mask_text(str(deletions.pop("summary")), secrets)
    deletions["output"] = mask_text(str(deletions.get("output", "")), secrets)
    return deletions, [line]


__all__ = [
    "FLAGS",
    "PORTAL_SETTINGS",
    "break_lock_option",
    "load",
    "portal_options",
    "portal_overrides",
    "progress_option",
    "progress_stream",
    "quiet_progress_option",
    "report",
    "run",
    "start_from_option",
    "start_logging",
    "wants_json",
    "warn_if_insecure",
]
