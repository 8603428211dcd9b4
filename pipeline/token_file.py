"""The OAuth token file: where a rotated token pair is kept between runs.

Bitrix24 answers every refresh with a new pair and tells the app to save it and use it from then
on (docs: `settings/oauth/auto-renewal.md`, "Рекомендуемая логика работы с токенами"). An
exporter that does not write the new pair down keeps offering the used refresh token, which an
OAuth server that rotates refresh tokens answers with `invalid_grant`. The file is one JSON
object, the shape of the OAuth server's own answer:

    {"access_token": "...", "refresh_token": "...", "expires": 1767225600}

`expires` (the access token's expiry in Unix time, as in that answer) is informational:
refreshing is driven by the portal answering `expired_token`, as the same page recommends
(no refresh "just in case"). Other keys in the file are kept as they are.

One file for the pair, because the two must change together: a crash between writing two
separate files could leave a dead refresh token next to a live access token. The file is
replaced atomically (temp file in the same directory, fsync, rename) with mode 0600, on a
worker thread (the refresh lock is held meanwhile). A pair that could not be saved is tried
once more at the end of the run (`TokenSaver.settle`); if that fails too the run must not end
as a success: the next one is then certain to be refused (the used refresh token is dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import Auth, OAuthAuth
from pipeline.fetch.auth import TokenSink

log = logging.getLogger(__name__)

#: How to give a token file, for messages (the format is read by `pipeline.config_load`).
HOW_TO = (
    "put them in a token file (JSON with access_token and refresh_token) and name it with "
    "--token-file, BITRIX24_OAUTH_TOKEN_FILE or [portal.oauth] token_file; deal-export keeps "
    "that file up to date"
)


def write_private(path: Path, content: bytes) -> None:
    """Replace `path` with `content` atomically, readable by the owner only (0600)."""
    directory = path.parent
    temp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o600)  # the umask can only remove bits; this pins the exact mode
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _updated(path: Path, access: str, refresh: str, expires: int | None) -> bytes:
    try:
        current = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        current = None
    data: dict[str, Any] = current if isinstance(current, dict) else {}
    data["access_token"] = access
    data["refresh_token"] = refresh
    if expires is not None:
        data["expires"] = expires
    else:
        data.pop("expires", None)  # an old value would be wrong for the new token
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


class TokenSaver(TokenSink):
    """Persists each rotated pair to the token file, and masks it from the moment it exists.

    `mask` is called with every new secret before anything else happens (log filters, error
    masking). Without a token file the pair cannot be kept: one warning per run says so.
    """

    def __init__(self, token_file: str | None, mask: Callable[[str], None]) -> None:
        self.path = Path(token_file).expanduser() if token_file else None
        self._mask = mask
        self._warned = False
        self.saved = 0
        #: The newest pair that could not be written yet, and why (for `settle`).
        self._unsaved: tuple[str, str, int | None] | None = None
        self._reason = ""

    def save(self, access: str, refresh: str, expires: int | None) -> None:
        self._masked(access, refresh)
        self._store(access, refresh, expires)

    async def rotated(self, access: str, refresh: str, expires: int | None) -> None:
        # Masked on the loop before the lock is released, so no log line can carry them.
        self._masked(access, refresh)
        await asyncio.to_thread(self._store, access, refresh, expires)

    def settle(self) -> str | None:
        if self._unsaved is None or self.path is None:
            return None
        self._store(*self._unsaved)
        if self._unsaved is None:
            return None
        return (
            f"the export finished and its data is complete, but the rotated OAuth tokens "
            f"could not be saved to {self.path} ({self._reason}): the refresh token in that "
            "file no longer works, so the next run needs re-authorisation (a new token pair "
            "in that file)"
        )

    def _masked(self, access: str, refresh: str) -> None:
        self._mask(access)
        self._mask(refresh)

    def _store(self, access: str, refresh: str, expires: int | None) -> None:
        if self.path is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "the OAuth server rotated the token pair, but the tokens were not given as "
                    "a token file (they came from the environment, the config file or "
                    "*_token_file settings), so the new pair cannot be saved: the next run will "
                    "fail with invalid_grant. To keep them, %s",
                    HOW_TO,
                )
            return
        try:
            write_private(self.path, _updated(self.path, access, refresh, expires))
        except OSError as exc:
            self._unsaved = (access, refresh, expires)
            self._reason = str(exc.strerror or type(exc).__name__)
            log.error(
                "could not save the rotated OAuth tokens to %s: %s; trying again at the end of "
                "the run",
                self.path,
                self._reason,
            )
            return
        self._unsaved = None
        self.saved += 1
        log.info("saved the rotated OAuth token pair to %s", self.path)


def token_saver(auth: Auth, mask: Callable[[str], None]) -> TokenSaver | None:
    """The saver for `auth`'s rotated tokens (None for a webhook, which has none)."""
    if not isinstance(auth, OAuthAuth):
        return None
    return TokenSaver(auth.token_file, mask)


__all__ = ["HOW_TO", "TokenSaver", "token_saver", "write_private"]
