"""Helpers for the simulator's own tests: a plain aiohttp client speaking to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post_json(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def get(session: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    async with session.get(url, params=params or None) as resp:
        return resp.status, await resp.json(content_type=None)


async def post_form(session: aiohttp.ClientSession, url: str, form: str) -> tuple[int, Any]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with session.post(url, data=form.encode(), headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)
