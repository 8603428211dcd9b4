"""`detect_and_apply_deletes` over real HTTP against the simulator, on real Delta tables."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from pipeline import reconcile as reconcile_module
from pipeline.clock import ScaledClock
from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
from pipeline.errors import OutputError
from pipeline.fetch import PortalClient
from pipeline.reconcile import detect_and_apply_deletes
from pipeline.simulator import RunningSimulator
from pipeline.summary import EXIT_OK
from tests.conftest import SimulatorFactory

from .helpers import live_ids, make_table, rows_by_id

UNLIMITED = LimitsConfig(rate=0, operating_budget_s=None)
FAST = FetchConfig(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05)


def client_for(sim: RunningSimulator) -> PortalClient:
    return PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=FAST, clock=sim.clock)


async def portal_with_table(
    simulator: SimulatorFactory, tmp_path: Path
) -> tuple[RunningSimulator, str]:
    """A portal and the table of its last night: every readable deal, live."""
    sim = await simulator(deals=400, seed=21, hidden_fraction=0.0, deleted_fraction=0.02)
    return sim, make_table(tmp_path / "deals", sim.portal.visible_ids)


async def test_marks_exactly_the_deleted_deals(simulator: SimulatorFactory, tmp_path: Path) -> None:
    sim, uri = await portal_with_table(simulator, tmp_path)
    visible = sim.portal.visible_ids
    gone = visible[3:300:7]
    sim.sim.portal.delete(gone)
    created = sim.create(30)  # new deals are the export's business, not marked or added
    before = DeltaTable(uri).version()
    async with client_for(sim) as client:
        result = await detect_and_apply_deletes(client, uri, run_id="rec-1")
    rows = rows_by_id(uri)
    assert sorted(i for i, mark in rows.items() if mark is not None) == gone
    assert live_ids(uri) == sorted(set(visible) - set(gone))
    assert not set(created) & set(rows)
    marks = {rows[i] for i in gone}
    assert len(marks) == 1
    (mark,) = marks
    assert mark is not None
    assert abs(mark.timestamp() - sim.clock.now()) < 3600  # the injected clock's now, in UTC
    assert mark.tzinfo is not None
    assert (result.gone, result.deleted, result.listed) == (
        len(gone),
        len(gone),
        len(visible) - len(gone) + 30,
    )
    assert result.failures == []
    assert result.exit_code == EXIT_OK
    assert DeltaTable(uri).version() == before + 1
    assert DeltaTable(uri).history(1)[0]["run_id"] == "rec-1"
    stats = sim.stats()
    assert stats["deal_gets"] == len(gone)  # only the gaps are asked about


async def test_hard_delete_removes_them(simulator: SimulatorFactory, tmp_path: Path) -> None:
    sim, uri = await portal_with_table(simulator, tmp_path)
    gone = sim.portal.visible_ids[10:20]
    sim.sim.portal.delete(gone)
    async with client_for(sim) as client:
        result = await detect_and_apply_deletes(client, uri, run_id="rec", hard=True)
    assert (result.deleted, result.applied.removed) == (10, 10)
    assert sorted(rows_by_id(uri)) == sim.portal.visible_ids
    assert all(mark is None for mark in rows_by_id(uri).values())
    assert "10 removed" in result.summary()


async def test_access_denied_is_not_a_deletion(
    simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    sim = await simulator(deals=300, seed=9, hidden_fraction=0.1, deleted_fraction=0.0)
    hidden = sim.portal.hidden_ids[:5]
    gone = sim.portal.visible_ids[:4]
    # Last night's table holds deals the user can no longer read (hidden since).
    uri = make_table(tmp_path / "deals", sorted(sim.portal.visible_ids + hidden))
    sim.sim.portal.delete(gone)
    async with client_for(sim) as client:
        result = await detect_and_apply_deletes(client, uri, run_id="rec")
    rows = rows_by_id(uri)
    assert sorted(i for i, mark in rows.items() if mark is not None) == gone
    assert all(rows[i] is None for i in hidden)  # the rows stay
    assert [f.id for f in result.verdict.denied] == hidden
    assert {f.message for f in result.failures} == {"Access denied."}
    assert result.exit_code == EXIT_OK  # a permanent answer, as for a run
    assert "5 denied" in result.summary()
    undecided = [r for r in caplog.records if getattr(r, "event", "") == "deletion_undecided"]
    assert sorted(getattr(r, "fields", {})["deal_id"] for r in undecided) == hidden
    assert all(sim.secret not in r.getMessage() for r in caplog.records)


async def test_a_restored_deal_is_unmarked(simulator: SimulatorFactory, tmp_path: Path) -> None:
    # Night 1: a deal is deleted and marked. Night 2: it is back under its ID (recycle bin)
    # and another one goes: the first mark is cleared, the second set, in one commit.
    sim, uri = await portal_with_table(simulator, tmp_path)
    first, second = sim.portal.visible_ids[5], sim.portal.visible_ids[6]
    sim.sim.portal.delete([first])
    async with client_for(sim) as client:
        night1 = await detect_and_apply_deletes(client, uri, run_id="n1")
    assert night1.deleted == 1
    assert rows_by_id(uri)[first] is not None
    assert sim.restore([first]) == [first]
    sim.sim.portal.delete([second])
    version = DeltaTable(uri).version()
    async with client_for(sim) as client:
        night2 = await detect_and_apply_deletes(client, uri, run_id="n2")
    rows = rows_by_id(uri)
    assert rows[first] is None
    assert rows[second] is not None
    assert (night2.deleted, night2.applied.restored, night2.restored_ids) == (1, 1, [first])
    assert DeltaTable(uri).version() == version + 1


async def test_nothing_gone_changes_nothing(simulator: SimulatorFactory, tmp_path: Path) -> None:
    sim, uri = await portal_with_table(simulator, tmp_path)
    version = DeltaTable(uri).version()
    async with client_for(sim) as client:
        result = await detect_and_apply_deletes(client, uri, run_id="r")
    assert (result.gone, result.deleted, result.applied.version) == (0, 0, None)
    assert DeltaTable(uri).version() == version
    assert sim.stats()["deal_gets"] == 0


async def test_a_folder_output_is_refused_before_the_portal_is_asked(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=50, seed=1)
    (tmp_path / "deals").mkdir()
    async with client_for(sim) as client:
        with pytest.raises(OutputError, match="needs the Delta sink"):
            await detect_and_apply_deletes(client, str(tmp_path / "deals"), run_id="r")
    assert sim.stats()["requests"] == 0


async def test_the_mark_uses_the_injected_clock(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim, uri = await portal_with_table(simulator, tmp_path)
    sim.sim.portal.delete(sim.portal.visible_ids[:1])
    fixed = ScaledClock(1.0)
    stamp = datetime.fromtimestamp(int(fixed.now()), UTC)
    async with client_for(sim) as client:
        await detect_and_apply_deletes(client, uri, run_id="r", clock=fixed)
    marks = [m for m in rows_by_id(uri).values() if m is not None]
    assert len(marks) == 1
    assert abs((marks[0] - stamp).total_seconds()) < 60


async def test_a_deal_listed_late_is_present_not_deleted(
    simulator: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race: a row's deal is not on the listing, yet exists when asked (here: it is created
    # between the listing and the follow-up). Its row stays live and it comes back to refresh.
    sim, _ = await portal_with_table(simulator, tmp_path)
    future = sim.portal.max_id + 1
    uri = make_table(tmp_path / "late", [*sim.portal.visible_ids, future])
    listed = reconcile_module.list_all_ids

    async def list_then_create(client: PortalClient, **kw: int) -> object:
        ids = await listed(client, **kw)
        assert sim.create(1) == [future]
        return ids

    monkeypatch.setattr(reconcile_module, "list_all_ids", list_then_create)
    async with client_for(sim) as client:
        result = await detect_and_apply_deletes(client, uri, run_id="r")
    assert [d.id for d in result.present] == [future]
    assert result.present[0].payload == sim.portal.deal_wire(future)
    assert (result.gone, result.deleted, result.failures) == (1, 0, [])
    assert rows_by_id(uri)[future] is None
    assert "1 still present (listed late)" in result.summary()
    assert result.applied.version is None
