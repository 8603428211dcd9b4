"""A chunk whose typed rows reach PIECE_BYTES is committed as a piece: memory is bounded by bytes.

In-process `export()` over real sockets against the simulator, with wide deals (long COMMENTS,
`comment_bytes`): the same dataset and sidecar as a run that never cuts a piece, each piece a
unit that lists exactly the IDs it holds, and a resume that skips what the pieces hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline import run as run_module
from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.normalise import DealSchema
from pipeline.output.root import OutputRoot
from pipeline.run import PIECE_BYTES, export
from pipeline.simulator import RunningSimulator
from tests.e2e.helpers import accounted, read_data

CHUNK = 1_000
WIDE = 10_000  # bytes of COMMENTS per commented deal
#: Two list calls per request (100 IDs): a chunk is typed in parts of NORMALISE_EVERY deals.
FETCH = FetchConfig(strategy="list", batch_size=2)


def _config(sim: RunningSimulator, root: Path, behavior: str = "error") -> RunConfig:
    return RunConfig(
        auth=WebhookAuth(sim.webhook_url),
        output=OutputConfig(
            root=str(root),
            chunk_size=CHUNK,
            existing_data_behavior=behavior,  # type: ignore[arg-type]
        ),
        limits=LimitsConfig(rate=0, operating_budget_s=None),
        fetch=FETCH,
    )


def _checkpoints(root: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "_checkpoints").glob("*.json")}


def _deal_columns(root: Path) -> pa.Table:
    snapshot = json.loads((root / "_schema.json").read_text())
    names = list(DealSchema.from_snapshot(snapshot).column_names)
    return read_data(root).select(names).sort_by("ID")


async def test_wide_chunks_are_committed_in_pieces_of_bounded_bytes(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator(deals=2_000, seed=6, comment_bytes=WIDE)
    ids = IdsConfig(source=f"1-{sim.portal.max_id + 10}", format="range")
    wanted = set(range(1, sim.portal.max_id + 11))

    clean = tmp_path / "clean"
    whole = await export(_config(sim, clean), ids)
    assert not [k for k in _checkpoints(clean) if "-p" in k], "PIECE_BYTES is not reached here"

    limit = 1024 * 1024
    monkeypatch.setattr(run_module, "PIECE_BYTES", limit)
    held: list[int] = []
    real_append = run_module.TableBuilder.append

    def append(self: Any, part: Any) -> None:
        held.append(self.nbytes)
        real_append(self, part)

    monkeypatch.setattr(run_module.TableBuilder, "append", append)
    root = tmp_path / "out"
    cut = await export(_config(sim, root), ids)

    assert cut.exit_code == whole.exit_code
    checkpoints = _checkpoints(root)
    pieces = {k: v for k, v in checkpoints.items() if v["kind"] == "piece"}
    chunks = (len(wanted) + CHUNK - 1) // CHUNK
    full = len(wanted) // CHUNK
    assert {p["chunk"] for p in pieces.values()} == set(range(full)), sorted(pieces)
    # A piece is cut as soon as the limit is reached: no part is added to a builder that
    # holds that much.
    assert max(held) < limit
    for key, piece in pieces.items():
        chunk = piece["chunk"]
        assert key.startswith(f"chunk-{chunk:06d}-p")
        assert set(piece["ids"]) <= set(range(chunk * CHUNK + 1, (chunk + 1) * CHUNK + 1))
    assert {f"chunk-{i:06d}" for i in range(chunks)} <= set(checkpoints)

    data_ids, fetch_ids = accounted(root)
    assert len(data_ids) == len(set(data_ids)), "a deal was written twice"
    assert not set(data_ids) & set(fetch_ids)
    assert set(data_ids) | set(fetch_ids) == wanted
    assert _deal_columns(root).equals(_deal_columns(clean))
    assert sorted(accounted(root)[1]) == sorted(accounted(clean)[1])
    assert cut.manifest["counts"] == whole.manifest["counts"]


async def test_a_run_that_dies_after_sized_pieces_resumes_to_the_same_dataset(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator(deals=1_100, seed=2, comment_bytes=WIDE)
    ids = IdsConfig(source=f"1-{sim.portal.max_id}", format="range")
    wanted = set(range(1, sim.portal.max_id + 1))
    clean = tmp_path / "clean"
    await export(_config(sim, clean), ids)

    monkeypatch.setattr(run_module, "PIECE_BYTES", 1024 * 1024)
    real_write_chunk = OutputRoot.awrite_chunk

    async def die(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise _Died  # the run ends before any chunk is committed whole

    monkeypatch.setattr(OutputRoot, "awrite_chunk", die)
    root = tmp_path / "out"
    with pytest.raises(_Died):
        await export(_config(sim, root), ids)
    pieces = {k: v for k, v in _checkpoints(root).items() if v["kind"] == "piece"}
    assert pieces, "no sized piece was committed before the first chunk"
    assert not [k for k, v in _checkpoints(root).items() if v["kind"] != "piece"]

    monkeypatch.setattr(OutputRoot, "awrite_chunk", real_write_chunk)
    result = await export(_config(sim, root, behavior="resume"), ids)
    assert result.exit_code in (0, 2), result
    assert set(pieces) <= set(_checkpoints(root)), "a resume keeps what the pieces hold"
    data_ids, fetch_ids = accounted(root)
    assert len(data_ids) == len(set(data_ids)), "a deal was written twice"
    assert not set(data_ids) & set(fetch_ids)
    assert set(data_ids) | set(fetch_ids) == wanted
    assert _deal_columns(root).equals(_deal_columns(clean))


class _Died(Exception):
    pass


def test_a_chunk_of_ordinary_deals_stays_below_piece_bytes() -> None:
    # The figure PIECE_BYTES' comment gives (12.9 MB for 10,000 simulator deals) leaves room.
    assert PIECE_BYTES > 12_900_000 * 1.25


async def test_a_chunk_of_ordinary_deals_is_not_cut(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=10_400, seed=9)
    root = tmp_path / "out"
    config = RunConfig(
        auth=WebhookAuth(sim.webhook_url),
        output=OutputConfig(root=str(root)),  # the default chunk of 10,000 IDs
        limits=LimitsConfig(rate=0, operating_budget_s=None),
        fetch=FetchConfig(strategy="list"),
    )
    result = await export(config, IdsConfig(source="1-10000", format="range"))
    assert result.exit_code in (0, 2), result
    assert [p.stem for p in (root / "_checkpoints").glob("*.json")] == ["chunk-000000"]
