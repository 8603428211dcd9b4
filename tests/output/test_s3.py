"""The same output code against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import ModuleType

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output import OutputRoot
from pipeline.output.chunks import Chunks
from pipeline.output.lock import RunLock, break_lock
from pipeline.output.store import Store, display_uri
from tests.conftest import fresh_s3_bucket
from tests.e2e.helpers import FAST as FAST_ARGS
from tests.e2e.helpers import cli_env, run_cli, start_cli


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, pafs.S3FileSystem]:
    """A fresh bucket on the local S3 server, and its filesystem."""
    uri, fs = fresh_s3_bucket(s3_endpoint, monkeypatch, "exports/deals")
    return uri, fs


def _keys(fs: pafs.S3FileSystem, uri: str) -> list[str]:
    base = uri.split("://", 1)[1].split("?", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(i.path[len(base) + 1 :] for i in infos if i.type == pafs.FileType.File)


def test_s3_round_trip_resume_and_manifest(
    s3: tuple[str, pafs.S3FileSystem], synth: ModuleType
) -> None:
    uri, fs = s3
    config = OutputConfig(root=uri)
    with OutputRoot.open(config, "run-1", input_fingerprint="fp", lock_settle_s=0) as out:
        out.write_chunk(0, *synth.chunk(0))
    with OutputRoot.open(config, "run-1b", input_fingerprint="fp", lock_settle_s=0) as out:
        assert out.committed_chunks() == {0}
        out.write_chunk(1, *synth.chunk(1))
        out.finalize(counts={"requested": 240})

    keys = _keys(fs, uri)
    assert "_SUCCESS" in keys
    assert "_manifest.json" in keys
    assert "_lock" not in keys
    assert all(not k.rsplit("/", 1)[-1].startswith(".") for k in keys)
    base = uri.split("://", 1)[1].split("?", 1)[0]
    table = ds.dataset(base, filesystem=fs, partitioning="hive").to_table()
    ids = table.column("ID").to_pylist()
    failed = pq.read_table(f"{base}/_errors", filesystem=fs).column("id").to_pylist()
    assert len(ids) == len(set(ids))
    assert sorted(ids + failed) == list(range(1, 241))
    assert "DATE_CREATE_month" in table.column_names
    manifest = json.loads(fs.open_input_stream(f"{base}/_manifest.json").read())
    assert manifest["counts"]["exported"] == len(ids)
    assert len(manifest["sessions"]) == 2
    assert "testing" not in json.dumps(manifest)


def test_s3_lock_refuses_a_second_run_and_expires_when_stale(
    s3: tuple[str, pafs.S3FileSystem],
) -> None:
    uri, fs = s3
    config = OutputConfig(root=uri)
    with (
        OutputRoot.open(config, "run-1", lock_settle_s=0),
        pytest.raises(OutputError, match="is locked by run run-1"),
    ):
        OutputRoot.open(config, "run-2", lock_settle_s=0)
    base = uri.split("://", 1)[1].split("?", 1)[0]
    # a holder that died long ago: its heartbeat is older than the stale limit
    with fs.open_output_stream(f"{base}/_lock") as f:
        f.write(json.dumps({"run_id": "ghost", "heartbeat": time.time() - 3600}).encode())
    with OutputRoot.open(config, "run-3", lock_settle_s=0) as out:
        assert out.committed_chunks() == set()
    with fs.open_output_stream(f"{base}/_lock") as f:
        f.write(json.dumps({"run_id": "alive", "heartbeat": time.time()}).encode())
    with pytest.raises(OutputError, match="is locked by run alive"):
        OutputRoot.open(config, "run-4", lock_settle_s=0)


def test_s3_debris_is_removed_and_completed_output_refused(
    s3: tuple[str, pafs.S3FileSystem], synth: ModuleType
) -> None:
    uri, fs = s3
    config = OutputConfig(root=uri)
    base = uri.split("://", 1)[1].split("?", 1)[0]
    with OutputRoot.open(config, "run-1", lock_settle_s=0) as out:
        out.write_chunk(0, *synth.chunk(0))
    # an uncommitted chunk's object, as a crash between upload and checkpoint leaves it
    orphan = f"{base}/DATE_CREATE_month=2024-03/part-000001-0.parquet"
    pq.write_table(synth.deals([100000]), orphan, filesystem=fs)
    with OutputRoot.open(config, "run-1", lock_settle_s=0) as out:
        assert out.committed_chunks() == {0}
        assert fs.get_file_info(orphan).type == pafs.FileType.NotFound
        out.finalize()
    with pytest.raises(OutputError, match="already holds a completed export"):
        OutputRoot.open(config, "run-2", lock_settle_s=0)
    with OutputRoot.open_existing(uri, "retry-1") as out:
        retryable = out.retryable_ids()
        out.apply_retry(synth.deals(retryable), [])
        out.finalize()
    ids = ds.dataset(base, filesystem=fs, partitioning="hive").to_table().column("ID").to_pylist()
    assert len(ids) == len(set(ids))
    assert set(retryable) <= set(ids)


def test_display_uri_hides_credentials() -> None:
    shown = display_uri("s3://AKIAXX:verysecret@bucket/p?secret_key=abc&region=x")
    assert "verysecret" not in shown
    assert "abc" not in shown
    assert "region=x" in shown


# ------------------------------------------------------------------------- after a kill -9


def _write_lock(fs: pafs.S3FileSystem, uri: str, **info: object) -> None:
    base = uri.split("://", 1)[1].split("?", 1)[0]
    fs.create_dir(base)
    with fs.open_output_stream(f"{base}/_lock") as f:
        f.write(json.dumps(info).encode())


def test_s3_lock_of_a_dead_pid_on_this_host_is_taken_over_at_once(
    s3: tuple[str, pafs.S3FileSystem],
) -> None:
    uri, fs = s3
    config = OutputConfig(root=uri)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(fs, uri, run_id="killed", pid=dead.pid, host=socket.gethostname(),
                heartbeat=time.time(), lease_s=60)  # fmt: skip
    with OutputRoot.open(config, "run-2", lock_settle_s=0) as out:
        assert out.committed_chunks() == set()


def test_s3_lock_of_a_reused_pid_is_not_its_owner(s3: tuple[str, pafs.S3FileSystem]) -> None:
    uri, fs = s3
    config = OutputConfig(root=uri)
    # Our own pid is alive, but the recorded start time is not ours: the pid was reused.
    _write_lock(fs, uri, run_id="old", pid=os.getpid(), pid_start="1", host=socket.gethostname(),
                heartbeat=time.time(), lease_s=60)  # fmt: skip
    with OutputRoot.open(config, "run-2", lock_settle_s=0):
        pass
    # The same pid with its true start time is a live owner: refused.
    own = RunLock(Store.from_root(uri), "mine", settle_s=0)
    info = own._info()
    _write_lock(fs, uri, **info)
    with pytest.raises(OutputError, match=r"is locked by run mine.*--break-lock"):
        OutputRoot.open(config, "run-3", lock_settle_s=0)


def test_s3_lock_silent_past_its_lease_is_taken_over(s3: tuple[str, pafs.S3FileSystem]) -> None:
    uri, fs = s3
    config = OutputConfig(root=uri)
    # Another host, so nothing can be known about the process; its lease ran out.
    _write_lock(fs, uri, run_id="far", pid=1, host="elsewhere", heartbeat=time.time() - 61,
                lease_s=60)  # fmt: skip
    with OutputRoot.open(config, "run-2", lock_settle_s=0):
        pass
    _write_lock(fs, uri, run_id="far", pid=1, host="elsewhere", heartbeat=time.time() - 5,
                lease_s=60)  # fmt: skip
    with pytest.raises(OutputError, match="is locked by run far"):
        OutputRoot.open(config, "run-3", lock_settle_s=0)
    assert break_lock(uri)["run_id"] == "far"
    with OutputRoot.open(config, "run-4", lock_settle_s=0):
        pass


def test_s3_holder_refreshes_its_heartbeat_and_notices_a_takeover(
    s3: tuple[str, pafs.S3FileSystem],
) -> None:
    uri, fs = s3
    store = Store.from_root(uri)
    store.ensure_root()
    lock = RunLock(store, "holder", settle_s=0, lease_s=0.4)
    lock.acquire()
    try:
        first = store.read_json("_lock")
        assert first is not None
        for _ in range(100):  # bounded: the thread beats every 0.1 s
            time.sleep(0.05)
            now = store.read_json("_lock")
            if now is not None and now["heartbeat"] > first["heartbeat"]:
                break
        else:
            pytest.fail("the heartbeat was never refreshed")
        # Another run takes over (as --break-lock then acquire would, in one step here so that
        # the beat cannot fall between the two and find no lock at all). A beat that read the
        # lock just before the takeover writes its own over it (an object store has no
        # compare-and-swap here); a real taker sees that when it reads its lock back after
        # settling and tries again, as this one does, until a beat reads the foreign token.
        _write_lock(fs, uri, run_id="breaker", heartbeat=time.time(), token="theirs")
        for _ in range(100):  # bounded: the next beat sees the foreign token
            time.sleep(0.05)
            if lock._lost is not None:
                break
            current = store.read_json("_lock")
            if current is not None and current.get("token") != "theirs":
                _write_lock(fs, uri, run_id="breaker", heartbeat=time.time(), token="theirs")
        # The beat names the taker when it reads the taker's lock whole. A beat that reads
        # across the overwrite (the size from a HEAD, then a ranged GET of the new object) gets
        # no valid lock: it stops all the same, but cannot say whose the lock is now.
        with pytest.raises(
            OutputError, match=r"lost the lock .* to (run breaker |another deal-export run;)"
        ):
            lock.heartbeat()
    finally:
        lock.release()
    assert store.read_json("_lock")["run_id"] == "breaker"  # not ours to delete


async def test_kill_9_then_the_same_command_succeeds_at_once_exactly_once(
    s3: tuple[str, pafs.S3FileSystem], simulator, tmp_path
) -> None:
    uri, fs = s3
    sim = await simulator(deals=300, seed=4)
    args = [
        "run", "--ids", "1-300", "--ids-format", "range", "--out", uri, "--chunk-size", "20",
        "--batch-size", "5", "--concurrency", "1", "--rate", "10", "--burst", "1",
        "--operating-budget", "off", "--no-progress",
    ]  # fmt: skip
    proc = await start_cli(args, env=cli_env(sim), cwd=tmp_path)
    try:
        for _ in range(400):  # bounded: until the first chunk is committed
            if any(k.startswith("_checkpoints/") for k in _keys(fs, uri)):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("no chunk was committed")
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "_lock" in _keys(fs, uri)
    assert "_SUCCESS" not in _keys(fs, uri)

    done = await run_cli(args, env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert "taking over the lock" in done.stderr
    assert "is no longer running" in done.stderr
    keys = _keys(fs, uri)
    assert "_SUCCESS" in keys
    assert "_lock" not in keys
    base = uri.split("://", 1)[1].split("?", 1)[0]
    ids = ds.dataset(base, filesystem=fs, partitioning="hive").to_table().column("ID").to_pylist()
    failed = pq.read_table(f"{base}/_errors", filesystem=fs).column("id").to_pylist()
    assert len(ids) == len(set(ids))
    assert sorted(ids + failed) == list(range(1, 301))


async def test_break_lock_takes_over_a_live_looking_lock_with_a_warning(
    s3: tuple[str, pafs.S3FileSystem], simulator, tmp_path
) -> None:
    uri, fs = s3
    sim = await simulator(deals=40, seed=4)
    _write_lock(fs, uri, run_id="elsewhere-run", pid=7, host="another-pod",
                heartbeat=time.time(), lease_s=60)  # fmt: skip
    args = ["run", "--ids", "1-40", "--ids-format", "range", "--out", uri, *FAST_ARGS]
    refused = await run_cli(args, env=cli_env(sim), cwd=tmp_path)
    assert refused.code == 1
    assert "--break-lock" in refused.stderr
    done = await run_cli([*args, "--break-lock"], env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert "--break-lock: removing the lock" in done.stderr
    assert "elsewhere-run" in done.stderr
    assert "_SUCCESS" in _keys(fs, uri)


class _Killed(BaseException):
    """Stands for the process dying mid-commit: no handler runs after it."""


@pytest.mark.parametrize("crash", ["staging", "after-checkpoint"])
def test_s3_readers_never_see_an_uncommitted_object(
    s3: tuple[str, pafs.S3FileSystem],
    synth: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    crash: str,
) -> None:
    uri, fs = s3
    base = uri.split("://", 1)[1].split("?", 1)[0]
    config = OutputConfig(root=uri)
    real_write = Store.write_atomic

    def write_atomic(self: Store, rel: str, data: bytes | memoryview) -> None:
        real_write(self, rel, data)
        if crash == "staging" and rel.endswith(".staged"):
            raise _Killed(rel)  # the first staged object is up, nothing else

    def move(self: Store, src: str, dst: str) -> None:
        raise _Killed(src)  # the checkpoint is written, no object copied into place yet

    with monkeypatch.context() as patched:
        patched.setattr(Store, "write_atomic", write_atomic)
        patched.setattr(Store, "move", move)
        patched.setattr(Chunks, "_drop_staging", lambda self, key: None)  # no handler runs
        with (
            pytest.raises(_Killed),
            OutputRoot.open(config, "run-1", input_fingerprint="fp", lock_settle_s=0) as out,
        ):
            out.write_chunk(0, *synth.chunk(0))
    keys = _keys(fs, uri)
    assert any(k.startswith("_staging/") for k in keys)
    assert not [k for k in keys if k.endswith(".parquet")], "an uncommitted object is readable"
    assert ds.dataset(base, filesystem=fs, partitioning="hive").count_rows() == 0

    with OutputRoot.open(config, "run-2", input_fingerprint="fp", lock_settle_s=0) as out:
        # Before the checkpoint: redone. After it: committed, its objects copied into place.
        assert out.committed_chunks() == ({0} if crash == "after-checkpoint" else set())
        if crash == "staging":
            out.write_chunk(0, *synth.chunk(0))
        out.finalize()
    keys = _keys(fs, uri)
    assert not [k for k in keys if k.startswith("_staging/")]
    ids = ds.dataset(base, filesystem=fs, partitioning="hive").to_table().column("ID").to_pylist()
    data, _ = synth.chunk(0)
    assert sorted(ids) == sorted(data.column("ID").to_pylist())


def test_s3_new_run_keeps_each_night_and_the_state_at_the_top(
    s3: tuple[str, pafs.S3FileSystem], synth: ModuleType
) -> None:
    uri, fs = s3
    base = uri.split("://", 1)[1].split("?", 1)[0]
    config = OutputConfig(root=uri, existing_data_behavior="new_run")
    for night, fp in (("night-a", "fp-a"), ("night-b", "fp-b")):
        with OutputRoot.open(config, night, input_fingerprint=fp, lock_settle_s=0) as out:
            assert "run_id=" in out.uri
            assert "?" in out.uri.split("run_id=", 1)[1]  # the path before the query
            out.write_chunk(0, *synth.chunk(0))
            out.finalize(watermark=f"{night}-mark")
    keys = _keys(fs, uri)
    assert "_deal_export/state.json" in keys
    assert {k.split("/", 1)[0] for k in keys if k.startswith("run_id=")} == {
        "run_id=night-a",
        "run_id=night-b",
    }
    assert not [k for k in keys if "_staging/" in k]
    state = json.loads(fs.open_input_stream(f"{base}/_deal_export/state.json").read())
    assert state["watermark"] == "night-b-mark"
    table = ds.dataset(base, filesystem=fs, partitioning="hive").to_table()
    assert sorted(set(table.column("run_id").to_pylist())) == ["night-a", "night-b"]
