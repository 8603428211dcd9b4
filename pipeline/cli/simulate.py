"""`deal-export simulate`: serve a local Bitrix24 portal until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from pipeline.simulator import FaultConfig, SimulatorConfig, running_simulator
from pipeline.simulator.config import (
    BATCH_BILLINGS,
    DEFAULT_SECRET,
    EMPTY_MULTIPLE_FORMS,
    PLANS,
    BatchBilling,
    EmptyMultiple,
)

_CONTROL_ROUTES = """\b
Control routes (for scripts and tests; not part of the Bitrix24 API):
  GET  /_simulator/stats      request, command and limit counters, as JSON
  GET  /_simulator/clock      the portal's now and time scale: {"now": ts, "scale": k}
  POST /_simulator/touch      {"ids": [1, 2], "at": ts?}: set DATE_MODIFY of those deals to
                              `at` (default now), so an incremental run finds them; add
                              "entity": "lead" for leads
  POST /_simulator/delete     {"ids": [1, 2]}: delete those deals ("Not found" from then on);
                              "entity": "lead" likewise
  POST /_simulator/restore    {"ids": [1, 2]}: bring deleted deals back under their IDs
  POST /_simulator/create     {"count": 5, "at": ts?}: 5 new deals with the next IDs; answers
                              {"created": [IDs]} (same seed and calls: same deals)
  GET  /_simulator/deal/ID    the exact wire deal the get method would return (hidden ones
                              too, marked by the X-Deal-Status header); 404 if deleted or missing
  GET  /_simulator/lead/ID    the same for a lead
