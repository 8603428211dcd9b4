"""ID sources: strict validation, every bad line accounted for, dedupe counts, usage errors."""

from __future__ import annotations

import gzip
import io
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import UsageError
from pipeline.ids import (
    MAX_ID,
    InvalidLines,
    load_ids,
    parse_id,
    parse_ranges,
    read_text,
)
from pipeline.ids.idset import IdRuns
from pipeline.ids.sources import GARBAGE_PROBE_LINES, MAX_RANGE_IDS
from pipeline.ids.validate import MAX_LINE_BYTES, MAX_RAW_CHARS, is_skippable

# ------------------------------------------------------------------------------ one token


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (b"1", 1),
        (b"42", 42),
        (b"  42\t", 42),
        (b"42\r", 42),
        (b"007", 7),
        (b"9223372036854775807", MAX_ID),
        (b"00000000000000000000009223372036854775807", MAX_ID),
        (b"9223372036854775808", "larger than 2^63-1"),
        (b"99999999999999999999999999", "larger than 2^63-1"),
        (b"0", "zero is not a deal ID"),
        (b"000", "zero is not a deal ID"),
        (b"-5", "negative number"),
        (b"+5", "not a decimal integer"),
        (b"12abc", "not a decimal integer"),
        (b"12.7", "not an integer (has a fraction or exponent)"),
        (b"12.0", "not an integer (has a fraction or exponent)"),
        (b"1e3", "not an integer (has a fraction or exponent)"),
        (b"0x10", "not a decimal integer"),
        (b" 1 2", "not a decimal integer"),
        (b"1_000", "not a decimal integer"),
        ("١٢".encode(), "not a decimal integer"),  # Arabic-Indic digits: int() would take them
        (b"\xff\xfe", "not valid UTF-8"),
        (b"1\x002", "contains a NUL byte"),
        (b"", "empty value"),
        (b"1" * (MAX_LINE_BYTES + 1), f"line longer than {MAX_LINE_BYTES} bytes"),
        (b" " * MAX_LINE_BYTES + b"5", f"line longer than {MAX_LINE_BYTES} bytes"),
    ],
)
def test_parse_id(token: bytes, expected: int | str) -> None:
    assert parse_id(token) == expected


def _reference(token: bytes) -> int | None:
    s = token.strip(b" \t\n\r\x0b\x0c")
    if len(token) > MAX_LINE_BYTES or not re.fullmatch(rb"[0-9]+", s):
        return None
    value = int(s)
    return value if 1 <= value <= MAX_ID else None


_TOKENS = st.one_of(
    st.binary(max_size=30),
    st.from_regex(rb"\A[ \t]{0,2}[-+0]?[0-9]{0,21}[.eEx]?[0-9]{0,3}[ \t\r]{0,2}\Z"),
    st.integers(min_value=-(2**64), max_value=2**64).map(lambda i: str(i).encode()),
)


@given(_TOKENS)
def test_parse_id_accepts_exactly_plain_positive_int64(token: bytes) -> None:
    result = parse_id(token)
    expected = _reference(token)
    if expected is None:
        assert isinstance(result, str)
    else:
        assert result == expected


# ---------------------------------------------------------------------------------- text


@st.composite
def _documents(draw: st.DrawFn) -> list[bytes]:
    line = st.one_of(
        st.integers(min_value=1, max_value=60).map(lambda i: str(i).encode()),
        st.sampled_from([b"", b"# note", b"  ", b"12abc", b"0", b"7\r", b"x" * 40]),
        st.binary(max_size=8).filter(lambda b: b"\n" not in b),
    )
    return draw(st.lists(line, max_size=40))


@settings(max_examples=150, deadline=None)
@given(_documents(), st.integers(min_value=1, max_value=17))
def test_text_reader_matches_line_by_line_reference(lines: list[bytes], block: int) -> None:
    data = b"\n".join(lines)
    expected_ids: list[int] = []
    expected_invalid: list[int] = []
    for number, token in enumerate(data.split(b"\n") if data else [], start=1):
        if number == 1 and token.startswith(b"\xef\xbb\xbf"):
            token = token[3:]
        value = _reference(token)
        if value is not None:
            expected_ids.append(value)
        elif not is_skippable(token):
            expected_invalid.append(number)
    if (
        not expected_ids
        or data[:4] in (b"PAR1",)
        or data[:2] == b"\x1f\x8b"
        or data[:4] == b"PK\x03\x04"
    ):
        with pytest.raises(UsageError):
            read_text(io.BytesIO(data), name="doc", block_size=block)
        return
    result = read_text(io.BytesIO(data), name="doc", block_size=block)
    assert result.ids.to_pylist() == sorted(set(expected_ids))
    assert [bad.line for bad in result.invalid] == expected_invalid
    assert result.counts.valid == len(expected_ids)
    assert result.counts.duplicates == len(expected_ids) - len(set(expected_ids))
    assert result.counts.invalid == len(expected_invalid)
    assert result.counts.lines == result.counts.skipped + result.counts.valid + len(
        expected_invalid
    )


