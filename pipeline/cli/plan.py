"""`deal-export plan`: estimate a backfill's duration before starting it."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, cast

import click

from pipeline.cli._errors import fail, json_wanted
from pipeline.cli._options import setting_options, setting_values
from pipeline.cli.run import FLAGS
from pipeline.config_load import load_config
from pipeline.entity import entity_named
from pipeline.errors import UsageError
from pipeline.ids import IdFormat, load_ids
from pipeline.plan import (
    DEFAULT_LATENCY_MS,
    DEFAULT_LIST_MS,
    DEFAULT_LIST_ROW_MS,
    DEFAULT_MS_PER_DEAL,
    PlanEstimate,
    PlanInputs,
    auto_pick,
    estimate,
    estimate_list,
)
from pipeline.progress import format_duration
from pipeline.summary import EXIT_USAGE

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}


def _parse_count(text: str) -> int:
    match = re.fullmatch(r"(\d[\d_,]*)([kKmM]?)", text.strip())
    if not match:
        raise UsageError(f"N must be a whole number such as 250000, 250k or 2M, got {text!r}")
    return int(re.sub(r"[_,]", "", match.group(1))) * _SUFFIX[match.group(2).lower()]


#: The settings a plan reads; the rest of a run's configuration does not change the estimate.
PLAN_SETTINGS: tuple[str, ...] = (
    "limits.plan",
    "limits.rate",
    "limits.burst",
    "limits.headroom",
    "limits.operating_budget_s",
    "fetch.batch_size",
    "fetch.concurrency",
    "fetch.strategy",
    "entity",
)


@click.command()
@click.argument("n", required=False)
@setting_options(
    "ids.source",
    "ids.column",
    help={
        "ids.source": "Count the unique valid IDs of this input (a file, or ranges with "
        "--ids-format range).",
        "ids.column": "Column of a CSV/Parquet --ids.",
    },
)
@click.option("--id-column", "id_column_alias", hidden=True)
@setting_options("ids.format")
@click.option(
    "--config",
    "config_path",
    metavar="TOML",
    help="Take limits and fetch settings from a config file.",
)
@setting_options(*PLAN_SETTINGS)
@click.option(
    "--ms-per-deal",
    type=float,
    default=DEFAULT_MS_PER_DEAL,
    show_default=True,
    help="Assumed server time of one get command.",
)
@click.option(
    "--latency-ms",
    type=float,
    default=DEFAULT_LATENCY_MS,
    show_default=True,
    help="Assumed round trip per request.",
)
@click.option(
    "--list-ms",
    type=float,
    default=DEFAULT_LIST_MS,
    show_default=True,
    help="Assumed server time of one crm.<entity>.list call (base).",
)
@click.option(
    "--list-row-ms",
    type=float,
    default=DEFAULT_LIST_ROW_MS,
    show_default=True,
    help="Assumed server time per row a crm.<entity>.list call returns.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as one JSON object.")
def plan(
    n: str | None,
    id_column_alias: str | None,
    config_path: str | None,
    ms_per_deal: float,
    latency_ms: float,
    list_ms: float,
    list_row_ms: float,
    as_json: bool,
    **kw: Any,
) -> None:
    """Estimate how long exporting N deals takes, and which portal limit binds.

    Three ceilings are compared: the request rate (a batch of 50 deals is one request, so 2 req/s
    is 100 deals/s), the operating-time budget (480 s of the get method per 10 minutes, divided by
    the time one deal costs the portal), and the requests in flight. Limits come from the plan,
    a config file and the environment like for `deal-export run`.

    \b
    Example:
      deal-export plan 2M                                # standard plan defaults
      deal-export plan --ids ids.csv --plan enterprise --concurrency 8
      deal-export plan 500k --config configs/backfill.toml --ms-per-deal 45
    """
    try:
        ids_path = kw.get("ids_source")
        if (n is None) == (ids_path is None):
            raise UsageError("give either N or --ids PATH")
        column = kw.get("ids_column") or id_column_alias
        fmt = cast(IdFormat, kw.get("ids_format") or "auto")
        count = (
            _parse_count(n)
            if n is not None
            else len(
                load_ids(ids_path or "", column=column, fmt=fmt, noun=kw.get("entity") or "deal")
            )
        )
        if ms_per_deal < 0 or latency_ms < 0:
            raise UsageError("--ms-per-deal and --latency-ms must be >= 0")
        if list_ms < 0 or list_row_ms < 0:
            raise UsageError("--list-ms and --list-row-ms must be >= 0")
        values = setting_values(kw)
        config = load_config(
            config_path=config_path,
            env=os.environ,
            overrides={key: values.get(key) for key in PLAN_SETTINGS},
            flags=FLAGS,
        )
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, as_json=json_wanted((), os.environ))
    kind = entity_named(config.entity)
    inputs = PlanInputs.from_config(
        count,
        config.limits,
        config.fetch,
        ms_per_deal=ms_per_deal,
        latency_ms=latency_ms,
        noun=kind.plural,
    )
    by_get = estimate(inputs)
    by_list = estimate_list(inputs, list_ms, list_row_ms)
    picked = auto_pick(by_get, by_list)
    chosen = config.fetch.strategy
    # The headline stays get's unless list is asked for: the list figures rest on assumed
    # costs, and `auto` only settles on the portal itself.
    result = by_list if chosen == "list" else by_get
    if as_json:
        out = _as_dict(result, config.plan)
        out["strategy"] = {
            "chosen": chosen,
            "auto_picks": picked,
            "list_ms": list_ms,
            "list_row_ms": list_row_ms,
            "get": _as_dict(by_get, config.plan),
            "list": _as_dict(by_list, config.plan),
        }
        click.echo(json.dumps(out))
    else:
        for line in render_plan(result, config.plan):
            click.echo(line)
        for line in render_strategies(by_get, by_list, picked, list_ms, list_row_ms):
            click.echo(line)


def render_strategies(
    by_get: PlanEstimate, by_list: PlanEstimate, picked: str, list_ms: float, row_ms: float
) -> list[str]:
    """Both strategies side by side, and what `auto` would start with."""
    lines = [
        f"Strategies (list assumed {list_ms:g} ms + {row_ms:g} ms per row per call; deals a "
        "list call does not return cost one get each):"
    ]
    for name, result in (("get", by_get), ("list", by_list)):
        lines.append(
            f"  {name:<6}{format_duration(result.seconds):>10}  "
            f"{result.inputs.ms_per_deal:.2f} ms per deal, {result.requests:,} requests, "
            f"{result.binding.name} binds"
        )
    lines.append(
        f"auto would use {picked} (less operating time per deal); it measures both on the "
        "portal and re-checks as the run goes."
    )
    return lines


def render_plan(result: PlanEstimate, plan_name: str) -> list[str]:
    """The estimate as a few aligned lines for a terminal."""
    inputs = result.inputs
    noun = inputs.noun
    lines = [
        f"{inputs.ids:,} {noun}, {plan_name} plan: {result.requests:,} batch requests of up to "
        f"{inputs.batch_size} {noun}",
    ]
    for ceiling in result.ceilings:
        speed = "unlimited" if math.isinf(ceiling.deals_per_s) else f"{ceiling.deals_per_s:.1f}/s"
        mark = "  <- binds" if ceiling is result.binding else ""
        lines.append(
            f"  {ceiling.name:<12}{speed:>12}  {format_duration(ceiling.seconds):>10}  "
            f"{ceiling.detail}{mark}"
        )
    limit_names = {
        "rate": "the request-rate limit",
        "operating": "the operating-time budget",
        "concurrency": "the number of requests in flight",
    }
    lines.append(
        f"Estimated time: {format_duration(result.seconds)} "
        f"(~{min(result.deals_per_s, result.binding.deals_per_s):.1f} {noun}/s); "
        f"{limit_names[result.binding.name]} binds."
    )
    lines.extend(f"note: {w}" for w in result.warnings)
    return lines


def _as_dict(result: PlanEstimate, plan_name: str) -> dict[str, object]:
    def num(x: float) -> float | None:
        return None if math.isinf(x) else round(x, 3)

    return {
        "ids": result.inputs.ids,
        "plan": plan_name,
        "requests": result.requests,
        "seconds": round(result.seconds, 1),
        "binding": result.binding.name,
        "ceilings": {
            c.name: {"deals_per_s": num(c.deals_per_s), "seconds": round(c.seconds, 1)}
            for c in result.ceilings
        },
        "assumptions": {
            "ms_per_deal": result.inputs.ms_per_deal,
            "latency_ms": result.inputs.latency_ms,
            "rate": result.inputs.rate,
            "burst": result.inputs.burst,
            "batch_size": result.inputs.batch_size,
            "concurrency": result.inputs.concurrency,
            "operating_budget_s": result.inputs.operating_budget_s,
            "operating_window_s": result.inputs.operating_window_s,
        },
        "warnings": list(result.warnings),
    }


__all__ = ["plan", "render_plan"]