"""


@click.command(epilog=_CONTROL_ROUTES)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port (0 = any free port).",
)
@click.option(
    "--deals",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Number of deals in the portal (hidden ones included).",
)
@click.option(
    "--leads",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Number of leads in the portal (hidden ones included), for --entity lead.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of data and faults.")
@click.option(
    "--plan",
    type=click.Choice(sorted(PLANS)),
    default=None,
    help="Rate-limit preset: standard 2 req/s burst 50, enterprise 5/250.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=None,
    help="Leaky-bucket drain rate, requests/s (0 = no rate limit).",
)
@click.option("--burst", type=click.IntRange(min=1), default=None, help="Leaky-bucket size.")
@click.option(
    "--operating-budget",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Operating seconds per method per 10 minutes (default: off).",
)
@click.option(
    "--processing-ms",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Operating time charged per get command (deals and leads alike).",
)
@click.option(
    "--list-processing-ms",
    type=click.FloatRange(min=0),
    default=None,
    help="Operating time charged per list call (default: as --processing-ms).",
)
@click.option(
    "--list-row-processing-ms",
    type=click.FloatRange(min=0),
    default=SimulatorConfig.list_row_processing_ms,
    show_default=True,
    help="Added per list row that carries more than its ID.",
)
@click.option(
    "--list-ignores-id-filter",
    is_flag=True,
    help="The list methods ignore an @ID filter (a portal a client must not trust).",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Run simulated time K times faster than the wall.",
)
@click.option("--secret", default=None, help="Webhook secret (default: a fixed test secret).")
@click.option(
    "--server-tz",
    default="+03:00",
    show_default=True,
    help="Portal time zone: fixed offset like -05:00 or a zone like Europe/Berlin.",
)
@click.option(
    "--missing-fraction",
    "--deleted-fraction",
    "deleted_fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=SimulatorConfig.deleted_fraction,
    show_default=True,
    help="Share of IDs up to the highest that are missing (deleted deals: 'Not found').",
)
@click.option(
    "--hidden-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=SimulatorConfig.hidden_fraction,
    show_default=True,
    help="Share of deals the webhook user may not read ('Access denied.').",
)
@click.option(
    "--empty-multiple",
    type=click.Choice(EMPTY_MULTIPLE_FORMS),
    default=SimulatorConfig.empty_multiple,
    show_default=True,
    help="How an empty multiple user field comes over the wire: mix (as a real portal: mostly "
    "false, some '' and []), or false, empty_string or empty_list for every one.",
)
@click.option(
    "--comment-bytes",
    type=click.IntRange(min=0),
    default=SimulatorConfig.comment_bytes,
    show_default=True,
    help="Make every deal's COMMENTS about this many bytes long (wide deals; 0 = short notes).",
)
@click.option(
    "--batch-billing",
    type=click.Choice(BATCH_BILLINGS),
    default=SimulatorConfig.batch_billing,
    show_default=True,
    help="Who a batch's operating time is charged to: nested (as the REST docs say: each "
    "command's own method) or batch (as measured by the official JS SDK: the method batch, "
    "every command's result_time showing one and the same counter).",
)
@click.option(
    "--no-deal-permission",
    is_flag=True,
    help="The webhook user may not read deals at all (Access denied).",
)
@click.option("--fault-500", type=click.FloatRange(0, 1), default=0.0, help="P(500 JSON error).")
@click.option("--fault-502", type=click.FloatRange(0, 1), default=0.0, help="P(502 HTML page).")
@click.option("--fault-503", type=click.FloatRange(0, 1), default=0.0, help="P(503 HTML page).")
@click.option("--fault-504", type=click.FloatRange(0, 1), default=0.0, help="P(504 HTML page).")
@click.option(
    "--fault-reset", type=click.FloatRange(0, 1), default=0.0, help="P(connection reset)."
)
@click.option(
    "--fault-truncated", type=click.FloatRange(0, 1), default=0.0, help="P(truncated JSON body)."
)
@click.option("--fault-slow", type=click.FloatRange(0, 1), default=0.0, help="P(slow answer).")
@click.option(
    "--fault-no-time",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="P(success without the `time` block).",
)
@click.option(
    "--slow-s",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Delay of a slow answer, simulated seconds.",
)
def simulate(host: str, port: int, deals: int, leads: int, seed: int, plan: str | None,
             rate: float | None, burst: int | None, operating_budget: float | None,
             processing_ms: float,
             list_processing_ms: float | None, list_row_processing_ms: float,
             list_ignores_id_filter: bool, time_scale: float, secret: str | None,
             server_tz: str, deleted_fraction: float,
             hidden_fraction: float, empty_multiple: EmptyMultiple, comment_bytes: int,
             batch_billing: BatchBilling, no_deal_permission: bool,
             fault_500: float, fault_502: float, fault_503: float, fault_504: float,
             fault_reset: float, fault_truncated: float, fault_slow: float,
             fault_no_time: float, slow_s: float) -> None:  # fmt: skip
    """Serve a local Bitrix24 portal simulator until Ctrl-C.

    The first line of output is the webhook base URL to give to `deal-export run`; the portal
    answers the get, list and fields methods of deals and of leads, and `batch`, like a cloud
    portal, limits and quirks included. Without --plan or --rate there is no rate limit.

    \b
    Example:
      deal-export simulate --deals 5000 --port 8024
      deal-export simulate --plan standard --operating-budget 480 --time-scale 60
    """
    rate_value, burst_value = PLANS[plan] if plan else (0.0, 50)
    try:
        faults = FaultConfig(error_500=fault_500, html_502=fault_502, html_503=fault_503,
                             html_504=fault_504, reset=fault_reset, truncated=fault_truncated,
                             slow=fault_slow, no_time=fault_no_time, slow_s=slow_s)  # fmt: skip
        config = SimulatorConfig(
            deals=deals,
            leads=leads,
            seed=seed,
            rate=rate if rate is not None else rate_value,
            burst=burst if burst is not None else burst_value,
            operating_budget_s=operating_budget,
            processing_ms=processing_ms,
            list_processing_ms=list_processing_ms,
            list_row_processing_ms=list_row_processing_ms,
            list_ignores_id_filter=list_ignores_id_filter,
            time_scale=time_scale,
            server_tz=server_tz,
            can_read_deals=not no_deal_permission,
            deleted_fraction=deleted_fraction,
            hidden_fraction=hidden_fraction,
            empty_multiple=empty_multiple,
            comment_bytes=comment_bytes,
            batch_billing=batch_billing,
            faults=faults,
            secret=secret or DEFAULT_SECRET,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        asyncio.run(_serve(config, host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with running_simulator(config, host=host, port=port) as sim:
        # First line: the webhook base URL, for scripts that start us and read it.
        sys.stdout.write(sim.webhook_url + "\n")
        sys.stdout.write(
            f"serving {config.deals} deals and {config.leads} leads (seed {config.seed}); stats: "
            f"{sim.base_url}/_simulator/stats; Ctrl-C to stop\n"
        )
        sys.stdout.flush()
        await stop.wait()
