"""Click options derived from the setting declarations (`pipeline.settings`).

A command lists the keys it accepts (`setting_options("fetch.concurrency", ...)`); flag name,
type, choices, metavar and help come from the declaration, so every command spells and types
a setting alike, and `setting_values(kw)` turns the parsed options back into the loader's
dotted override keys. Ranges are checked by the loader, with the declaration's error texts.
Options that are no setting (how a command runs, not what it exports) are `COMMAND_ONLY`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import click

from pipeline.settings import BY_KEY, SETTINGS, Setting

Decorator = Callable[[Any], Any]

#: Options that set no setting, and why they are command-only.
COMMAND_ONLY: Final[Mapping[str, str]] = {
    "--config": "names the config file itself (DEAL_EXPORT_CONFIG)",
    "--log-level": "how much this process logs, not part of the run's configuration",
    "--time-scale": "hidden: compresses the client's clock for simulator tests",
    "--progress": "how this process shows progress (--progress/--no-progress)",
    "--break-lock": "a one-off action on the output root's lock",
    "--id-column": "hidden: the old spelling of --ids-column",
    "--ms-per-deal": "plan only: an assumption of the estimate",
    "--latency-ms": "plan only: an assumption of the estimate",
    "--list-ms": "plan only: an assumption of the estimate",
    "--list-row-ms": "plan only: an assumption of the estimate",
    "--json": "plan/state only: the output format of the command",
    "--version": "the group's version flag",
    "--help": "click's help",
}


def _click_type(spec: Setting) -> Any:
    if spec.kind == "choice":
        return click.Choice(list(spec.choices))
    if spec.kind == "int":
        return int
    if spec.kind == "float":
        return float
    if spec.is_file:
        return click.Path(dir_okay=False)
    return str


def setting_option(key: str, *, help: str | None = None) -> Decorator:
    """The click option of setting `key`; `help` rewords it for one command's purpose."""
    spec = BY_KEY[key]
    if not spec.flags:
        raise ValueError(f"setting {key} has no command-line flag")
    text = help or spec.help
    if spec.kind == "bool":
        if spec.flag_sets is None:
            raise ValueError(f"bool setting {key} needs flag_sets to be a command-line switch")
        # default None: "not given", so the config file and environment still apply.
        return click.option(*spec.flags, spec.dest, is_flag=True, default=None, help=text)
    return click.option(
        *spec.flags,
        spec.dest,
        type=_click_type(spec),
        metavar=spec.metavar,
        help=text,
        multiple=True,
        callback=_given_once,
    )


def _given_once(ctx: click.Context, param: click.Parameter, values: tuple[Any, ...]) -> Any:
    """The option's one value (None: not given). click keeps the last of a repeated option, so
    `--ids a.txt --ids b.txt` would drop a.txt's IDs without a word: two different values are
    a usage error."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) > 1:
        shown = ", ".join(repr(str(v)) for v in distinct)
        raise click.BadParameter(f"given {len(values)} times ({shown}); give it once", ctx, param)
    return distinct[0] if distinct else None


def setting_options(*keys: str, help: Mapping[str, str] | None = None) -> Decorator:
    """Options for `keys`, shown in this order; `help` rewords some for one command."""
    reworded = help or {}

    def apply(fn: Any) -> Any:
        for key in reversed(keys):
            fn = setting_option(key, help=reworded.get(key))(fn)
        return fn

    return apply


def setting_values(kw: Mapping[str, Any]) -> dict[str, object]:
    """The parsed options of declared settings as the loader's overrides (None: not given)."""
    values: dict[str, object] = {}
    for spec in SETTINGS:
        if spec.flags and spec.dest in kw:
            value = kw[spec.dest]
            if spec.kind == "bool":
                value = spec.flag_sets if value else None
            values[spec.key] = value
    return values


def command_flags(command: click.Command) -> list[str]:
    """Every long option name of `command` (for tests and docs)."""
    names: list[str] = []
    for param in command.params:
        if isinstance(param, click.Option):
            names.extend(n for n in (*param.opts, *param.secondary_opts) if n.startswith("--"))
    return names


__all__ = [
    "COMMAND_ONLY",
    "command_flags",
    "setting_option",
    "setting_options",
    "setting_values",
]
