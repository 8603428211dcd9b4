"""Discovery never truncates silently: odd `crm.deal.list` answers stop the run instead."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
from pipeline.errors import FatalPortalError
from pipeline.fetch import PortalClient, discover_modified_ids

from .test_transport import ok, serve

SINCE = datetime(2026, 1, 1, tzinfo=UTC)


async def _discover(answer: Any) -> list[int]:
    async def handler(request: web.Request) -> web.Response:
        return ok(answer)

    async with serve(handler) as base:
        client = PortalClient(
            WebhookAuth(f"{base}/rest/1/discoverysecret/"),
            limits=LimitsConfig(rate=0, operating_budget_s=None),
            fetch=FetchConfig(max_attempts=1),
        )
        async with client:
            return [i async for i in discover_modified_ids(client, SINCE)]


async def test_empty_php_array_means_no_deals() -> None:
    assert await _discover([]) == []
    assert await _discover({}) == []


@pytest.mark.parametrize(
    "answer",
    [
        {"total": 3},  # an object where a list belongs
        [{"ID": "5"}, {"TITLE": "no id"}],  # a row without its ID
        [{"ID": "7"}] * 50,  # a full page that ignores the >ID filter
    ],
    ids=["object", "row-without-id", "paging-ignored"],
)
async def test_odd_answers_stop_with_a_clear_error(answer: Any) -> None:
    with pytest.raises(FatalPortalError, match=r"crm\.deal\.list"):
        await _discover(answer)
