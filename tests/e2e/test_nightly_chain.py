"""Ten nights of `run --table-format delta --since-last-run --detect-deletes` against a portal
that changes between them (deals touched, created, deleted, hidden, shown again, restored),
with faults on some nights and one night's run killed with SIGKILL and started again. After
the tenth night the table's live rows are the portal's current deals, value for value and type
for type, as a fresh full export of them; every deleted deal is marked; no ID is doubled; the
errors table holds exactly the deals the user can no longer read.

Nights are six hours apart on the portal's time line without waiting: the in-process runs read
a clock shifted to their night (`_NightClock`), edits are stamped with `touch(at=...)` between
two nights, and the killed night runs as a real subprocess on the wall clock, so it comes after
every earlier night and before the last one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.config import FetchConfig
from pipeline.config_load import IdsConfig, load_config
from pipeline.run import export
from pipeline.simulator import FaultConfig, RunningSimulator
from tests.conftest import SimulatorFactory, fresh_s3_bucket
from tests.e2e.helpers import FAST, cli_env, run_cli, start_cli
from tests.output.delta.conftest import s3_endpoint  # noqa: F401  (the moto fixture)
from tests.output.delta.helpers import delta_config, errors_of, rows, table_of

NIGHT_S = 6 * 3600
NIGHTLY_TOML = Path(__file__).resolve().parents[2] / "configs" / "nightly.toml"
NIGHTS = 10
KILLED_NIGHT = 9
FAULT_NIGHTS = {4, 7}
LINEAGE = {"_run_id", "_extracted_at", "_deleted_at"}
SINCE_LAST = IdsConfig(since_last_run=True, start_from=datetime(2000, 1, 1, tzinfo=UTC))
RETRIES = FetchConfig(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.05)
ONE_ATTEMPT = FetchConfig(max_attempts=1)


class _NightClock:
    """The wall clock shifted to one night: the run's watermark and the portal's stamps then
    lie hours apart, while sleeps (pacing, backoff) stay real and short."""

    scale = 1.0

    def __init__(self, offset_s: float) -> None:
        self._offset = offset_s
        self._origin = time.monotonic()

    def now(self) -> float:
        return time.time() + self._offset

    def monotonic(self) -> float:
        return time.monotonic() - self._origin

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class _Chain:
    """The portal's changes between nights, chosen by a seeded draw, and what they should
    leave in the table."""

    def __init__(self, sim: RunningSimulator, seed: int) -> None:
        self.sim = sim
        self.rnd = random.Random(seed)
        self.in_table: set[int] = set()  # every ID any night could have exported
        self.hidden: set[int] = set()  # taken out of reach after they were exported

    def pick(self, count: int, pool: set[int] | list[int]) -> list[int]:
        pool = sorted(pool)
        return sorted(self.rnd.sample(pool, min(count, len(pool))))

    def change(self, night: int, at: float) -> None:
        """Edits before `night`, stamped between `at` (the previous night) and the next."""
        portal = self.sim.portal
        visible = set(portal.visible_ids)
        portal.touch(self.pick(20 if night == KILLED_NIGHT else 8, visible), at + 3600)
        self.sim.create(3, at + 2 * 3600)
        portal.delete(self.pick(2, visible & self.in_table))
        if night in (3, 5):
            taken = self.pick(2, set(portal.visible_ids) & self.in_table)
            portal.hide(taken)
            self.hidden |= set(taken)
        if night == 6:  # readable again, untouched: only the recheck of the errors table sees it
            back = self.pick(1, self.hidden)
            portal.reveal(back)
            self.hidden -= set(back)
        if night == 8:  # a hidden deal deleted: its Access denied row must go
            gone = self.pick(1, self.hidden)
            portal.delete(gone)
            self.hidden -= set(gone)
        if night == 5:
            portal.restore(self.pick(1, set(portal.deleted_ids) & self.in_table), at + 3 * 3600)

    def exported(self) -> None:
        self.in_table |= set(self.sim.portal.visible_ids)


def _log_version(root: str) -> int:
    return int(table_of(root).version())


async def _killed_then_again(
    args: list[str], env: dict[str, str], cwd: Path, root: str, poll_s: float
) -> int:
    """Start the night's command, SIGKILL it a random moment after its first new commit, then
    run the same command to the end; its exit code."""
    before = _log_version(root)
    proc = await start_cli(args, env=env, cwd=cwd)
    deadline = time.monotonic() + 30
    while proc.returncode is None and time.monotonic() < deadline:
        if await asyncio.to_thread(_log_version, root) > before:
            break
        await asyncio.sleep(poll_s)
    await asyncio.sleep(random.uniform(0.0, 0.3))
    if proc.returncode is None:
        proc.kill()
    await proc.communicate()
    again = await run_cli(args, env=env, cwd=cwd, limit_s=60)
    assert "Traceback" not in again.stderr, again.stderr
    return again.code


async def _nights(
    sim: RunningSimulator, root: str, tmp_path: Path, *, chunk: int = 10, poll_s: float = 0.05
) -> None:
    """`chunk`: the in-process nights' chunk size (each chunk is a commit, which costs more
    on an object store); the killed night keeps chunks of 10, so it has commits to die between."""
    chain = _Chain(sim, seed=16)
    start = time.time()
    config = delta_config(sim, root, chunk_size=chunk, detect_deletes=True, fetch=RETRIES)
    args = ["run", "--table-format", "delta", "--out", root, "--since-last-run"]
    args += ["--detect-deletes", "--chunk-size", "10", "--batch-size", "5", "--concurrency", "1"]
    previous = start - KILLED_NIGHT * NIGHT_S
    bitten = 0
    for night in range(1, NIGHTS + 1):
        if night == KILLED_NIGHT:
            at = time.time()  # the subprocess runs on the wall clock
        elif night == NIGHTS:
            at = time.time() + NIGHT_S
        else:
            at = start - (KILLED_NIGHT - night) * NIGHT_S
        if night > 1:
            chain.change(night, previous)
        faults = night in FAULT_NIGHTS
        sim.set_faults(
            FaultConfig(error_500=0.5, seed=night, methods=frozenset({"batch"}))
            if faults
            else FaultConfig()
        )
        if night == KILLED_NIGHT:
            code = await _killed_then_again([*args, *FAST], cli_env(sim), tmp_path, root, poll_s)
        else:
            ids = SINCE_LAST if night == 1 else IdsConfig(since_last_run=True)
            # On a fault night one attempt per request: the faults must leave failures behind.
            tonight = dataclasses.replace(config, fetch=ONE_ATTEMPT) if faults else config
            result = await export(tonight, ids, clock=_NightClock(at - time.time()))
            code = result.exit_code
        # A fault night may leave deals for the next one (3), or fail to list the portal
        # after its data is committed (1); every other night accounts for every deal.
        assert code in ({0, 1, 3} if faults else {0}), f"night {night}: exit {code}"
        bitten += faults and code != 0
        chain.exported()
        previous = at
    assert bitten, "the faults must leave work for a later night"
    await _check(sim, root, tmp_path, chain)


async def _check(sim: RunningSimulator, root: str, tmp_path: Path, chain: _Chain) -> None:
    portal = sim.portal
    table = rows(root)
    ids = table.column("ID").to_pylist()
    assert len(ids) == len(set(ids)), "an ID is doubled"
    marked = table.filter(pc.is_valid(table.column("_deleted_at")))
    live = table.filter(pc.is_null(table.column("_deleted_at")))
    visible, hidden, deleted = (set(portal.visible_ids), chain.hidden, set(portal.deleted_ids))
    assert hidden, "the chain must leave some deal out of reach"
    assert set(live.column("ID").to_pylist()) == visible | hidden
    assert set(marked.column("ID").to_pylist()) == deleted & set(ids)
    assert deleted & set(ids), "the chain must mark some deletions"

    errors = errors_of(root)
    assert sorted(errors.column("id").to_pylist()) == sorted(hidden)
    assert set(errors.column("message").to_pylist()) <= {"Access denied", "Access denied."}

    ids_file = tmp_path / "visible.txt"
    ids_file.write_text("".join(f"{i}\n" for i in sorted(visible)))
    fresh_root = tmp_path / "fresh"
    fresh = await export(
        delta_config(sim, fresh_root, chunk_size=500), IdsConfig(source=str(ids_file))
    )
    assert fresh.exit_code == 0
    expected = _without_lineage(rows(fresh_root))
    got = _without_lineage(live.filter(pc.is_in(live.column("ID"), pa.array(sorted(visible)))))
    assert got.schema.remove_metadata().equals(expected.schema.remove_metadata())
    for name in expected.column_names:
        assert got.column(name).equals(expected.column(name)), f"column {name} differs"


def _without_lineage(table: pa.Table) -> pa.Table:
    keep = [n for n in table.column_names if n not in LINEAGE]
    return table.select(sorted(keep)).sort_by("ID").combine_chunks()


async def _bounded(make: Callable[[], object], limit_s: float = 300) -> None:
    # A hang guard, not a speed claim: the S3 chain takes ~70 s on a quiet machine and more than
    # 90 s at load 5-8, where a tighter bound failed a correct run.
    await asyncio.wait_for(make(), limit_s)  # type: ignore[arg-type]


async def test_ten_nights_leave_the_portal_s_current_deals(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    random.seed(16)
    sim = await simulator(deals=120, seed=16, hidden_fraction=0.0, deleted_fraction=0.0)
    root = str(tmp_path / "deals")
    await _bounded(lambda: _nights(sim, root, tmp_path))


@pytest.mark.timeout(330)  # the chain's own hang guard (_bounded) is 300 s
async def test_ten_nights_on_s3(
    simulator: SimulatorFactory,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    random.seed(17)
    sim = await simulator(deals=80, seed=17, hidden_fraction=0.0, deleted_fraction=0.0)
    root, _ = fresh_s3_bucket(s3_endpoint, monkeypatch, "warehouse/deals")
    await _bounded(lambda: _nights(sim, root, tmp_path, chunk=50, poll_s=0.5))


async def test_a_skipped_load_loses_nothing_on_delta(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    """The issue's scenario with the shipped configs/nightly.toml: deal 43 changes, night A
    exports it, nobody loads it, night B finds nothing new; the table still holds deal 43 as
    night A got it, since the table is the warehouse copy and the watermark moved with it."""
    sim = await simulator(deals=120, seed=16, hidden_fraction=0.0, deleted_fraction=0.0)
    assert 43 in sim.portal.visible_ids
    root = tmp_path / "deals"
    loaded = load_config(
        config_path=str(NIGHTLY_TOML),
        env={},
        overrides={
            "output.root": str(root),
            "portal.webhook_url": sim.webhook_url,
            "limits.rate": 0,
            "limits.operating_budget_s": "off",
        },
    )
    config = loaded.run_config()
    assert config.output.table_format == "delta"
    first = IdsConfig(since_last_run=True, start_from=datetime(2000, 1, 1, tzinfo=UTC))
    start = time.time()
    baseline = await export(config, first, clock=_NightClock(-3 * NIGHT_S))
    assert baseline.exit_code == 0
    edited = int(start - 2 * NIGHT_S - 3600)
    sim.touch([43], at=edited)

    night_a = await export(config, loaded.ids, clock=_NightClock(-2 * NIGHT_S))
    assert night_a.exit_code == 0
    assert night_a.counts.exported == 1
    # (no warehouse load here)
    night_b = await export(config, loaded.ids, clock=_NightClock(-NIGHT_S))
    assert night_b.exit_code == 0
    assert night_b.counts.exported == 0

    table = rows(root)
    row = table.filter(pc.equal(table.column("ID"), 43)).to_pylist()
    assert len(row) == 1
    assert row[0]["DATE_MODIFY"].timestamp() == edited
    assert row[0]["_run_id"] == night_a.run_id
    wire = sim.portal.deal_wire(43)
    assert wire is not None
    assert row[0]["TITLE"] == wire["TITLE"]
