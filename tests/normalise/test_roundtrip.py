"""Round trip: the simulator's deals, fetched over real HTTP (`batch` of `crm.deal.get`) ->
normalise -> Parquet -> read back with pyarrow and with DuckDB -> equal to the typed values an
independent plain-Python reading of the wire formats gives."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from pipeline.normalise import EXTRA_COLUMN, DealSchema, normalise_deals
from pipeline.normalise.table import _arrow_columns, _normalise
from pipeline.simulator import SimulatorConfig, running_simulator

REFERENCES = {
    "user",
    "employee",
    "crm_company",
    "crm_contact",
    "crm_lead",
    "crm_quote",
    "crm_entity",
}
INTEGERS = {"integer", "crm_category", "enumeration"}
BOOLEANS = {"Y": True, "N": False, "1": True, "0": False, "true": True, "false": False}


def without_auth(url: str) -> str:
    """The URL as stored: no `auth` query parameter (the caller's token on OAuth calls)."""
    path, _, query = url.partition("?")
    kept = [part for part in query.split("&") if part and not part.startswith("auth=")]
    return path + ("?" + "&".join(kept) if kept else "")


def expected_value(name: str, bitrix_type: str, wire: Any) -> Any:
    """One wire value read the obvious way (the simulator sends only well-formed values)."""
    if wire is None:
        return None
    if bitrix_type in {"file"}:
        return {
            "id": int(wire["id"]),
            "showUrl": without_auth(wire["showUrl"]),
            "downloadUrl": without_auth(wire["downloadUrl"]),
        }
    if not isinstance(wire, str):
        raise AssertionError(f"unexpected wire value {wire!r} for {name}")
    if bitrix_type in {"string", "url", "address", "location", "crm_status", "crm_currency", "crm",
                       "iblock_section", "iblock_element"}:  # fmt: skip
        return wire
    if wire == "":
        return None
    if name in {"OPPORTUNITY", "TAX_VALUE"}:
        return Decimal(wire)
    if bitrix_type in REFERENCES:
        return None if int(wire) == 0 else int(wire)
    if bitrix_type in INTEGERS:
        return int(wire)
    if bitrix_type == "double":
        return float(wire)
    if bitrix_type in {"char", "boolean"}:
        return BOOLEANS[wire]
    if bitrix_type == "datetime":
        return datetime.fromisoformat(wire).astimezone(UTC)
    if bitrix_type == "date":
        instant = datetime.fromisoformat(wire).astimezone(UTC)
        return (instant + timedelta(hours=12)).date()
    if bitrix_type == "money":
        amount, currency = wire.split("|")
        return {"amount": Decimal(amount), "currency": currency}
    raise AssertionError(f"no expectation for type {bitrix_type}")


def expected_row(deal: dict[str, Any], schema: DealSchema) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in schema.columns:
        wire = deal.get(column.name)
        if column.is_multiple:
            if wire is None:
                row[column.name] = None
            elif wire is False or wire == "":  # the portal's empty forms, besides []
                row[column.name] = []
            else:
                row[column.name] = [
                    expected_value(column.name, column.bitrix_type, w) for w in wire
                ]
        else:
            row[column.name] = expected_value(column.name, column.bitrix_type, wire)
    row[EXTRA_COLUMN] = None
    return row


async def fetch(
    server_tz: str, deals: int
) -> tuple[dict[str, Any], list[int], list[Any], list[Any]]:
    config = SimulatorConfig(deals=deals, seed=11, rate=0.0, server_tz=server_tz)
    async with running_simulator(config) as sim, aiohttp.ClientSession() as session:
        async with session.post(sim.webhook_url + "crm.deal.fields", json={}) as resp:
            fields = orjson.loads(await resp.read())["result"]
        ids = list(sim.portal.visible_ids)[:deals]
        payloads: list[Any] = []
        for start in range(0, len(ids), 50):
            chunk = ids[start : start + 50]
            cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in chunk}
            async with session.post(
                sim.webhook_url + "batch", json={"halt": 0, "cmd": cmd}
            ) as resp:
                assert resp.status == 200
                result = orjson.loads(await resp.read())["result"]["result"]
            payloads += [result[f"d{i}"] for i in chunk]
        wire = [sim.portal.deal_wire(i) for i in ids]
    return fields, ids, payloads, wire


@pytest.mark.parametrize("server_tz", ["America/New_York", "-05:00", "+03:00"])
async def test_simulator_deals_round_trip_through_parquet(server_tz: str, tmp_path: Path) -> None:
    fields, ids, payloads, wire = await fetch(server_tz, 240)
    assert payloads == wire  # what came over HTTP is what the portal holds
    schema = DealSchema.from_fields(fields)
    table, errors = normalise_deals(payloads, schema, ids=ids)
    assert errors == []
    path = tmp_path / "deals.parquet"
    pq.write_table(table, path, compression="zstd")

    expected = [expected_row(deal, schema) for deal in wire]
    back = pq.read_table(path)
    assert back.schema.equals(schema.arrow_schema, check_metadata=True)
    assert back.to_pylist() == expected

    # Rounding to the nearest UTC midnight (inferred from rest module `rest_util.php`,
    # `CRestUtil::ConvertDate`) recovers the true calendar day: the simulator derives BEGINDATE
    # from the UTC day of DATE_CREATE, whatever zone it renders both in.
    for row in expected:
        assert row["BEGINDATE"] == row["DATE_CREATE"].date()

    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        cursor = con.execute("SELECT * FROM read_parquet(?) ORDER BY ID", [str(path)])
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    assert names == schema.arrow_schema.names
    by_id = {row["ID"]: row for row in expected}
    assert len(rows) == len(expected)
    for values in rows:
        got = dict(zip(names, values, strict=True))
        want = by_id[got["ID"]]
        for name in names:
            assert got[name] == want[name], (got["ID"], name, got[name], want[name])
        assert isinstance(got["OPPORTUNITY"], Decimal)
        assert isinstance(got["BEGINDATE"], date)


async def test_sums_are_exact_in_duckdb(tmp_path: Path) -> None:
    fields, ids, payloads, wire = await fetch("+03:00", 200)
    table, _ = normalise_deals(payloads, DealSchema.from_fields(fields), ids=ids)
    path = tmp_path / "deals.parquet"
    pq.write_table(table, path)
    exact = sum(Decimal(deal["OPPORTUNITY"]) for deal in wire)
    with duckdb.connect() as con:
        (total,) = con.execute(
            "SELECT sum(OPPORTUNITY) FROM read_parquet(?)", [str(path)]
        ).fetchone()
    assert total == exact


@pytest.mark.parametrize("server_tz", ["Europe/Berlin", "-10:00"])
async def test_fast_path_and_python_path_agree_on_simulator_deals(server_tz: str) -> None:
    config = SimulatorConfig(deals=400, seed=5, server_tz=server_tz)
    async with running_simulator(config) as sim:
        ids = list(sim.portal.visible_ids)
        wire = [sim.portal.deal_wire(i) for i in ids]
        schema = DealSchema.from_fields(sim.portal.fields())
    assert _arrow_columns(wire, schema) is not None  # well-formed deals do take the fast path
    fast_table, fast_errors = _normalise(wire, schema, ids, fast=True)
    slow_table, slow_errors = _normalise(wire, schema, ids, fast=False)
    assert fast_errors == slow_errors == []
    assert fast_table.equals(slow_table)
