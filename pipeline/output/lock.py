"""One writer per output root: the `_lock` file.

Local roots use `fcntl.flock` on `_lock` (holding pid, host, run id and start time for the
message). The kernel drops the lock when its holder dies, `kill -9` included, so a stale lock
cannot exist and needs no pid probing; the inode is re-checked after locking so that a lock file
unlinked by a finishing run is never mistaken for the live one. (flock is advisory and may not
work across hosts on NFS; use one host per local root.)

Object stores (through pyarrow) have no locks and pyarrow exposes no conditional PUT, so the lock
there is best effort: refuse while `_lock` exists and its heartbeat is younger than
`stale_after_s`; otherwise write our token, wait `settle_s`, read it back and proceed only if the
token is still ours. The holder refreshes the heartbeat as it writes and notices a takeover. Two
runs started within `settle_s` of each other may still both proceed; don't schedule that.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.errors import OutputError
from pipeline.output.store import Store, display_uri

LOCK_NAME = "_lock"


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another deal-export run"
    return (
        f"run {info.get('run_id', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"since {info.get('started_at', '?')})"
    )


def _refusal(store: Store, info: dict[str, Any] | None) -> OutputError:
    return OutputError(
        f"output root {display_uri(store.uri)} is locked by {_describe(info)}; two runs must not "
        "write one output at once. Wait for it to finish, or choose another output root."
    )


class RunLock:
    """The exclusive right to write one output root; release with `release()`."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        stale_after_s: float = 600.0,
        settle_s: float = 0.2,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._stale_after_s = stale_after_s
        self._settle_s = settle_s
        self._fd: int | None = None
        self._token = secrets.token_hex(8)
        self._last_beat = 0.0
        self.held = False

    def _info(self) -> dict[str, Any]:
        return {
            "run_id": self._run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(),
            "heartbeat": time.time(),
            "token": self._token,
        }

    def acquire(self) -> None:
        if self._store.local:
            self._acquire_local()
        else:
            self._acquire_remote()
        self.held = True

    # -- local ----------------------------------------------------------------------------------

    def _acquire_local(self) -> None:
        import fcntl

        path = self._store.abs(LOCK_NAME)
        for _ in range(10):  # bounded: only lost races with a releasing holder repeat
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise _refusal(self._store, self._store.read_json(LOCK_NAME)) from None
                raise OutputError(
                    f"cannot lock output root {display_uri(self._store.uri)}: {exc.strerror}"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder unlinked it between our open and flock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, orjson.dumps(self._info()))
            self._fd = fd
            return
        raise OutputError(f"cannot lock output root {display_uri(self._store.uri)}: contention")

    # -- object stores --------------------------------------------------------------------------

    def _acquire_remote(self) -> None:
        current = self._store.read_json(LOCK_NAME)
        if current is not None:
            age = time.time() - float(current.get("heartbeat", 0))
            if age < self._stale_after_s:
                raise _refusal(self._store, current)
        self._store.write_atomic(LOCK_NAME, orjson.dumps(self._info()))
        if self._settle_s > 0:
            time.sleep(self._settle_s)
        back = self._store.read_json(LOCK_NAME)
        if not back or back.get("token") != self._token:
            raise _refusal(self._store, back)
        self._last_beat = time.time()

    def heartbeat(self) -> None:
        """Object stores: refresh the lock and fail if another run has taken it over."""
        if self._store.local or not self.held:
            return
        now = time.time()
        if now - self._last_beat < self._stale_after_s / 4:
            return
        back = self._store.read_json(LOCK_NAME)
        if not back or back.get("token") != self._token:
            self.held = False
            raise OutputError(
                f"lost the lock on {display_uri(self._store.uri)} to {_describe(back)}; stopping "
                "so that two runs do not write one output"
            )
        self._store.write_atomic(LOCK_NAME, orjson.dumps(self._info()))
        self._last_beat = now

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._store.abs(LOCK_NAME))
            os.close(self._fd)  # closing drops the flock
            self._fd = None
            return
        back = self._store.read_json(LOCK_NAME)
        if back and back.get("token") == self._token:
            self._store.delete(LOCK_NAME)


__all__ = ["LOCK_NAME", "RunLock"]
