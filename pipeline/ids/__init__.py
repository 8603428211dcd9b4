"""Deal-ID sources: read, validate strictly, deduplicate, and account for every rejected line.

    load_ids("ids.txt")                       text, one ID per line
    load_ids("-", stdin=sys.stdin.buffer)     the same from stdin
    load_ids("deals.csv", column="ID")        a CSV column
    load_ids("deals.parquet", column="ID")    a Parquet column
    load_ids("1-5000,9000", fmt="range")      ranges

The result is an `IdSet`: ascending unique int64 IDs, the `InvalidInput` records for the sidecar,
and `IdCounts`. See `pipeline.ids.sources` for what is an error and what is an invalid line.
"""

from pipeline.ids.idset import IdCounts, IdSet
from pipeline.ids.invalid import InvalidLines
from pipeline.ids.sources import (
    DEFAULT_COLUMN,
    ID_FORMATS,
    IdFormat,
    load_ids,
    parse_ranges,
    read_csv,
    read_parquet,
    read_ranges,
    read_text,
    read_text_file,
)
from pipeline.ids.validate import MAX_ID, parse_id

__all__ = [
    "DEFAULT_COLUMN",
    "ID_FORMATS",
    "MAX_ID",
    "IdCounts",
    "IdFormat",
    "IdSet",
    "InvalidLines",
    "load_ids",
    "parse_id",
    "parse_ranges",
    "read_csv",
    "read_parquet",
    "read_ranges",
    "read_text",
    "read_text_file",
]
