"""Wiring of a command's rotated OAuth tokens: masked in its logs and errors, saved to the file."""

from __future__ import annotations

import logging

from pipeline.config import Auth
from pipeline.logs import secret_filter
from pipeline.token_file import TokenSaver, token_saver


def rotated_tokens(auth: Auth, handler: logging.Handler, secrets: list[str]) -> TokenSaver | None:
    """The `on_tokens_rotated` of a command: each new token is masked by the log `handler` and
    added to `secrets` (what the command's error messages mask) before it is used or saved."""
    mask_logs = secret_filter(handler)

    def mask(secret: str) -> None:
        mask_logs.add(secret)
        if secret not in secrets:
            secrets.append(secret)

    return token_saver(auth, mask)


__all__ = ["rotated_tokens"]
