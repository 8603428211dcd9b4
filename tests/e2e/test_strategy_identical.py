"""The fetch strategies over real HTTP: `get` and `list` give the same dataset and sidecar, and
`auto` picks the method the portal makes cheaper per deal, or falls back to get."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline.api import export_async
from pipeline.errors import FatalPortalError
from pipeline.output.lineage import LINEAGE_COLUMNS
from pipeline.simulator import RunningSimulator, SimulatorConfig
from pipeline.simulator.config import EMPTY_MULTIPLE_FORMS
from pipeline.simulator.fields import ALL_USER_FIELD_KINDS
from tests.e2e.helpers import read_data, read_sidecar

#: Columns that name the run or when it saw a failure, not the portal's data.
RUN_COLUMNS = ["first_seen", "last_seen", "run_id"]
FAST: dict[str, Any] = {"rate": 0, "operating_budget": "off"}


def _portal(**extra: Any) -> SimulatorConfig:
    """Missing (gaps past the end too), deleted, hidden and poison deals, every UF kind the
    simulator knows (a multiple of every type among them), empty multiples in every form."""
    values: dict[str, Any] = {
        "deals": 260,
        "seed": 11,
        "hidden_fraction": 0.05,
        "deleted_fraction": 0.05,
        "poison_ids": frozenset({30, 31, 190}),
        "empty_multiple": "mix",
        "user_fields": ALL_USER_FIELD_KINDS,
        **extra,
    }
    return SimulatorConfig(**values)


async def _export(sim: RunningSimulator, out: Path, strategy: str, **kw: Any) -> Any:
    return await export_async(
        out=out,
        id_range="1-300",
        webhook_url=sim.webhook_url,
        strategy=strategy,  # type: ignore[arg-type]
        **{**FAST, **kw},
    )


def _data(root: Path) -> pa.Table:
    # The lineage columns name the run and its time, which differ between any two runs.
    return read_data(root).drop(list(LINEAGE_COLUMNS)).sort_by("ID")


def _sidecar(root: Path) -> pa.Table:
    return (
        read_sidecar(root).drop(RUN_COLUMNS).sort_by([("id", "ascending"), ("stage", "ascending")])
    )


def _strategy(root: Path) -> dict[str, Any]:
    manifest = json.loads((root / "_manifest.json").read_text())
    strategy: dict[str, Any] = manifest["limits"]["strategy"]
    return strategy


@pytest.mark.parametrize(
    ("poison_answer", "empty_multiple"),
    [("wrong_encoding", form) for form in EMPTY_MULTIPLE_FORMS] + [("error_500", "mix")],
)
async def test_get_and_list_give_identical_datasets_and_sidecars(
    simulator: Any, tmp_path: Path, poison_answer: str, empty_multiple: str
) -> None:
    sim = await simulator(_portal(poison_answer=poison_answer, empty_multiple=empty_multiple))
    by_get = await _export(sim, tmp_path / "get", "get")
    by_list = await _export(sim, tmp_path / "list", "list")
    assert by_get.exit_code == by_list.exit_code
    assert (
        by_get.exported
        == by_list.exported
        == len(set(sim.portal.visible_ids) & set(range(1, 301)) - {30, 31, 190})
    )
    reasons = by_list.failures_by_reason
    assert reasons == by_get.failures_by_reason
    assert set(reasons["permanent"]) | set(reasons["retryable"]) >= {"Not found", "Access denied."}
    data_get, data_list = _data(tmp_path / "get"), _data(tmp_path / "list")
    assert data_get.schema == data_list.schema
    assert data_get.equals(data_list)
    side_get, side_list = _sidecar(tmp_path / "get"), _sidecar(tmp_path / "list")
    assert side_get.equals(side_list)
    poisoned = [i for i, s in zip(side_list["id"].to_pylist(), side_list["stage"].to_pylist(),
                                  strict=True) if i in (30, 31, 190) and s == "fetch"]  # fmt: skip
    assert sorted(poisoned) == [30, 31, 190]
    ran = _strategy(tmp_path / "list")
    assert (ran["strategy"], ran["ran"]) == ("list", "list")
    assert sim.stats()["deal_lists"] > 0


async def test_auto_picks_list_when_the_portal_makes_it_cheaper_per_deal(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(_portal(list_processing_ms=20.0, list_row_processing_ms=2.0))
    result = await _export(sim, tmp_path / "auto", "auto")
    assert result.ok
    ran = _strategy(tmp_path / "auto")
    assert ran["ran"] == "list", ran
    assert ran["operating_s_per_deal"]["list"] < ran["operating_s_per_deal"]["get"]
    await _export(sim, tmp_path / "get", "get")
    assert _data(tmp_path / "auto").equals(_data(tmp_path / "get"))
    assert _sidecar(tmp_path / "auto").equals(_sidecar(tmp_path / "get"))


async def test_auto_picks_get_when_the_portal_makes_list_dearer_per_deal(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(
        _portal(processing_ms=5.0, list_processing_ms=500.0, list_row_processing_ms=10.0)
    )
    result = await _export(sim, tmp_path / "auto", "auto", concurrency=1)
    assert result.ok
    ran = _strategy(tmp_path / "auto")
    assert ran["ran"] == "get", ran
    assert ran["operating_s_per_deal"]["list"] > ran["operating_s_per_deal"]["get"]
    # The probe of list at the start (and the halves that isolate its poison deals).
    assert ran["batches"]["get"] > ran["batches"]["list"]


async def test_a_portal_that_ignores_the_id_filter_makes_auto_fall_back_to_get(
    simulator: Any, tmp_path: Path
) -> None:
    # No poison deal on the first page, the one such a portal answers to every list call.
    sim = await simulator(_portal(list_ignores_id_filter=True, poison_ids=frozenset({190})))
    result = await _export(sim, tmp_path / "auto", "auto")
    ran = _strategy(tmp_path / "auto")
    assert ran["ran"] == "get"
    assert "@ID filter" in ran["reason"]
    await _export(sim, tmp_path / "get", "get")
    assert result.exit_code == 0
    assert _data(tmp_path / "auto").equals(_data(tmp_path / "get"))
    assert _sidecar(tmp_path / "auto").equals(_sidecar(tmp_path / "get"))


async def test_list_on_a_portal_that_ignores_the_id_filter_fails_clearly(
    simulator: Any, tmp_path: Path
) -> None:
    # No poison deal on the first page, the one such a portal answers to every list call.
    sim = await simulator(_portal(list_ignores_id_filter=True, poison_ids=frozenset({190})))
    with pytest.raises(FatalPortalError, match=r"not asked for .*--strategy get"):
        await _export(sim, tmp_path / "list", "list")
