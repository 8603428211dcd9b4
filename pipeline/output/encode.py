"""Parquet bytes: tables to whole in-memory files and back, with the digest a checkpoint keeps."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

# The writer class under `pyarrow.parquet.ParquetWriter`: `pyarrow.parquet` imports
# `pyarrow.fs` and its S3 binding (see pipeline/output/store.py), and files are encoded into
# memory buffers here.
# tests/output/test_encode.py checks the bytes equal those of `pyarrow.parquet.ParquetWriter`.
from pyarrow._parquet import ParquetWriter

from pipeline.output.layout import dumps
from pipeline.output.lineage import RUN_ID_COLUMN

#: The schema-metadata key of the pending input (`_deal_export/input.parquet`) that says how
#: its IDs were obtained.
INPUT_META_KEY = b"deal_export"


@dataclass(frozen=True, slots=True)
class Encoding:
    """How data and sidecar files are encoded (from `OutputConfig`)."""

    compression: str
    row_group_size: int

    def encode(self, table: pa.Table) -> pa.Buffer:
        # Built in memory: one chunk is bounded (chunk_size rows), and a whole buffer is what
        # makes an object-store upload all-or-nothing.
        sink = pa.BufferOutputStream()
        schema = table.schema
        plan = _plan(schema, self.compression)
        writer = ParquetWriter(
            sink,
            schema,
            compression=plan.codecs(table.num_rows),
            # No dictionary pages: a file holds one chunk's rows of one partition (hundreds),
            # where most columns are near-unique and the codec already folds repeated values,
            # so dictionaries only cost a second page to encode and compress per column (a
            # fifth of the time of a file here) and made files no smaller. Readers decode
            # values the same either way (PLAIN, the encoding defined for every physical type:
            # github.com/apache/parquet-format, Encodings.md; same schema, codec, statistics).
            use_dictionary=False,
            write_statistics=plan.statistics,
            # What `pyarrow.parquet.ParquetWriter` passes by default (pyarrow
            # `python/pyarrow/parquet/core.py`); the class below it leaves them to Arrow C++.
            version="2.6",
            use_deprecated_int96_timestamps=False,
            writer_engine_version="V2",
            # Data pages stay version 1 (pyarrow's default): version 2 pages saved ~4.5% of the
            # instructions of writing a chunk's files, but they are not read by every engine a
            # warehouse load may go through (parquet.apache.org, "Implementation status": V2
            # data pages "not widely adopted"; StarRocks and Snowflake-side readers lacked them).
            data_page_version="1.0",
            use_compliant_nested_type=True,
            # The Arrow schema goes into the footer below, serialised once per schema rather
            # than once per file.
            store_schema=plan.footer is None,
        )
        try:
            writer.write_table(table, row_group_size=self.row_group_size)
            if plan.footer is not None:
                writer.add_key_value_metadata(plan.footer)
        finally:
            writer.close()
        return sink.getvalue()

    def codecs(self, table: pa.Table) -> str | dict[str, str]:
        """The `compression` argument `encode` gives the writer for `table` (see `_Plan`)."""
        return _plan(table.schema, self.compression).codecs(table.num_rows)


#: At most this many rows, a boolean column's values take at most 128 bytes (PLAIN bit-packs
#: them, parquet-format Encodings.md), too few for a codec to pay: with zstd such a column chunk
#: came out no smaller (105 bytes plain, 104-114 compressed, 477-row files), while each
#: compress call costs a context set-up (~13 us on the build VM) whatever its size.
SMALL_BOOLEAN_ROWS = 1024
#: The codec names that mean no compression (pyarrow `_parquet.pyx`, compression_from_name).
_UNCOMPRESSED = frozenset({"none", "uncompressed"})


@dataclass(frozen=True, slots=True)
class _Plan:
    """What encoding a file needs from its schema alone, worked out once per schema: the
    footer metadata (`_footer_metadata`), the statistics columns (`statistics_columns`) and
    the Parquet leaf paths of its columns, for a codec per column chunk."""

    #: The configured codec (`Encoding.compression`), which the plan was made for.
    compression: str
    footer: dict[bytes, bytes] | None
    statistics: list[str]
    #: A small file's codec per leaf path; None when it has no boolean column, the codec is
    #: none anyway, or some type's leaf paths are not spelt out here (then every column chunk
    #: takes the one codec).
    small: dict[str, str] | None

    def codecs(self, rows: int) -> str | dict[str, str]:
        """One codec for every column chunk, except that a small file's boolean columns are
        stored uncompressed (Parquet keeps a codec per column chunk, ColumnMetaData.codec in
        parquet-format's parquet.thrift, and readers decompress each chunk by its own)."""
        if self.small is None or rows > SMALL_BOOLEAN_ROWS:
            return self.compression
        return self.small


#: Recent schemas and their plans. A run writes one data schema (plus the sidecar's), and
#: serialising it was ~0.1 ms of every file of a few hundred rows, finding its statistics
#: columns ~45 us; a schema's hash costs more than that, so the cache is a short list compared
#: with `equals`.
_PLANS: list[tuple[pa.Schema, str, _Plan]] = []
_PLANS_LOCK = threading.Lock()
_PLANS_KEPT = 4


def _plan(schema: pa.Schema, compression: str) -> _Plan:
    with _PLANS_LOCK:
        for known, codec, plan in _PLANS:
            if codec == compression and known.equals(schema, check_metadata=True):
                return plan
    leaves = None if compression.lower() in _UNCOMPRESSED else _boolean_leaves(schema)
    small = None
    if leaves is not None and any(leaves.values()):
        small = {path: "none" if boolean else compression for path, boolean in leaves.items()}
    plan = _Plan(compression, _footer_metadata(schema), statistics_columns(schema), small)
    with _PLANS_LOCK:
        _PLANS.insert(0, (schema, compression, plan))
        del _PLANS[_PLANS_KEPT:]
    return plan


def _boolean_leaves(schema: pa.Schema) -> dict[str, bool] | None:
    leaves: dict[str, bool] = {}
    for field in schema:
        paths = _leaf_paths(field.name, field.type)
        if paths is None:
            return None
        for path in paths:
            if path in leaves:  # two columns of one name: which codec is whose is unclear
                return None
            leaves[path] = pa.types.is_boolean(field.type)
    return leaves


def _leaf_paths(name: str, typ: pa.DataType) -> list[str] | None:
    """The dotted Parquet paths of a column's leaves as Arrow writes them with compliant nested
    types (a list's item is `<name>.list.element`: parquet-format LogicalTypes.md, Lists); None
    for a type not spelt out here, or a name with a dot (ambiguous in a dotted path)."""
    if "." in name:
        return None
    inner = _inner_paths(typ)
    return None if inner is None else [f"{name}{path}" for path in inner]


def _inner_paths(typ: pa.DataType) -> list[str] | None:
    """`_leaf_paths` below a column of type `typ`, each starting with its dot ("" for a leaf)."""
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        inner = _inner_paths(typ.value_type)
        return None if inner is None else [f".list.element{path}" for path in inner]
    if pa.types.is_struct(typ):
        paths: list[str] = []
        for child in typ:
            leaves = _leaf_paths(child.name, child.type)
            if leaves is None:
                return None
            paths.extend(f".{path}" for path in leaves)
        return paths or None
    if pa.types.is_primitive(typ) or pa.types.is_string(typ) or pa.types.is_decimal(typ):
        return [""]
    return None


#: The key under which Arrow keeps a file's Arrow schema in the Parquet footer.
_ARROW_SCHEMA_KEY = b"ARROW:schema"


def _footer_metadata(schema: pa.Schema) -> dict[bytes, bytes] | None:
    """The key-value metadata `write_table` (store_schema=True) puts in a file's footer: the
    schema's own metadata, then `ARROW:schema`, the base64 of the IPC-serialised schema (Arrow
    C++ `parquet/arrow/writer.cc`, GetSchemaMetadata), so the files are byte for byte those
    `write_table` makes. None for a schema whose metadata already holds that key (Arrow then
    writes it twice, which a dict cannot say): such a file is left to Arrow."""
    metadata = schema.metadata or {}
    if _ARROW_SCHEMA_KEY in metadata:
        return None
    footer = dict(metadata)
    footer[_ARROW_SCHEMA_KEY] = base64.b64encode(schema.serialize().to_pybytes())
    return footer


def _bounds_a_range(typ: pa.DataType) -> bool:
    """A scalar type whose min and max a range filter can use: IDs, numbers, flags, dates and
    times (the normaliser's other types are text and nested ones)."""
    return bool(
        pa.types.is_integer(typ)
        or pa.types.is_floating(typ)
        or pa.types.is_decimal(typ)
        or pa.types.is_boolean(typ)
        or pa.types.is_temporal(typ)
    )


def statistics_columns(schema: pa.Schema) -> list[str]:
    """The columns a data file keeps min/max statistics for: every top-level column of a type
    that bounds a range (what range filters and partition pruning read), plus the lineage run
    ID, which is one value per file.

    Text and nested columns go without: in a file of one chunk's rows of one partition (a few
    hundred) their min and max bound almost nothing (titles, comments, URLs, list elements),
    yet computing and storing them was ~5% of the instructions of writing the files
    (callgrind) and ~4% of their bytes.
    """
    return [f.name for f in schema if f.name == RUN_ID_COLUMN or _bounds_a_range(f.type)]


def sha256(buf: pa.Buffer) -> str:
    return hashlib.sha256(buf).hexdigest()


def decode(raw: bytes) -> pa.Table:
    import pyarrow.parquet as pq  # only a resume or a retry reads files back: see the top

    return pq.read_table(pa.BufferReader(raw))


def encode_input(ids: pa.Array, meta: Mapping[str, Any]) -> pa.Buffer:
    """The pending input: the discovered IDs, with how they were obtained in the schema metadata."""
    table = pa.table({"ID": ids.cast(pa.int64())}).replace_schema_metadata(
        {INPUT_META_KEY: dumps(dict(meta))}
    )
    import pyarrow.parquet as pq  # an incremental run's input only: see the top

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
