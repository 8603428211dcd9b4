"""Shared helpers of the fetch tests (imported by module path, not a conftest fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from pipeline.fetch import PortalClient, fetch_deals
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