def test_text_file_sorted_deduplicated_and_accounted(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(
        b"\xef\xbb\xbf# exported 2026-11-26\n30\n10\r\n\n20\n10\n12abc\n  40  \n-5\n30\n"
    )
    ids = load_ids(str(path))
    assert ids.ids.to_pylist() == [10, 20, 30, 40]
    assert ids.counts.as_dict() == {
        "lines": 10,
        "skipped": 2,
        "valid": 6,
        "invalid": 2,
        "unique": 4,
        "duplicates": 2,
    }
    assert [(b.line, b.raw, b.reason) for b in ids.invalid] == [
        (7, "12abc", "not a decimal integer"),
        (9, "-5", "negative number"),
    ]
    assert ids.source == str(path)
    assert list(ids.batches(3)) == [[10, 20, 30], [40]]


def test_stdin_is_read_as_text() -> None:
    ids = load_ids("-", stdin=io.BytesIO(b"5\n3\n5\n"))
    assert ids.ids.to_pylist() == [3, 5]
    assert ids.counts.duplicates == 1
    assert ids.source == "stdin"


def test_huge_line_is_one_invalid_line_and_reading_continues() -> None:
    data = b"1\n" + b"9" * 5_000_000 + b"\n2\n" + b"x" * 3000
    ids = read_text(io.BytesIO(data), name="huge", block_size=4096)
    assert ids.ids.to_pylist() == [1, 2]
    bad = list(ids.invalid)
    assert [(b.line, b.reason) for b in bad] == [
        (2, f"line longer than {MAX_LINE_BYTES} bytes"),
        (4, f"line longer than {MAX_LINE_BYTES} bytes"),
    ]
    assert len(bad[0].raw) == MAX_RAW_CHARS + 1  # truncated, with an ellipsis
    assert bad[0].raw.endswith("…")


def test_non_utf8_and_nul_lines_are_invalid_and_shown_escaped() -> None:
    ids = read_text(io.BytesIO(b"1\n\xff\xfe7\n2\x003\n"), name="mixed")
    assert [(b.line, b.raw, b.reason) for b in ids.invalid] == [
        (2, "\\xff\\xfe7", "not valid UTF-8"),
        (3, "2\\x003", "contains a NUL byte"),
    ]


# --------------------------------------------------------------------------- bad inputs


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ID file not found"):
        load_ids(str(tmp_path / "nope.txt"))
    with pytest.raises(UsageError, match="is a directory"):
        load_ids(str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"# only a comment\n\n"])
def test_empty_input_is_a_usage_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="holds no deal IDs"):
        load_ids(str(path))
    with pytest.raises(UsageError, match="holds no deal IDs"):
        load_ids("-", stdin=io.BytesIO(content))


def test_all_invalid_input_is_a_usage_error_naming_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("deal one\ndeal two\n")
    with pytest.raises(UsageError, match=r"no valid deal ID.*line 1: 'deal one'"):
        load_ids(str(path))


def test_binary_garbage_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(random.Random(7).randbytes(1 << 20))
    with pytest.raises(UsageError, match="does not look like a list of deal IDs"):
        load_ids(str(path))


def test_garbage_probe_judges_the_first_lines_once() -> None:
    bad = b"x\n" * (GARBAGE_PROBE_LINES + 10)
    with pytest.raises(UsageError, match="only 1 of its first"):
        read_text(io.BytesIO(b"5\n" + bad), name="g", block_size=64)
    # A dirty but real list: one bad line in five.
    dirty = (b"1\n2\n3\n4\nx\n" * GARBAGE_PROBE_LINES) + bad
    ids = read_text(io.BytesIO(dirty), name="g", block_size=64)
    assert ids.counts.invalid == 2 * GARBAGE_PROBE_LINES + 10
    assert ids.counts.unique == 4


