"""The start every command on an existing output shares (`retry`, `reconcile`): settings with
the output as OUTPUT, credentials required, the run id, logging and token write-back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.cli._errors import fail
from pipeline.cli._tokens import rotated_tokens
from pipeline.cli.run import FLAGS, load, start_logging, wants_json, warn_if_insecure
from pipeline.clock import ScaledClock
from pipeline.config import RunConfig
from pipeline.config_load import LoadedConfig, secrets_of
from pipeline.errors import UsageError
from pipeline.logs import set_run_id
from pipeline.run import new_run_id
from pipeline.summary import EXIT_USAGE
from pipeline.token_file import TokenSaver


@dataclass(frozen=True, slots=True)
class OutputSession:
    """What such a command starts with. `secrets` is the list the command's errors mask: a
    rotated token is added to it while the command runs."""

    loaded: LoadedConfig
    config: RunConfig
    secrets: list[str]
    run_id: str
    saver: TokenSaver | None
    clock: ScaledClock


def start_output_session(kw: dict[str, Any], output: str) -> OutputSession:
    """Load the settings of a command on OUTPUT; a usage problem exits 2 with one line."""
    loaded = load(kw, {"output.root": output}, {**FLAGS, "output.root": "OUTPUT"})
    secrets = secrets_of(loaded)
    if loaded.auth is None:
        fail(
            "no portal credentials: set BITRIX24_WEBHOOK_URL (or --webhook-file, or --config)",
            EXIT_USAGE,
            as_json=wants_json(kw),
        )
    try:
        config = loaded.run_config()
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, secrets, as_json=wants_json(kw))
    run_id = new_run_id()
    set_run_id(run_id)
    _, handler = start_logging(kw, config.log_format, secrets)
    warn_if_insecure(loaded)
    saver = rotated_tokens(config.auth, handler, secrets)
    return OutputSession(
        loaded, config, secrets, run_id, saver, ScaledClock(kw.get("time_scale") or 1.0)
    )


__all__ = ["OutputSession", "start_output_session"]
