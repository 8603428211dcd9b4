"""The real `deal-export` process against portals that send empty multiple fields in each of
their three wire forms, and that put the caller's OAuth token into file URLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.simulator import RunningSimulator
from pipeline.simulator.fields import ALL_USER_FIELD_KINDS
from tests.e2e.helpers import FAST, cli_env, files_containing, read_data, read_sidecar, run_cli

#: Every UF type that can be multiple, plus one the exporter does not know (kept as text).
MULTIPLE_TYPES = {
    "string", "integer", "double", "money", "enumeration", "employee", "date", "datetime",
    "file", "crm", "url", "address", "crm_status", "iblock_section", "iblock_element", "hlblock",
}  # fmt: skip


def _is_empty_form(value: Any) -> bool:
    return value is False or value == "" or value == []


def _multiple_fields(sim: RunningSimulator) -> dict[str, str]:
    return {
        name: desc["type"]
        for name, desc in sim.portal.fields().items()
        if desc["isMultiple"] and name != "CONTACT_IDS"
    }


def _decoded_parquet(root: Path) -> str:
    """Every value of every Parquet file under `root` as text: compression may hide a string
    from a byte scan."""
    texts = [
        orjson.dumps(pq.read_table(path).to_pylist(), default=str).decode()
        for path in sorted(root.rglob("*.parquet"))
    ]
    assert texts
    return "\n".join(texts)


async def _export(sim: RunningSimulator, tmp_path: Path, env: dict[str, str]) -> Path:
    out = tmp_path / "out"
    last = sim.portal.max_id
    done = await run_cli(
        ["run", "--ids", f"1-{last}", "--ids-format", "range", "--out", str(out), *FAST],
        env=env,
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    return out


@pytest.mark.parametrize("form", ["false", "empty_string", "empty_list", "mix"])
async def test_every_empty_multiple_form_is_an_empty_list_with_no_sidecar_row(
    simulator, tmp_path: Path, form: str
) -> None:
    sim = await simulator(deals=240, seed=3, user_fields=ALL_USER_FIELD_KINDS, empty_multiple=form)
    fields = _multiple_fields(sim)
    assert set(fields.values()) == MULTIPLE_TYPES
    out = await _export(sim, tmp_path, cli_env(sim))

    side = read_sidecar(out)
    assert side.filter(pc.equal(side.column("stage"), "normalise")).num_rows == 0
    data = read_data(out)
    ids = data.column("ID").to_pylist()
    assert set(ids) == set(sim.portal.visible_ids)
    empties = dict.fromkeys(fields, 0)
    for name in fields:
        for deal_id, value in zip(ids, data.column(name).to_pylist(), strict=True):
            wire = sim.portal.deal_wire(deal_id)
            assert wire is not None
            if _is_empty_form(wire[name]):
                assert value == [], (form, name, deal_id, wire[name], value)
                empties[name] += 1
            else:
                assert value, (form, name, deal_id, wire[name], value)
    assert all(empties.values()), empties  # every multiple type was empty somewhere


async def test_oauth_export_keeps_file_urls_but_no_credential(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=300, seed=4)
    oauth = sim.config.oauth
    first_access, first_refresh = sim.access_token, sim.refresh_token
    # The first call meets an expired token, so the run refreshes once and then downloads with
    # the new token: both pairs must stay out of the data.
    sim.expire_access_token()
    env = cli_env(
        None,
        BITRIX24_OAUTH_ENDPOINT=sim.oauth_endpoint,
        BITRIX24_OAUTH_TOKEN_URL=sim.token_url,
        BITRIX24_OAUTH_CLIENT_ID=oauth.client_id,
        BITRIX24_OAUTH_CLIENT_SECRET=oauth.client_secret,
        BITRIX24_OAUTH_ACCESS_TOKEN=first_access,
        BITRIX24_OAUTH_REFRESH_TOKEN=first_refresh,
    )
    out = await _export(sim, tmp_path, env)
    assert sim.stats()["oauth_refreshes"] == 1
    secrets = {first_access, first_refresh, sim.access_token, sim.refresh_token}
    secrets.add(oauth.client_secret)
    assert len(secrets) == 5
    decoded = _decoded_parquet(out)
    for secret in secrets:
        assert not files_containing(out, secret), secret
        assert secret not in decoded, secret

    # The file URLs are still there, minus `auth`, and otherwise as the portal sent them.
    file_fields = [n for n, d in sim.portal.fields().items() if d["type"] == "file"]
    data = read_data(out)
    stored: list[dict[str, Any]] = []
    expected: list[dict[str, Any]] = []
    for deal_id, *values in zip(
        data.column("ID").to_pylist(), *(data.column(n).to_pylist() for n in file_fields),
        strict=True,
    ):  # fmt: skip
        wire = sim.portal.deal_wire(deal_id)
        assert wire is not None
        for name, value in zip(file_fields, values, strict=True):
            sent = wire.get(name)
            if sent is None:
                continue
            stored += value if isinstance(value, list) else [value]
            expected += sent if isinstance(sent, list) else [sent]
    assert len(stored) > 20
    assert len(stored) == len(expected)
    for got, sent in zip(stored, expected, strict=True):
        assert got["id"] == sent["id"]
        assert got["showUrl"] == sent["showUrl"]
        assert "auth" not in got["downloadUrl"]
        # The portal's downloadUrl is the showUrl with `auth=...&` first in the query.
        assert sent["downloadUrl"] == sent["showUrl"].replace("?", "?auth=&", 1)
        assert got["downloadUrl"] == sent["showUrl"]
