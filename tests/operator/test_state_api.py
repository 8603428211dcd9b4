"""`read_state` / `set_watermark` (behind `deal-export state`) on a local root and on a real
S3-compatible server (moto) on 127.0.0.1: locked, atomic, the field list kept."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output import OutputRoot, read_state, read_watermark, set_watermark
from pipeline.output.root import STATE_FILE
from pipeline.output.store import Store
from tests.conftest import fresh_s3_bucket


@pytest.fixture
def s3_root(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the local S3 server."""
    return fresh_s3_bucket(s3_endpoint, monkeypatch, "deals")[0]


def _completed(root: str, watermark: str) -> None:
    """A completed run with a watermark and a schema snapshot, through the real output API."""
    with OutputRoot.open(OutputConfig(root=root, partition_by=None), "night-1") as out:
        out.write_schema({"fields": {"ID": {"type": "integer"}}})
        out.finalize(watermark=watermark)


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return str(request.getfixturevalue("s3_root"))


def test_set_and_reset_move_only_the_watermark(root: str) -> None:
    _completed(root, "2026-11-30T00:00:00+00:00")
    before = read_state(root)
    assert before is not None
    assert before["watermark"] == "2026-11-30T00:00:00+00:00"

    set_watermark(root, "2026-01-01T00:00:00+00:00", by="state-set-test")
    after = read_state(root)
    assert after is not None
    assert read_watermark(root) == "2026-01-01T00:00:00+00:00"
    assert after["schema"] == before["schema"]
    assert after["run_id"] == "night-1"
    assert after["moved_by"] == "state-set-test"

    set_watermark(root, None, by="state-reset-test")
    assert read_watermark(root) is None
    assert read_state(root) is not None  # the field list for drift reports is still there
    assert not Store.from_root(root).exists("_lock")


def test_set_is_refused_while_a_run_holds_the_lock(root: str) -> None:
    _completed(root, "2026-11-30T00:00:00+00:00")
    store = Store.from_root(root)
    raw = store.read_bytes(STATE_FILE)
    config = OutputConfig(root=root, partition_by=None, existing_data_behavior="overwrite")
    with OutputRoot.open(config, "night-2"):
        with pytest.raises(OutputError, match="locked by run night-2"):
            set_watermark(root, "2000-01-01T00:00:00+00:00", by="state-set-test")
        with pytest.raises(OutputError, match="locked by run night-2"):
            set_watermark(root, None, by="state-reset-test")
        assert store.read_bytes(STATE_FILE) == raw
    assert orjson.loads(raw or b"{}")["watermark"] == "2026-11-30T00:00:00+00:00"


def test_a_root_with_foreign_files_is_not_touched(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputError, match="did not write"):
        set_watermark(str(tmp_path), "2026-01-01T00:00:00+00:00", by="state-set-test")
    assert not (tmp_path / STATE_FILE).exists()
