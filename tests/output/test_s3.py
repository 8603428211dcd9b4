"""The same output code against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import ModuleType

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output import OutputRoot
from pipeline.output.store import display_uri


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, pafs.S3FileSystem]:
    """A fresh bucket; dummy credentials; no instance-metadata lookups (no network but ours)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    fs = pafs.S3FileSystem(
        endpoint_override=s3_endpoint,
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    bucket = f"b{time.monotonic_ns()}"
    fs.create_dir(bucket)
    uri = (
        f"s3://{bucket}/exports/deals?endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    )
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