@pytest.mark.parametrize(
    ("head", "hint"),
    [
        (b"PAR1\x15\x04", "Parquet"),
        (gzip.compress(b"1\n2\n", mtime=0), "gzip"),
        (b"PK\x03\x04", "ZIP"),
    ],
)
def test_known_binary_formats_read_as_text_get_a_hint(
    tmp_path: Path, head: bytes, hint: str
) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(head + b"\x00" * 100)
    with pytest.raises(UsageError, match=hint):
        load_ids(str(path))


# ------------------------------------------------------------------------------------ CSV


def test_csv_column_by_name(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_text('TITLE,ID\n"a, b",5\nc,3\nd,\ne,"12abc"\nf,5\ng,h,i\nj,7\n')
    ids = load_ids(str(path))
    assert ids.ids.to_pylist() == [3, 5, 7]
    # record numbers count the header as 1; the 3-field row is malformed
    assert [(b.line, b.reason) for b in ids.invalid] == [
        (7, "malformed CSV row"),
        (4, "empty value"),
        (5, "not a decimal integer"),
    ]
    assert ids.counts.duplicates == 1
    assert ids.counts.lines == 7


def test_csv_other_column_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "deals.csv"
    path.write_text("DEAL_ID,TITLE\n9,a\n8,b\n")
    assert load_ids(str(path), column="DEAL_ID").ids.to_pylist() == [8, 9]
    with pytest.raises(UsageError, match=r"no column 'ID'; columns: 'DEAL_ID', 'TITLE'"):
        load_ids(str(path))


def test_csv_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UsageError, match="not a readable CSV"):
        load_ids(str(empty))
    header_only = tmp_path / "header.csv"
    header_only.write_text("ID\n")
    with pytest.raises(UsageError, match="holds no deal IDs"):
        load_ids(str(header_only))
    with pytest.raises(UsageError, match="not found"):
        load_ids(str(tmp_path / "absent.csv"))


# -------------------------------------------------------------------------------- Parquet


def test_parquet_int_column_streamed_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    values = [*list(range(5000, 0, -1)), 10, None, 0, -3]
    pq.write_table(pa.table({"ID": pa.array(values, pa.int64())}), path, row_group_size=700)
    ids = load_ids(str(path))
    assert ids.ids.to_pylist() == list(range(1, 5001))
    assert ids.counts.duplicates == 1
    assert [(b.line, b.raw, b.reason) for b in ids.invalid] == [
        (5002, "", "null value"),
        (5003, "0", "zero is not a deal ID"),
        (5004, "-3", "negative number"),
    ]


def test_parquet_uint64_above_int64_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "ids.pq"
    pq.write_table(pa.table({"ID": pa.array([1, 2**63, 2**64 - 1], pa.uint64())}), path)
    ids = load_ids(str(path))
    assert ids.ids.to_pylist() == [1]
    assert {b.reason for b in ids.invalid} == {"larger than 2^63-1"}


def test_parquet_text_column_validated_like_lines(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    table = pa.table({"deal": pa.array(["7", " 8 ", "12abc", None, "7"]).dictionary_encode()})
    pq.write_table(table, path)
    ids = load_ids(str(path), column="deal")
    assert ids.ids.to_pylist() == [7, 8]
    assert [(b.line, b.reason) for b in ids.invalid] == [
        (3, "not a decimal integer"),
        (4, "null value"),
    ]


def test_parquet_errors(tmp_path: Path) -> None:
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"ID": pa.array([1.0, 2.5])}), path)
    with pytest.raises(UsageError, match="has type double; expected integers or text"):
        load_ids(str(path))
    with pytest.raises(UsageError, match="no column 'X'; columns: 'ID'"):
        load_ids(str(path), column="X")
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"1\n2\n3\n")
    with pytest.raises(UsageError, match="not a readable Parquet file"):
        load_ids(str(fake))
    twice = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4])], ["ID", "ID"]), twice)
    with pytest.raises(UsageError, match="has 2 columns named 'ID'"):
        load_ids(str(twice))


# --------------------------------------------------------------------------------- ranges


