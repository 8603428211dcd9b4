"""Shared helpers of the fetch tests (imported by module path, not a conftest fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from pipeline.clock import Clock, VirtualClock
from pipeline.config import FetchConfig, WebhookAuth
from pipeline.fetch import PortalClient, fetch_deals
from pipeline.fetch.transport import Transport
from pipeline.fetch.wire import HttpResponse
from pipeline.outcomes import FetchOutcome


async def aiter_ids(ids: Iterable[int]) -> AsyncIterator[int]:
    for deal_id in ids:
        yield deal_id


async def fetch_all(client: PortalClient, ids: Iterable[int]) -> list[FetchOutcome]:
    return [outcome async for outcome in fetch_deals(aiter_ids(ids), client)]


def client_sockets_to(port: int) -> int:
    """ESTABLISHED TCP connections of this host whose remote port is `port` (client side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def fetch_tasks() -> list[asyncio.Task[object]]:
    """Live tasks running code of the fetch package."""
    out = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "ag_code", None)
        filename = getattr(code, "co_filename", "")
        if "pipeline/fetch" in filename.replace("\\", "/") or task.get_name() == "fetch_deals":
            out.append(task)
    return out


class BusyTransport(Transport):
    """The aiohttp transport for tests on virtual time: while a request is in flight the
    virtual clock may not jump (the simulator answers it without virtual time passing), and
    each request's send time on that clock is recorded (`sent`: (time, method))."""

    def __init__(self, clock: VirtualClock, *, pool_size: int = 16) -> None:
        super().__init__(pool_size=pool_size)
        self.clock = clock
        self.sent: list[tuple[float, str]] = []

    async def post(self, url: str, body: bytes) -> HttpResponse:
        self.sent.append((self.clock.monotonic(), url.rstrip("/").rsplit("/", 1)[-1]))
        with self.clock.busy():
            return await super().post(url, body)

    async def get(self, url: str, params: Mapping[str, str]) -> HttpResponse:
        with self.clock.busy():
            return await super().get(url, params)

    def times(self, method: str | None = None) -> list[float]:
        """Send times of every request (of `method` only, if given)."""
        return [t for t, m in self.sent if method is None or m == method]


def virtual_client(
    url: str,
    vclock: VirtualClock,
    *,
    fetch: FetchConfig | None = None,
    clock: Clock | None = None,
    **kwargs: Any,
) -> tuple[PortalClient, BusyTransport]:
    """A webhook client of the simulator at `url` on `vclock` (run it under `autojump()`);
    `clock` gives the client its own view of `vclock` (a skewed one)."""
    fetch = fetch or FetchConfig()
    http = BusyTransport(vclock, pool_size=fetch.concurrency + 2)
    client = PortalClient(WebhookAuth(url), fetch=fetch, clock=clock or vclock, http=http, **kwargs)
    return client, http
