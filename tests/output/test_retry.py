from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pyarrow.dataset as ds
import pytest

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.outcomes import DealFailed
from pipeline.output import OutputRoot, failed_row

LATER = datetime(2024, 9, 2, tzinfo=UTC)


def _export(root: Path, synth: ModuleType, chunks: int = 2) -> None:
    config = OutputConfig(root=str(root))
    with OutputRoot.open(config, "run-1", lock_settle_s=0) as out:
        for index in range(chunks):
            out.write_chunk(index, *synth.chunk(index))
        out.finalize(counts={"requested": chunks * synth.ROWS_PER_CHUNK})


def _again(i: int, run_id: str) -> dict[str, object]:
    failure = DealFailed(i, "INTERNAL_SERVER_ERROR", "still 500", 500, 2, True, "transient")
    return failed_row(failure, run_id=run_id, seen=LATER)


def _accounting(root: Path) -> tuple[list[int], list[dict[str, object]]]:
    ids = ds.dataset(str(root), partitioning="hive").to_table().column("ID").to_pylist()
    rows = ds.dataset(str(root / "_errors")).to_table().to_pylist()
    return ids, rows


def test_retry_turns_retryable_rows_into_data(tmp_path: Path, synth: ModuleType) -> None:
    _export(tmp_path, synth)
    requested = list(range(1, 2 * synth.ROWS_PER_CHUNK + 1))
    failed = [i for i in requested if i % synth.FAIL_EVERY == 0]
    retryable = [i for i in failed if i % 2]
    with OutputRoot.open_existing(str(tmp_path), "retry-1") as out:
        assert out.retryable_ids() == retryable
        recovered, still = retryable[::2], retryable[1::2]
        out.apply_retry(synth.deals(recovered), [_again(i, "retry-1") for i in still])
        manifest = out.finalize()
        assert out.retryable_ids() == still

    ids, rows = _accounting(tmp_path)
    assert len(ids) == len(set(ids))
    fetch_ids = [r["id"] for r in rows if r["stage"] == "fetch"]
    assert len(fetch_ids) == len(set(fetch_ids))
    assert sorted(ids + fetch_ids) == requested
    assert set(recovered) <= set(ids)
    again = {r["id"]: r for r in rows if r["id"] in still}
    assert set(again) == set(still)
    for row in again.values():
        assert row["attempts"] == 5 + 2
        assert row["first_seen"] == synth.SEEN
        assert row["last_seen"] == LATER
        assert row["run_id"] == "retry-1"
    assert (tmp_path / "_SUCCESS").exists()
    assert manifest["run_id"] == "retry-1"
    assert manifest["counts"]["requested"] == len(requested)  # carried over from the run
    assert manifest["counts"]["exported"] == len(ids)
    assert manifest["counts"]["failed"] == len(fetch_ids)
    assert any("part-rretry1-000000-" in f["path"] for f in manifest["files"])

    # a second retry gets its own chunk name and finishes the job
    with OutputRoot.open_existing(str(tmp_path), "retry-2") as out:
        out.apply_retry(synth.deals(still), [])
        assert out.retryable_ids() == []
        out.finalize()
    ids, rows = _accounting(tmp_path)
    assert sorted(ids + [r["id"] for r in rows]) == requested
    assert {r["code"] for r in rows} == {"NOT_FOUND"}


def test_retry_refuses_ids_it_did_not_offer(tmp_path: Path, synth: ModuleType) -> None:
    _export(tmp_path, synth, chunks=1)
    with OutputRoot.open_existing(str(tmp_path), "retry-1") as out:
        with pytest.raises(OutputError, match="not retryable"):
            out.apply_retry(synth.deals([14]), [])  # 14 failed permanently (NOT_FOUND)
        with pytest.raises(OutputError, match="not retryable"):
            out.apply_retry(synth.deals([1]), [])  # 1 is already in the data


def test_retry_needs_a_completed_output(tmp_path: Path, synth: ModuleType) -> None:
    with pytest.raises(OutputError, match="not a finished deal-export output"):
        OutputRoot.open_existing(str(tmp_path), "retry-1")
    with OutputRoot.open(OutputConfig(root=str(tmp_path)), "run-1", lock_settle_s=0) as out:
        out.write_chunk(0, *synth.chunk(0))
        out.finalize(completed=False)
    with pytest.raises(OutputError, match="did not complete"):
        OutputRoot.open_existing(str(tmp_path), "retry-1")


def test_crash_between_retry_commit_and_sidecar_cleanup_rolls_forward(
    tmp_path: Path, synth: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    _export(tmp_path, synth)
    requested = list(range(1, 2 * synth.ROWS_PER_CHUNK + 1))
    real = OutputRoot._cleanup_after_retry

    def crash(self: OutputRoot, key: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(OutputRoot, "_cleanup_after_retry", crash)
    with OutputRoot.open_existing(str(tmp_path), "retry-1") as out:
        ids = out.retryable_ids()
        with pytest.raises(KeyboardInterrupt):
            out.apply_retry(synth.deals(ids), [])
    assert not (tmp_path / "_SUCCESS").exists()  # the output changed: no longer vouched for
    monkeypatch.setattr(OutputRoot, "_cleanup_after_retry", real)

    with OutputRoot.open_existing(str(tmp_path), "retry-2") as out:
        assert out.retryable_ids() == []
        out.finalize()
    data_ids, rows = _accounting(tmp_path)
    fetch_ids = [r["id"] for r in rows if r["stage"] == "fetch"]
    assert len(data_ids) == len(set(data_ids))
    assert sorted(data_ids + fetch_ids) == requested


def test_damage_after_a_retry_is_reported_not_redone(tmp_path: Path, synth: ModuleType) -> None:
    _export(tmp_path, synth, chunks=1)
    with OutputRoot.open_existing(str(tmp_path), "retry-1") as out:
        out.apply_retry(synth.deals(out.retryable_ids()), [])
        out.finalize()
    victim = next(tmp_path.glob("DATE_CREATE_month=*/part-000000-*.parquet"))
    victim.unlink()
    with pytest.raises(OutputError, match="is damaged"):
        OutputRoot.open_existing(str(tmp_path), "retry-2")
