"""`deal-export simulate`: the missing/hidden fractions are options, the control routes are in
its help."""

from __future__ import annotations

import aiohttp
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from tests.simulator.test_control import simulate_process


async def test_missing_and_hidden_fractions_are_options(http: aiohttp.ClientSession) -> None:
    args = (
        "--deals", "40", "--missing-fraction", "0", "--hidden-fraction", "0.5",
    )  # fmt: skip
    async with simulate_process(*args) as url:
        base = url.split("/rest/", 1)[0]
        statuses = []
        for deal_id in range(1, 61):
            async with http.get(f"{base}/_simulator/deal/{deal_id}") as resp:
                if resp.status == 200:
                    statuses.append(resp.headers["X-Deal-Status"])
                else:
                    statuses.append((await resp.json())["status"])
        # IDs never used (gaps in the layout) stay; deleted deals are what the fraction sets.
        assert "deleted" not in statuses, statuses
        hidden = statuses.count("hidden")
        assert 8 <= hidden <= 32, statuses


def test_help_documents_the_control_routes() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--help"])
    assert result.exit_code == 0
    for route in ("stats", "clock", "touch", "delete", "deal/ID"):
        assert f"/_simulator/{route}" in result.output
    for option in ("--missing-fraction", "--hidden-fraction", "--empty-multiple"):
        assert option in result.output


async def test_empty_multiple_form_is_an_option(http: aiohttp.ClientSession) -> None:
    args = (
        "--deals", "30", "--hidden-fraction", "0", "--empty-multiple", "empty_list",
    )  # fmt: skip
    async with simulate_process(*args) as url:
        async with http.get(url + "crm.deal.fields") as resp:
            fields = (await resp.json())["result"]
        multiple = [k for k, v in fields.items() if k.startswith("UF_") and v.get("isMultiple")]
        assert multiple
        base = url.split("/rest/", 1)[0]
        empties = []
        for deal_id in range(1, 31):
            async with http.get(f"{base}/_simulator/deal/{deal_id}") as resp:
                if resp.status == 200:
                    deal = await resp.json()
                    empties += [deal[k] for k in multiple if k in deal and not deal[k]]
        assert empties
        assert all(value == [] for value in empties), empties


def test_bad_fraction_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--hidden-fraction", "1.5"])
    assert result.exit_code == 2
    assert "--hidden-fraction" in result.output


async def test_list_cost_options_reach_the_portal(http: aiohttp.ClientSession) -> None:
    args = (
        "--deals", "30", "--hidden-fraction", "0", "--operating-budget", "480",
        "--list-processing-ms", "5", "--list-row-processing-ms", "1",
    )  # fmt: skip
    async with simulate_process(*args) as url:
        body = {"select": ["*"], "start": -1}
        async with http.post(url + "crm.deal.list", json=body) as resp:
            answer = await resp.json()
        rows = len(answer["result"])
        assert rows > 0
        assert answer["time"]["operating"] == pytest.approx(0.005 + 0.001 * rows)


def test_help_lists_the_list_cost_options() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--help"])
    assert result.exit_code == 0
    for option in ("--list-processing-ms", "--list-row-processing-ms"):
        assert option in result.output
