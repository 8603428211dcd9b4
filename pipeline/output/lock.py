"""One writer per output root: the `_lock` file.

Local roots use `fcntl.flock` on `_lock` (holding pid, host, run id and start time for the
message). The kernel drops the lock when its holder dies, `kill -9` included, so a stale lock
cannot exist and needs no pid probing; the inode is re-checked after locking so that a lock file
unlinked by a finishing run is never mistaken for the live one. (flock is advisory and may not
work across hosts on NFS; use one host per local root.)

Object stores (through pyarrow) have no locks and pyarrow exposes no conditional PUT, so the lock
there is best effort: `_lock` records the owner's host, pid (with the process's start time, so a
reused pid is not mistaken for the owner), a heartbeat and the lease the owner promises to keep.
A lock is taken over when its owner is provably dead (same host and boot, and that pid is gone or
is another process now) or silent past its lease (heartbeat older than `lease_s`; a lock of an
older version without a lease: older than `stale_after_s`); otherwise refused. Taking over writes
our token, waits `settle_s`, reads it back and proceeds only if the token is still ours. A thread
refreshes the heartbeat every quarter lease, however long the run waits on the portal, and notices
a takeover, which the next write then reports. `break_lock` removes a lock whatever its state,
for the cases no rule can decide (a holder on another host that may still be alive). Two runs
started within `settle_s` of each other may still both proceed; don't schedule that.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import OutputError
from pipeline.output.store import Store, display_uri

LOCK_NAME = "_lock"
#: How long an object-store lock outlives its owner's last heartbeat (refreshed every quarter).
LEASE_S = 60.0

log = logging.getLogger(__name__)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def owner_dead(info: dict[str, Any]) -> bool:
    """True only when the lock's owner provably no longer runs: it ran on this host (and, if
    recorded, since this boot) and its pid is gone, or belongs to a process started later."""
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0 or info.get("host") != socket.gethostname():
        return False
    boot = info.get("boot_id")
    if boot is not None and boot != _boot_id():
        return True  # the machine rebooted since: every process of that boot is gone
    if not _pid_alive(pid):
        return True
    started = info.get("pid_start")
    return started is not None and _start_time(pid) not in (None, started)


def _silent_for(info: dict[str, Any]) -> float:
    try:
        return time.time() - float(info.get("heartbeat", 0))
    except (TypeError, ValueError):
        return float("inf")


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another deal-export run"
    return (
        f"run {info.get('run_id', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"since {info.get('started_at', '?')})"
    )


def _refusal(store: Store, info: dict[str, Any] | None) -> OutputError:
    escape = "" if store.local else " (or, if you know that run is dead, add --break-lock)"
    return OutputError(
        f"output root {display_uri(store.uri)} is locked by {_describe(info)}; two runs must not "
        f"write one output at once. Wait for it to finish{escape}, or choose another output root."
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
        lease_s: float = LEASE_S,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._stale_after_s = stale_after_s
        self._settle_s = settle_s
        self._lease_s = min(lease_s, stale_after_s)
        self._fd: int | None = None
        self._token = secrets.token_hex(8)
        self._started_at = datetime.now(UTC).isoformat()
        self._beats = threading.Event()
        self._beater: threading.Thread | None = None
        self._lost: dict[str, Any] | None = None
        self._io = threading.Lock()
        self.held = False

    def _info(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "run_id": self._run_id,
            "pid": pid,
            "pid_start": _start_time(pid),
            "host": socket.gethostname(),
            "boot_id": _boot_id(),
            "started_at": self._started_at,
            "heartbeat": time.time(),
            "lease_s": self._lease_s,
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
            if owner_dead(current):
                log.warning(
                    "taking over the lock on %s: its owner, %s, is no longer running",
                    display_uri(self._store.uri),
                    _describe(current),
                )
            elif _silent_for(current) < float(current.get("lease_s") or self._stale_after_s):
                raise _refusal(self._store, current)
        self._store.write_atomic(LOCK_NAME, orjson.dumps(self._info()))
        if self._settle_s > 0:
            time.sleep(self._settle_s)
        back = self._store.read_json(LOCK_NAME)
        if not back or back.get("token") != self._token:
            raise _refusal(self._store, back)
        self._beater = threading.Thread(target=self._beat_forever, name="lock", daemon=True)
        self._beater.start()

    def _beat_forever(self) -> None:
        while not self._beats.wait(self._lease_s / 4):
            try:
                if not self._beat():
                    return
            except Exception as exc:  # a failed refresh is retried; the lease allows three
                log.debug("lock heartbeat failed: %s", exc)

    def _beat(self) -> bool:
        """Refresh the heartbeat; False (and remember by whom) if the lock was taken over."""
        with self._io:
            if self._beats.is_set():
                return False
            back = self._store.read_json(LOCK_NAME)
            if not back or back.get("token") != self._token:
                self._lost = back or {}
                return False
            self._store.write_atomic(LOCK_NAME, orjson.dumps(self._info()))
            return True

    def heartbeat(self) -> None:
        """Object stores: fail if another run has taken the lock over (the thread refreshes)."""
        if self._store.local or not self.held or self._lost is None:
            return
        self.held = False
        raise OutputError(
            f"lost the lock on {display_uri(self._store.uri)} to {_describe(self._lost)}; "
            "stopping so that two runs do not write one output"
        )

    def release(self) -> None:
        self._beats.set()
        if not self.held:
            return
        self.held = False
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._store.abs(LOCK_NAME))
            os.close(self._fd)  # closing drops the flock
            self._fd = None
            return
        with self._io:
            back = self._store.read_json(LOCK_NAME)
            if back and back.get("token") == self._token:
                self._store.delete(LOCK_NAME)


def break_lock(root: str, filesystem: Any = None) -> dict[str, Any] | None:
    """Remove the lock of an object-store root whatever its state (`--break-lock`); returns what
    it held. A holder still alive notices at its next heartbeat and stops. Local roots are left
    alone: the kernel drops their lock when the holder dies, so one that is held has a live
    holder, and two writers of one root is what the lock exists to prevent."""
    store = Store.from_root(root, filesystem)
    if store.local:
        return None  # the kernel's lock cannot be stale; a live holder is refused as ever
    info = store.read_json(LOCK_NAME)
    if info is None:
        return None
    log.warning(
        "--break-lock: removing the lock on %s held by %s; if that run is still alive it stops "
        "at its next heartbeat",
        display_uri(store.uri),
        _describe(info),
    )
    store.delete(LOCK_NAME)
    return info


__all__ = ["LEASE_S", "LOCK_NAME", "RunLock", "break_lock", "owner_dead"]
