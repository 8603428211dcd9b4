"""Readers that turn an operator's ID input into an `IdSet`.

    text file / stdin   one ID per line; blank lines and `#` comments are skipped
    CSV                 one named column (default `ID`); `line` = CSV record number, header = 1
    Parquet             one named integer or text column, streamed batch by batch; `line` = row
    ranges              `1-5000`, `1-5000,7000-7100,42` (a command-line value, not a file)

Invalid values become `InvalidInput` records (line, raw text, reason) for the sidecar; they are
never sent. Whole-input problems are `UsageError`s (exit code 2): a missing or unreadable file, a
directory, an input with no IDs at all, or one that is clearly not an ID list (a compressed or
Parquet file read as text, or nothing valid among its first lines).

Memory is one int64 per valid ID plus a compact record per invalid line; inputs are read in blocks,
never whole. Bounded to what fits in memory for one sort (10M IDs = 80 MB); larger inputs would need
an external sort, which we do not do.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.errors import UsageError
from pipeline.ids.idset import IdCollector, IdCounts, IdRuns, IdSet
from pipeline.ids.invalid import InvalidLines
from pipeline.ids.validate import (
    MAX_ID,
    MAX_LINE_BYTES,
    REASON_MALFORMED_ROW,
    REASON_NEGATIVE,
    REASON_NULL,
    REASON_TOO_LARGE,
    REASON_TOO_LONG,
    REASON_ZERO,
    display_raw,
    parse_id,
)

IdFormat = Literal["auto", "text", "csv", "parquet", "range"]
ID_FORMATS: Final[tuple[str, ...]] = ("auto", "text", "csv", "parquet", "range")
DEFAULT_COLUMN: Final = "ID"

#: Stop early when, among the first this-many candidate lines, under 1 in GARBAGE_RATIO is valid.
GARBAGE_PROBE_LINES: Final = 1000
GARBAGE_RATIO: Final = 10
#: A range expands in memory; beyond this it is surely a typo (`1-99999999999`).
MAX_RANGE_IDS: Final = 50_000_000

_BLOCK_SIZE: Final = 1 << 20
_FAST_DIGITS: Final = 18  # any run of <= 18 digits fits in int64
_MAGIC: Final = (
    (b"PAR1", "a Parquet file (use a .parquet name or the parquet format, with a column)"),
    (b"\x1f\x8b", "gzip-compressed (decompress it first, e.g. `zcat file | deal-export ... -`)"),
    (b"PK\x03\x04", "a ZIP archive or spreadsheet (export the ID column as CSV or text)"),
)
_BOM: Final = b"\xef\xbb\xbf"
_RANGE_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def load_ids(
    source: str,
    *,
    column: str | None = None,
    fmt: IdFormat = "auto",
    stdin: BinaryIO | None = None,
    noun: str = "deal",
) -> IdSet:
    """Read, validate and deduplicate deal IDs from `source`; `noun` names the entity whose
    IDs they are in messages (`Entity.name`).

    `fmt="auto"` picks by name: `-` is stdin (text), `*.csv` CSV, `*.parquet`/`*.pq` Parquet,
    anything else a text file. Ranges are never guessed from a name: pass `fmt="range"`.
    `column` names the CSV/Parquet column (default `ID`). Text, stdin and ranges have no
    columns, so there it is ignored, whatever its value: a config file that spells out the
    column for its usual CSV input must still work with a text file given for one run.
    """
    kind = _resolve_format(source, fmt)
    if kind == "range":
        return read_ranges(source)
    if kind == "text":
        if source == "-":
            stream = stdin if stdin is not None else sys.stdin.buffer
            return read_text(stream, name="stdin", noun=noun)
        return read_text_file(source, noun=noun)
    if kind == "csv":
        return read_csv(source, column or DEFAULT_COLUMN, noun=noun)
    return read_parquet(source, column or DEFAULT_COLUMN, noun=noun)


def _resolve_format(source: str, fmt: str) -> str:
    if fmt not in ID_FORMATS:
        raise UsageError(f"unknown ID format {fmt!r}: expected one of {', '.join(ID_FORMATS)}")
    if fmt != "auto":
        if source == "-" and fmt != "text":
            raise UsageError(f"stdin (-) is read as text, not {fmt}")
        return fmt
    if source == "-":
        return "text"
    suffix = Path(source).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    return "text"


# --------------------------------------------------------------------------------------- text


def read_text_file(path: str, *, block_size: int = _BLOCK_SIZE, noun: str = "deal") -> IdSet:
    """Read a text file of one ID per line (see `read_text`)."""
    _check_file(path)
    try:
        with open(path, "rb") as stream:
            return read_text(stream, name=path, block_size=block_size, noun=noun)
    except OSError as exc:
        raise UsageError(f"cannot read ID file {path}: {exc.strerror or exc}") from None


def read_text(
    stream: BinaryIO, *, name: str, block_size: int = _BLOCK_SIZE, noun: str = "deal"
) -> IdSet:
    """Read one ID per line from a binary stream.

    Tolerated: ASCII whitespace around the ID (so CRLF line ends), a UTF-8 byte-order mark,
    leading zeros, blank lines and lines starting with `#`. Lines longer than 1024 bytes are
    invalid whatever they hold (and are never held in memory whole).
    """
    collector = IdCollector()
    lineno = 0
    for lines in _line_blocks(stream, name, block_size, noun):
        lineno = _consume_text_lines(lines, lineno, collector)
        _probe_garbage(collector, name, noun)
    return _finish(collector, name, noun)


def _consume_text_lines(lines: list[bytes], lineno: int, collector: IdCollector) -> int:
    # The hot loop of a 10M-line input: the common case (short run of digits) is inlined.
    append = collector.values.append
    invalid = collector.invalid
    skipped = 0
    for token in lines:
        lineno += 1
        s = token.strip()
        if len(s) <= _FAST_DIGITS and s.isdigit() and len(token) <= MAX_LINE_BYTES:
            value = int(s)
            if value:
                append(value)
            else:
                invalid.add(lineno, token, REASON_ZERO)
            continue
        if len(token) > MAX_LINE_BYTES:
            invalid.add(lineno, token, REASON_TOO_LONG)
            continue
        if not s or s.startswith(b"#"):
            skipped += 1
            continue
        result = parse_id(token)
        if isinstance(result, int):
            append(result)
        else:
            invalid.add(lineno, token, result)
    collector.lines += len(lines)
    collector.skipped += skipped
    return lineno


def _line_blocks(
    stream: BinaryIO, name: str, block_size: int, noun: str = "deal"
) -> Iterator[list[bytes]]:
    """Lines of `stream` (without `\\n`), a block at a time.

    A line that grows past MAX_LINE_BYTES without a newline is cut to MAX_LINE_BYTES + 1 bytes
    (enough for the reader to call it too long) and the rest of it is skipped unread-into-memory.
    """
    carry = b""
    skipping = False
    first = True
    for block in _blocks(stream, block_size):
        if first:
            first = False
            _check_magic(block, name, noun)
            if block.startswith(_BOM):
                block = block[len(_BOM) :]
        if skipping:
            newline = block.find(b"\n")
            if newline < 0:
                continue
            block = block[newline + 1 :]
            skipping = False
        if carry:
            block = carry + block
        lines = block.split(b"\n")
        carry = lines.pop()
        if len(carry) > MAX_LINE_BYTES:
            lines.append(carry[: MAX_LINE_BYTES + 1])
            carry = b""
            skipping = True
        if lines:
            yield lines
    if carry:
        yield [carry]


def _blocks(stream: BinaryIO, block_size: int) -> Iterator[bytes]:
    # The first read is large enough to see a file-type signature whatever the block size.
    block = stream.read(max(block_size, 8))
    while block:
        yield block
        block = stream.read(block_size)


def _check_magic(head: bytes, name: str, noun: str = "deal") -> None:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise UsageError(f"{name} looks like {what}, not a text list of {noun} IDs")


# ---------------------------------------------------------------------------------------- CSV


def read_csv(
    path: str, column: str = DEFAULT_COLUMN, *, block_size: int = 4 << 20, noun: str = "deal"
) -> IdSet:
    """Read the IDs in `column` of a CSV file with a header row (comma-separated, RFC 4180).

    Every cell of the column must hold an ID: empty cells are invalid (not skipped). Rows with the
    wrong number of fields are recorded as invalid too; `line` is the CSV record number.
    """
    _check_file(path)
    collector = IdCollector()
    malformed: set[int] = set()

    def on_bad_row(row: pacsv.InvalidRow) -> str:
        number = row.number if row.number is not None else -1
        malformed.add(number)
        collector.lines += 1
        collector.invalid.add(
            number, row.text.encode("utf-8", "backslashreplace"), REASON_MALFORMED_ROW
        )
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=block_size),
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_bad_row, newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=[column], column_types={column: pa.binary()}
            ),
        )
        record = 1  # the header
        for batch in reader:
            values = batch.column(0).to_pylist()
            append = collector.values.append
            for token in values:
                record += 1
                while record in malformed:
                    record += 1
                result = parse_id(token)
                if isinstance(result, int):
                    append(result)
                else:
                    collector.invalid.add(record, token, result)
            collector.lines += len(values)
            _probe_garbage(collector, path, noun)
    except KeyError:
        raise UsageError(
            f"{path} has no column {column!r}; columns: {_csv_columns(path)}"
        ) from None
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a readable CSV file: {_arrow_message(exc)}") from None
    except OSError as exc:
        raise UsageError(f"cannot read ID file {path}: {exc.strerror or exc}") from None
    return _finish(collector, path, noun)


def _csv_columns(path: str) -> str:
    try:
        with open(path, "rb") as f:
            header = f.readline(MAX_LINE_BYTES).decode("utf-8", "backslashreplace").strip()
    except OSError:
        return "?"
    return ", ".join(repr(c.strip().strip('"')) for c in header.split(",")) or "none"


# ------------------------------------------------------------------------------------ Parquet


def read_parquet(
    path: str, column: str = DEFAULT_COLUMN, *, batch_size: int = 1 << 16, noun: str = "deal"
) -> IdSet:
    """Read the IDs in `column` of a Parquet file, batch by batch.

    Integer columns are range-checked (nulls, 0, negatives and uint64 > 2^63-1 are invalid); text
    columns are validated like text lines. Other column types are a usage error. `line` is the
    1-based row number.
    """
    # Here, not at the top: it loads pyarrow's S3 binding (see pipeline/output/store.py).
    import pyarrow.parquet as pq

    _check_file(path)
    collector = IdCollector()
    try:
        # Streamed through a small buffer: pre-buffering would hold whole column chunks (~100 MB
        # extra for a 10M-row file) while we only ever need one batch.
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        schema = parquet.schema_arrow
        if column not in schema.names:
            names = ", ".join(repr(n) for n in schema.names) or "none"
            raise UsageError(f"{path} has no column {column!r}; columns: {names}")
        if schema.names.count(column) > 1:
            # Which of them holds the IDs is not for us to guess.
            raise UsageError(
                f"{path} has {schema.names.count(column)} columns named {column!r}; "
                "give the IDs one column (or name another with --ids-column)"
            )
        col_type = schema.field(column).type
        if pa.types.is_dictionary(col_type):
            col_type = col_type.value_type
        is_int = pa.types.is_integer(col_type)
        if not (is_int or _is_text(col_type)):
            raise UsageError(
                f"{path}: column {column!r} has type {col_type}; expected integers or text"
            )
        row = 0
        for batch in parquet.iter_batches(batch_size=batch_size, columns=[column]):
            values = batch.column(0)
            if pa.types.is_dictionary(values.type):
                values = values.dictionary_decode()
            if is_int:
                _consume_int_values(values, row, collector)
            else:
                _consume_text_values(values, row, collector)
            row += len(values)
            collector.lines += len(values)
            _probe_garbage(collector, path, noun)
    except (pa.ArrowInvalid, pa.ArrowIOError) as exc:
        raise UsageError(f"{path} is not a readable Parquet file: {_arrow_message(exc)}") from None
    return _finish(collector, path, noun)


def _is_text(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def _consume_int_values(values: pa.Array, row: int, collector: IdCollector) -> None:
    if values.null_count == 0 and len(values) and _all_in_range(values):
        # The normal case: copy the batch's int64 buffer over in bulk, no Python ints.
        ints = values.cast(pa.int64())
        start = ints.offset * 8
        collector.values.frombytes(memoryview(ints.buffers()[1])[start : start + 8 * len(ints)])
        return
    append = collector.values.append
    for offset, value in enumerate(values.to_pylist(), start=row + 1):
        if value is None:
            collector.invalid.add_text(offset, "", REASON_NULL)
        elif value == 0:
            collector.invalid.add_text(offset, "0", REASON_ZERO)
        elif value < 0:
            collector.invalid.add_text(offset, str(value), REASON_NEGATIVE)
        elif value > MAX_ID:
            collector.invalid.add_text(offset, str(value), REASON_TOO_LARGE)
        else:
            append(value)


def _all_in_range(values: pa.Array) -> bool:
    bounds = pc.min_max(values).as_py()
    return bool(bounds["min"] > 0 and bounds["max"] <= MAX_ID)


def _consume_text_values(values: pa.Array, row: int, collector: IdCollector) -> None:
    append = collector.values.append
    for offset, value in enumerate(values.to_pylist(), start=row + 1):
        if value is None:
            collector.invalid.add_text(offset, "", REASON_NULL)
            continue
        token = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        result = parse_id(token)
        if isinstance(result, int):
            append(result)
        else:
            collector.invalid.add(offset, token, result)


# ------------------------------------------------------------------------------------- ranges


def parse_ranges(spec: str) -> list[tuple[int, int]]:
    """`"1-5000,7000-7100,42"` -> `[(1, 5000), (7000, 7100), (42, 42)]`, bounds inclusive."""
    if not spec.strip():
        raise UsageError("empty ID range")
    parts: list[tuple[int, int]] = []
    total = 0
    for part in spec.split(","):
        match = _RANGE_PART.match(part)
        if not match:
            raise UsageError(f"bad ID range {part.strip()!r}: expected N or FIRST-LAST (1-5000)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        for bound in (first, last):
            if not 1 <= bound <= MAX_ID:
                raise UsageError(f"bad ID range {part.strip()!r}: {bound} is not in 1..2^63-1")
        if first > last:
            raise UsageError(f"bad ID range {part.strip()!r}: first ID is above the last")
        total += last - first + 1
        if total > MAX_RANGE_IDS:
            raise UsageError(
                f"ID ranges {spec!r} hold more than {MAX_RANGE_IDS:,} IDs; split the export"
            )
        parts.append((first, last))
    return parts


def read_ranges(spec: str) -> IdSet:
    """The IDs of `parse_ranges(spec)`; overlapping ranges count as duplicates."""
    parts = parse_ranges(spec)
    members = sum(last - first + 1 for first, last in parts)
    # Sorted and merged where they overlap or touch: the runs of the sorted unique IDs.
    runs: list[tuple[int, int]] = []
    for first, last in sorted(parts):
        if runs and first <= runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], max(runs[-1][1], last))
        else:
            runs.append((first, last))
    ids = IdRuns(runs)
    counts = IdCounts(lines=members, skipped=0, valid=members, invalid=0, unique=len(ids))
    return IdSet(source=f"range {spec}", ids=ids, invalid=InvalidLines(), counts=counts)


# ------------------------------------------------------------------------------------- shared


def _check_file(path: str) -> None:
    if os.path.isdir(path):
        raise UsageError(f"ID input {path} is a directory; expected a file")
    if not os.path.exists(path):
        hint = ""
        if _looks_like_ranges(path):
            hint = (
                "; it looks like ID ranges: add --ids-format range "
                '(or format = "range" in [ids] of the config file)'
            )
        raise UsageError(f"ID file not found: {path}{hint}")


def _looks_like_ranges(text: str) -> bool:
    parts = text.split(",")
    return any("-" in p for p in parts) and all(_RANGE_PART.match(p) for p in parts)


def _probe_garbage(collector: IdCollector, name: str, noun: str = "deal") -> None:
    """Give up early on inputs that are plainly not ID lists, before storing their every line.

    Judged once, on the first GARBAGE_PROBE_LINES or more candidates: fewer than one in ten
    valid means a wrong file (binary, another column, names), not a dirty ID list. Random bytes
    do produce the odd line that is a valid ID, hence a ratio rather than "none valid".
    """
    valid, invalid = len(collector.values), len(collector.invalid)
    if collector.probed or valid + invalid < GARBAGE_PROBE_LINES:
        return
    collector.probed = True
    if valid * GARBAGE_RATIO < invalid:
        first = collector.invalid[0]
        raise UsageError(
            f"{name} does not look like a list of {noun} IDs: only {valid:,} of its first "
            f"{valid + invalid:,} values are valid (line {first.line}: {first.raw!r}: "
            f"{first.reason})"
        )


def _finish(collector: IdCollector, name: str, noun: str = "deal") -> IdSet:
    # Readers decode through Arrow's pool, which keeps freed blocks; hand them back before the
    # sort needs two more copies of the IDs.
    pa.default_memory_pool().release_unused()
    if collector.lines - collector.skipped == 0:
        raise UsageError(f"{name} holds no {noun} IDs (it is empty or only blank/comment lines)")
    if len(collector.values) == 0:
        first = collector.invalid[0]
        raise UsageError(
            f"{name} holds no valid {noun} ID: all {len(collector.invalid):,} values are invalid "
            f"(line {first.line}: {first.raw!r}: {first.reason})"
        )
    return collector.finish(name)


def _arrow_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return display_raw(text[0].encode()) if text else type(exc).__name__


__all__ = [
    "DEFAULT_COLUMN",
    "GARBAGE_PROBE_LINES",
    "GARBAGE_RATIO",
    "ID_FORMATS",
    "MAX_RANGE_IDS",
    "IdFormat",
    "load_ids",
    "parse_ranges",
    "read_csv",
    "read_parquet",
    "read_ranges",
    "read_text",
    "read_text_file",
]