def test_ranges() -> None:
    assert parse_ranges("1-3, 7 ,10-10") == [(1, 3), (7, 7), (10, 10)]
    ids = load_ids("1-5,4-6,9", fmt="range")
    assert ids.ids.to_pylist() == [1, 2, 3, 4, 5, 6, 9]
    assert ids.counts.duplicates == 2
    assert not ids.invalid


def _dense(spec: str) -> list[int]:
    return sorted({i for first, last in parse_ranges(spec) for i in range(first, last + 1)})


@given(
    st.lists(st.tuples(st.integers(1, 300), st.integers(0, 40)), min_size=1, max_size=6).map(
        lambda parts: ",".join(f"{a}-{a + n}" for a, n in parts)
    )
)
@settings(max_examples=200, deadline=None)
def test_ranges_read_as_their_sorted_unique_ids(spec: str) -> None:
    dense = _dense(spec)
    ids = load_ids(spec, fmt="range")
    assert len(ids) == len(dense) == ids.counts.unique
    assert ids.counts.valid == ids.counts.lines == sum(b - a + 1 for a, b in parse_ranges(spec))
    assert ids.ids.to_pylist() == dense
    assert ids.array().to_pylist() == dense
    assert ids.ids[0].as_py() == dense[0]
    assert ids.ids[-1].as_py() == dense[-1]
    for size in (1, 3, 7, 50):
        assert [i for batch in ids.batches(size) for i in batch] == dense
        for start in range(0, len(dense) + 2, size):
            got = ids.ids.slice(start, size)
            assert got.type == pa.int64()
            assert got.to_pylist() == dense[start : start + size]


def test_a_range_is_held_as_runs_not_an_array() -> None:
    ids = load_ids("1-1000000,2000001-3000000", fmt="range")
    assert isinstance(ids.ids, IdRuns)
    assert len(ids) == 2_000_000
    assert ids.ids.slice(999_999, 3).to_pylist() == [1_000_000, 2_000_001, 2_000_002]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty ID range"),
        ("1-", "bad ID range '1-'"),
        ("a-b", "bad ID range 'a-b'"),
        ("5-1", "first ID is above the last"),
        ("0-5", "0 is not in 1..2^63-1"),
        (f"1-{MAX_ID + 1}", "is not in 1..2^63-1"),
        (f"1-{MAX_RANGE_IDS + 1}", "split the export"),
        ("-5", "bad ID range '-5'"),
    ],
)
def test_bad_ranges(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        load_ids(spec, fmt="range")


def test_format_selection_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown ID format"):
        load_ids("ids.txt", fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="stdin"):
        load_ids("-", fmt="csv")
    # An explicit format beats the extension.
    path = tmp_path / "ids.csv"
    path.write_text("4\n2\n")
    assert load_ids(str(path), fmt="text").ids.to_pylist() == [2, 4]


# ------------------------------------------------------------------------- invalid storage


def test_invalid_lines_store_round_trips_compactly() -> None:
    store = InvalidLines()
    for i in range(1, 10_001):
        store.add(i, b"bad\xff" if i % 2 else "плохо".encode(), "not a decimal integer")
    assert len(store) == 10_000
    assert store[0].raw == "bad\\xff"
    assert store[1].raw == "плохо"
    assert store[-1].line == 10_000
    assert [b.line for b in store][:3] == [1, 2, 3]
    assert store.nbytes() < 10_000 * 40
    with pytest.raises(IndexError):
        store[10_000]


# ------------------------------------------------------------------------- issue 14 cases


def test_b5_an_id_column_is_ignored_for_text_and_ranges(tmp_path: Path) -> None:
    # A config that spells out the column of its usual CSV input must work with a text file.
    path = tmp_path / "all_ids.txt"
    path.write_text("3\n1\n")
    assert load_ids(str(path), column="ID").ids.to_pylist() == [1, 3]
    assert load_ids(str(path), column="DEAL").ids.to_pylist() == [1, 3]
    assert load_ids("1-3", column="ID", fmt="range").ids.to_pylist() == [1, 2, 3]


@pytest.mark.parametrize("spec", ["1-100", "1-5,9", "7, 10-12"])
def test_b11_a_missing_file_that_looks_like_ranges_says_how_to_pass_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=re.escape("looks like ID ranges: add --ids-format range")):
        load_ids(spec)


def test_b11_a_missing_file_that_is_no_range_gets_no_range_hint(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load_ids(str(tmp_path / "ids-2024.txt"))
    assert "ranges" not in str(caught.value)
