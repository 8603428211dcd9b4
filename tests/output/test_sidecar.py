from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from pipeline.errors import OutputError
from pipeline.outcomes import DealFailed, InvalidInput, RecordError
from pipeline.output import SIDECAR_SCHEMA, fingerprint_ids, mask_config, schema_fingerprint
from pipeline.output.sidecar import (
    conform,
    failed_row,
    failed_table,
    invalid_input_row,
    record_error_row,
    sidecar_table,
    with_rows,
)

SEEN = datetime(2024, 9, 1, 12, tzinfo=UTC)


def test_schema_is_fixed() -> None:
    assert [(f.name, str(f.type)) for f in SIDECAR_SCHEMA] == [
        ("id", "int64"),
        ("line", "int64"),
        ("stage", "string"),
        ("code", "string"),
        ("message", "string"),
        ("http_status", "int32"),
        ("attempts", "int32"),
        ("retryable", "bool"),
        ("error_class", "string"),
        ("field", "string"),
        ("raw_value", "string"),
        ("first_seen", "timestamp[us, tz=UTC]"),
        ("last_seen", "timestamp[us, tz=UTC]"),
        ("run_id", "string"),
    ]
    assert sidecar_table([]).schema == SIDECAR_SCHEMA
    assert conform(None).num_rows == 0


def test_rows_from_outcomes() -> None:
    rows = [
        failed_row(
            DealFailed(7, "ACCESS_DENIED", "Access denied", 403, 1, False, "permanent"),
            run_id="r",
            seen=SEEN,
        ),
        record_error_row(
            RecordError(8, "OPPORTUNITY", "12,5x", "bad decimal"), run_id="r", seen=SEEN
        ),
        invalid_input_row(InvalidInput(3, "abc", "not an integer"), run_id="r", seen=SEEN),
    ]
    table = sidecar_table(rows)
    assert table.schema == SIDECAR_SCHEMA
    got = table.to_pylist()
    assert got[0] | {} == {
        "id": 7,
        "line": None,
        "stage": "fetch",
        "code": "ACCESS_DENIED",
        "message": "Access denied",
        "http_status": 403,
        "attempts": 1,
        "retryable": False,
        "error_class": "permanent",
        "field": None,
        "raw_value": None,
        "first_seen": SEEN,
        "last_seen": SEEN,
        "run_id": "r",
    }
    assert (got[1]["stage"], got[1]["field"], got[1]["raw_value"]) == (
        "normalise",
        "OPPORTUNITY",
        "12,5x",
    )
    assert (got[2]["id"], got[2]["line"], got[2]["raw_value"]) == (None, 3, "abc")


def test_failed_table_holds_exactly_the_rows_failed_row_makes() -> None:
    failures = [
        DealFailed(7, "ACCESS_DENIED", "Access denied", 403, 1, False, "permanent"),
        DealFailed(9, "", "Not found", None, 2, False, "permanent"),
        DealFailed(11, "QUERY_LIMIT_EXCEEDED", "Too many requests", 503, 5, True, "limit"),
    ]
    table = failed_table(failures, run_id="r", seen=SEEN)
    expected = sidecar_table(failed_row(f, run_id="r", seen=SEEN) for f in failures)
    assert table.schema.equals(SIDECAR_SCHEMA, check_metadata=True)
    assert table.equals(expected)
    assert conform(table) is table
    assert failed_table([], run_id="r", seen=SEEN).equals(sidecar_table([]))


def test_with_rows_appends_dict_rows_after_a_table() -> None:
    failure = DealFailed(7, "ACCESS_DENIED", "Access denied", 403, 1, False, "permanent")
    error = RecordError(7, "OPPORTUNITY", "12,5x", "bad decimal")
    table = with_rows(
        failed_table([failure], run_id="r", seen=SEEN),
        [record_error_row(error, run_id="r", seen=SEEN)],
    )
    rows = [
        failed_row(failure, run_id="r", seen=SEEN),
        record_error_row(error, run_id="r", seen=SEEN),
    ]
    assert table.to_pylist() == sidecar_table(rows).to_pylist()
    assert table.schema == SIDECAR_SCHEMA


def test_conform_rejects_unknown_columns_and_stages() -> None:
    with pytest.raises(OutputError, match="unknown columns"):
        conform(pa.table({"id": [1], "stage": ["fetch"], "extra": [1]}))
    with pytest.raises(OutputError, match="unknown stages"):
        sidecar_table([{"id": 1, "stage": "parse"}])
    # a subset of columns with looser types is cast to the fixed schema
    table = conform(pa.table({"id": pa.array([1], pa.int32()), "stage": ["fetch"]}))
    assert table.schema == SIDECAR_SCHEMA


def test_mask_config_drops_secrets_and_masks_urls() -> None:
    from pipeline.config import OAuthAuth, OutputConfig, RunConfig, WebhookAuth

    hook = RunConfig(
        auth=WebhookAuth("https://x.bitrix24.ru/rest/1/s3cr3tvalue/"),
        output=OutputConfig(root="out"),
    )
    masked = mask_config(hook)
    assert "s3cr3tvalue" not in repr(masked)
    assert masked["auth"]["url"] == "https://x.bitrix24.ru/rest/1/***/"
    assert masked["output"]["root"] == "out"
    oauth = RunConfig(
        auth=OAuthAuth("https://x/rest/", "tok-AAAA", "ref-BBBB", "cid", "csec-CCCC"),
        output=OutputConfig(root="out"),
    )
    text = repr(mask_config(oauth))
    for secret in ("tok-AAAA", "ref-BBBB", "csec-CCCC"):
        assert secret not in text
    assert "client_id" in text
    nested = mask_config({"a": [{"password": "p"}, "https://h/?auth=zzzz"], "n": 1})
    assert nested == {"a": [{}, "https://h/?auth=***"], "n": 1}


def test_schema_fingerprint_ignores_metadata_but_not_types() -> None:
    a = pa.schema([pa.field("ID", pa.int64())])
    assert schema_fingerprint(a) == schema_fingerprint(a.with_metadata({b"k": b"v"}))
    assert schema_fingerprint(a) != schema_fingerprint(pa.schema([pa.field("ID", pa.int32())]))


def test_fingerprint_ids_depends_on_order_content_and_chunk_size() -> None:
    big = range(1, 200_000)
    assert fingerprint_ids(big) == fingerprint_ids(list(big))
    assert fingerprint_ids([1, 2]) != fingerprint_ids([2, 1])
    assert fingerprint_ids([1, 2]) != fingerprint_ids([1, 2, 3])
    assert fingerprint_ids([1], chunk_size=10) != fingerprint_ids([1], chunk_size=11)
