"""Column converters: one whole column of wire values in, one typed Arrow array out.

Every converter has the same contract (`Converter`): it takes the values of one column for a
chunk of deals (None where the key was absent) and returns an Arrow array of exactly that length
plus one `Failure` for every value it could not convert. A failed value is null in the array;
nothing raises for bad data.

How the work is split, for speed:

* The hot path is vectorised. Wire values are strings in the get answers (REST docs
  `api-reference/crm/deals/crm-deal-get.md` example), so the column becomes one Arrow string
  array and is parsed by a strict pyarrow cast.
* A strict cast fails the whole array on one bad value, so a failing array is retried in blocks;
  only the values of a failing block, plus the values that are not strings at all (JSON numbers,
  booleans, objects), go through the per-value Python converter (`scalar`). That converter
  accepts everything the vectorised path accepts (and gives the same result) and explains
  precisely why a value is rejected.

On the fast path (see `takes_fast_path`) pyarrow itself has already read the string values out
of the payload dicts, and the converters start from that string array.

Empties: `None`, an absent key and `""` are null for every non-text type (the deal get method sends
`""` for an empty user field, crm module `restservice.php`, `CCrmDealRestProxy::innerGet`; list
methods send null, REST docs `crm-lead-list.md`). For reference IDs `"0"` is null too (inferred
from the `crm-lead-list.md` example `"COMPANY_ID": "0"`: unset references may arrive as `"0"`).
A *multiple* field with no values is an empty list whichever of its three empty wire forms
arrives (see `list_of`); null stays null there.

Credentials: file URLs carry the caller's access token as `auth=` (crm module `restservice.php`
`externalizeFile`), so every file URL, and every URL inside a value stored as JSON text, loses its
`auth` query parameter before it is stored (`strip_auth`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import accumulate, chain
from typing import Any, NamedTuple, TypeAlias
from urllib.parse import unquote

import orjson
import pyarrow as pa
import pyarrow.compute as pc

# Money amounts. The server stores OPPORTUNITY as a fixed 2-decimal number; money user fields are
# free strings. 18 integer digits and 6 decimals hold every ISO 4217 minor unit with room to
# spare; a value with more decimals is a record error, never rounded.
DECIMAL_PRECISION = 24
DECIMAL_SCALE = 6
DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TIMESTAMP_TYPE = pa.timestamp("us", "UTC")
MONEY_TYPE = pa.struct([("amount", DECIMAL_TYPE), ("currency", pa.string())])
FILE_TYPE = pa.struct([("id", pa.int64()), ("showUrl", pa.string()), ("downloadUrl", pa.string())])
#: One communication entry of a `crm_multifield` (REST docs `api-reference/crm/data-types.md`;
#: `crm-lead-get.md` example: `{"ID": "11658", "VALUE_TYPE": "OTHER", "VALUE": "+5454777777",
#: "TYPE_ID": "PHONE"}`).
MULTIFIELD_TYPE = pa.struct(
    [
        ("ID", pa.int64()),
        ("VALUE_TYPE", pa.string()),
        ("VALUE", pa.string()),
        ("TYPE_ID", pa.string()),
    ]
)
_MULTIFIELD_TEXTS = ("VALUE_TYPE", "VALUE", "TYPE_ID")


class Failure(NamedTuple):
    """A value that could not be converted: its row index, the raw wire value, and why."""

    row: int
    raw: Any
    reason: str


Converted = tuple[pa.Array, list[Failure]]
# A column arrives either as Python wire values or, on the fast path, as an Arrow string array.
ColumnValues: TypeAlias = "Sequence[Any] | pa.Array"
Converter = Callable[[ColumnValues], Converted]


class Staging(NamedTuple):
    """How a structured column can be held between answer and chunk: `stage` takes its wire
    values into Arrow form `wire_type` as sent (None: some value needs the per-value converter),
    `finish` types that form; `finish(stage(values))` equals the column's converter."""

    wire_type: pa.DataType
    stage: Callable[[Sequence[Any]], pa.Array | None]
    finish: Converter


class ConversionError(ValueError):
    """Raised by a per-value converter; the message is the record error's reason."""


# Retry granularity when a strict vectorised cast rejects an array: only the failing blocks
# fall back to per-value Python.
_BLOCK = 256
_EMPTY = pa.array([""], pa.string())
_EMPTY_OR_ZERO = pa.array(["", "0"], pa.string())
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT_RE = re.compile(r"[+-]?[0-9]+")
_NEGATIVE_RE = "^-[0-9]+$"
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TRUE = frozenset({"y", "1", "true"})
_FALSE = frozenset({"n", "0", "false"})
_TRUE_WIRE = pa.array(["Y", "y", "1", "true", "True", "TRUE"], pa.string())
_FALSE_WIRE = pa.array(["N", "n", "0", "false", "False", "FALSE"], pa.string())
_DECIMAL_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_DECIMAL_LIMIT = Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)
_US_PER_DAY = 86_400_000_000
# Shifting by a whole number of days before the integer division makes it a floor division for
# instants before 1970 too (Arrow's integer divide truncates towards zero).
_DAY_SHIFT = 4_000_000
# Typed scalars for the compute calls: pyarrow infers the type of a bare Python number by
# trying to import optional modules (dateutil) on every call, which costs ~80 us each time.
_ZERO = pa.scalar(0, pa.int64())
_TEN = pa.scalar(10, pa.int32())
_DAY_US = pa.scalar(_US_PER_DAY, pa.int64())
_SHIFT_DAYS = pa.scalar(_DAY_SHIFT, pa.int64())
_HALF_DAY_SHIFTED = pa.scalar(_US_PER_DAY // 2 + _DAY_SHIFT * _US_PER_DAY, pa.int64())


_AUTH = "auth"
# Server-made URLs are relative ("/bitrix/...") or absolute; user text inside a structured value
# that does not look like a URL is left alone.
_URL_PREFIXES = ("/", "http://", "https://")


def strip_auth(url: str) -> str:
    """`url` without its `auth` query parameter; everything else, order included, is kept.

    The portal puts the caller's access token there (crm `restservice.php` `externalizeFile`,
    `tryExternalizeDiskFileField`), so a stored URL would hold a live credential that changes
    every run. A download needs the reader's own authorisation anyway.
    """
    before, marker, after = url.partition("?auth=")
    if marker and "?" not in before:
        # The portal's own form puts auth first (`?auth=<token>&ownerId=...`): one cut, no
        # split. It is a hot path: every downloadUrl of every deal, webhook calls included;
        # partition makes fewer string copies than find and slices (~40% faster).
        rest = after.partition("&")[2]
        if rest and "#" not in url and _AUTH not in rest:
            return before + "?" + rest
    start = url.find("?") + 1
    if not start:
        return url
    head, rest = url[: start - 1], url[start:]
    query, hash_mark, fragment = rest.partition("#")
    pieces = query.split("&")
    kept = [p for p in pieces if not _is_auth(p)]
    if len(kept) == len(pieces):
        return url
    kept_query = "&".join(kept)
    return head + ("?" + kept_query if kept_query else "") + hash_mark + fragment


def _is_auth(piece: str) -> bool:
    """Whether one `name=value` piece of a query is the `auth` parameter."""
    if piece.startswith(_AUTH):
        return len(piece) == len(_AUTH) or piece[len(_AUTH)] == "="
    # PHP decodes parameter names, so `aut%68=` is `auth` to the server as well.
    return "%" in piece and unquote(piece.partition("=")[0]) == _AUTH


def scrub_urls(value: Any) -> Any:
    """`value` with `strip_auth` applied to every URL-looking string inside it."""
    if isinstance(value, str):
        return strip_auth(value) if value.startswith(_URL_PREFIXES) and _AUTH in value else value
    if isinstance(value, dict):
        return {key: scrub_urls(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_urls(item) for item in value]
    return value


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits (and a few other oddities); the stdlib does not.
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def json_text(value: Any) -> str:
    """`value` as JSON text (strings pass through); never raises.

    Structured values are server-made (file and disk objects among them), so URLs inside them
    lose their `auth` parameter: this text ends up in data columns, `_extra` and the sidecar.
    """
    if isinstance(value, str):
        return value
    text = _dumps(value)
    if "auth" in text:
        text = _dumps(scrub_urls(value))
    return text


def _fmt(value: Any) -> str:
    text: str = scrub_urls(json_text(value))
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- per-value (fallback) converters


def scalar_int(raw: Any, *, zero_is_null: bool = False) -> int | None:
    """A 64-bit integer from a wire value (numeric string or JSON number)."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise ConversionError(f"expected an integer, got boolean {_fmt(raw)}")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float):
        if not (math.isfinite(raw) and raw.is_integer()):
            raise ConversionError(f"expected an integer, got {_fmt(raw)}")
        value = int(raw)
    elif isinstance(raw, str) and _INT_RE.fullmatch(raw):
        value = int(raw)
    else:
        raise ConversionError(f"expected an integer, got {_fmt(raw)}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ConversionError(f"integer out of 64-bit range: {_fmt(raw)}")
    if zero_is_null and value == 0:
        return None
    return value


def scalar_decimal(raw: Any) -> Decimal | None:
    """An exact decimal amount; more decimals than the column scale is an error, not rounding."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise ConversionError(f"expected a decimal number, got boolean {_fmt(raw)}")
    if isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            raise ConversionError(f"expected a finite decimal number, got {_fmt(raw)}")
        value = Decimal(repr(raw))
    elif isinstance(raw, str) and _NUMBER_RE.fullmatch(raw):
        try:
            value = Decimal(raw)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
            raise ConversionError(f"expected a decimal number, got {_fmt(raw)}") from None
    else:
        raise ConversionError(f"expected a decimal number, got {_fmt(raw)}")
    if abs(value) >= _DECIMAL_LIMIT:
        raise ConversionError(
            f"decimal out of range (max {DECIMAL_PRECISION - DECIMAL_SCALE} integer digits): "
            f"{_fmt(raw)}"
        )
    too_fine = ConversionError(f"more than {DECIMAL_SCALE} decimal places: {_fmt(raw)}")
    try:
        quantised = value.quantize(_DECIMAL_QUANTUM)
    except InvalidOperation:
        raise too_fine from None
    if quantised != value:
        raise too_fine
    return quantised


def scalar_float(raw: Any) -> float | None:
    """A finite float64 from a numeric string or JSON number."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise ConversionError(f"expected a number, got boolean {_fmt(raw)}")
    if isinstance(raw, int | float) or (isinstance(raw, str) and _NUMBER_RE.fullmatch(raw)):
        value = float(raw)
    else:
        raise ConversionError(f"expected a number, got {_fmt(raw)}")
    if not math.isfinite(value):
        raise ConversionError(f"expected a finite number, got {_fmt(raw)}")
    return value


def scalar_bool(raw: Any) -> bool | None:
    """Y/N, 1/0, true/false (any case), JSON booleans and the JSON numbers 1/0."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        folded = raw.lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
    raise ConversionError(f"expected Y/N, 1/0 or true/false, got {_fmt(raw)}")


def _parse_instant(raw: Any, what: str) -> datetime:
    if not isinstance(raw, str):
        raise ConversionError(f"expected an ISO 8601 {what} string, got {_fmt(raw)}")
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise ConversionError(f"not an ISO 8601 {what}: {_fmt(raw)}") from None


def scalar_datetime(raw: Any) -> datetime | None:
    """An aware instant, in UTC. A value without a UTC offset is an error: its zone is unknown."""
    if raw is None or raw == "":
        return None
    value = _parse_instant(raw, "datetime")
    if value.tzinfo is None:
        raise ConversionError(f"datetime without a UTC offset: {_fmt(raw)}")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ConversionError(f"datetime out of range: {_fmt(raw)}") from None


def scalar_date(raw: Any) -> date | None:
    """The calendar date of a `date` field (rest module `rest_util.php`, `CRestUtil::ConvertDate`).

    The portal sends local midnight plus the server's *current* UTC offset, so the instant lies
    within an hour or so of 00:00 UTC of the intended day, on either side (negative offsets show
    the previous day; DST moves it by an hour). Rounding the UTC instant to the nearest UTC
    midnight recovers the day. A plain `YYYY-MM-DD` is taken as is.
    """
    if raw is None or raw == "":
        return None
    if isinstance(raw, str) and len(raw) == 10 and _PLAIN_DATE_RE.fullmatch(raw):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise ConversionError(f"not a calendar date: {_fmt(raw)}") from None
    value = _parse_instant(raw, "date")
    try:
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return (value + timedelta(hours=12)).date()
    except (OverflowError, ValueError):
        raise ConversionError(f"date out of range: {_fmt(raw)}") from None


def scalar_money(raw: Any) -> dict[str, Any] | None:
    """`"<amount>|<CURRENCY>"` into amount and currency; either part may be empty.

    That is the write format (REST docs `api-reference/crm/currency/index.md`); that
    the deal get method returns the same string is inferred, not documented.
    """
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        amount, _, currency = raw.partition("|")
        try:
            value = scalar_decimal(amount)
        except ConversionError as exc:
            raise ConversionError(f"bad money amount: {exc}") from None
        return {"amount": value, "currency": currency or None}
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return {"amount": scalar_decimal(raw), "currency": None}
    raise ConversionError(f'expected "<amount>|<currency>", got {_fmt(raw)}')


def scalar_file(raw: Any) -> dict[str, Any] | None:
    """A file object `{"id", "showUrl", "downloadUrl"}`; missing parts are null."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, dict):
        raise ConversionError(f"expected a file object, got {_fmt(raw)}")
    try:
        file_id = scalar_int(raw.get("id"))
    except ConversionError as exc:
        raise ConversionError(f"bad file id: {exc}") from None
    show, download = raw.get("showUrl"), raw.get("downloadUrl")
    return {
        "id": file_id,
        "showUrl": None if show is None else strip_auth(json_text(show)),
        "downloadUrl": None if download is None else strip_auth(json_text(download)),
    }


# ------------------------------------------------------------------------- vectorised helpers

_NULL_STRING = pa.scalar(None, pa.string())
_NULL_INT = pa.scalar(None, pa.int64())
_NULL_FLOAT = pa.scalar(None, pa.float64())
_NULL_BOOL = pa.scalar(None, pa.bool_())
_NULL_TIMESTAMP = pa.scalar(None, TIMESTAMP_TYPE)


# A boolean array counts its true and false values in ~0.1 us; a pc.any/pc.all call takes
# ~3 us, which adds up over dozens of columns in a part of 50 records. Nulls count as neither,
# as pc.any and pc.all skip them.
def _any(mask: pa.Array) -> bool:
    return bool(mask.true_count)


def _all(mask: pa.Array) -> bool:
    return not mask.false_count


# A vectorised step takes a string array (empties already null) and returns the converted array
# (null where it could not decide) and a mask of rows the per-value converter must look at
# (None: no such rows). It may raise pa.ArrowInvalid; the caller then retries block by block.
Vector = Callable[[pa.Array], tuple[pa.Array, pa.Array | None]]
Scalar = Callable[[Any], Any]


def _strings(values: Sequence[Any]) -> tuple[pa.Array, list[int]]:
    """The column as strings; non-string values are nulled and their indexes returned."""
    try:
        return pa.array(values, type=pa.string()), []
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    odd: list[int] = []
    strings: list[str | None] = []
    for i, value in enumerate(values):
        if value is None or isinstance(value, str):
            strings.append(value)
        else:
            strings.append(None)
            odd.append(i)
    return pa.array(strings, type=pa.string()), odd


def _null_where_in(strings: pa.Array, markers: pa.Array) -> pa.Array:
    hit = pc.is_in(strings, value_set=markers)
    if not _any(hit):
        return strings
    return pc.if_else(hit, _NULL_STRING, strings)


def _run_vector(
    strings: pa.Array, vector: Vector, arrow_type: pa.DataType
) -> tuple[pa.Array, pa.Array | None]:
    try:
        return vector(strings)
    except pa.ArrowInvalid:
        pass
    parts: list[pa.Array] = []
    masks: list[pa.Array] = []
    for start in range(0, len(strings), _BLOCK):
        block = strings.slice(start, _BLOCK)
        try:
            result, recheck = vector(block)
        except pa.ArrowInvalid:
            result, recheck = pa.nulls(len(block), arrow_type), block.is_valid()
        parts.append(result)
        masks.append(pa.array([False] * len(block), pa.bool_()) if recheck is None else recheck)
    return pa.concat_arrays(parts), pa.concat_arrays(masks)


def _raw(values: ColumnValues, i: int) -> Any:
    return values[i].as_py() if isinstance(values, pa.Array) else values[i]


def _patch(
    result: pa.Array,
    values: ColumnValues,
    indexes: list[int],
    scalar: Scalar,
    arrow_type: pa.DataType,
) -> Converted:
    """Run the per-value converter on `indexes`; patch its successes into `result`."""
    failures: list[Failure] = []
    fixes: dict[int, Any] = {}
    for i in indexes:
        raw = _raw(values, i)
        try:
            value = scalar(raw)
        except ConversionError as exc:
            failures.append(Failure(i, raw, str(exc)))
            continue
        if value is not None:
            fixes[i] = value
    if fixes:
        patch: list[Any] = [None] * len(result)
        for i, value in fixes.items():
            patch[i] = value
        patched = pa.array(patch, type=arrow_type)
        # Every fix is a value, never None: the patch is valid exactly where a fix goes.
        result = pc.if_else(patched.is_valid(), patched, result)
    return result, failures


def _mask_indexes(mask: pa.Array | None) -> list[int]:
    if mask is None:
        return []
    mask = pc.fill_null(mask, False)
    if not _any(mask):
        return []
    return pc.indices_nonzero(mask).to_pylist()  # type: ignore[no-any-return]


def string_column(
    vector: Vector, scalar: Scalar, arrow_type: pa.DataType, empties: pa.Array = _EMPTY
) -> Converter:
    """A converter for a type whose wire form is a string: vectorised, then per-value repairs."""

    def convert(values: ColumnValues) -> Converted:
        strings, odd = (values, []) if isinstance(values, pa.Array) else _strings(values)
        strings = _null_where_in(strings, empties)
        result, recheck = _run_vector(strings, vector, arrow_type)
        indexes = sorted(set(odd).union(_mask_indexes(recheck)))
        if not indexes:
            return result, []
        return _patch(result, values, indexes, scalar, arrow_type)

    return convert


def _cast(arrow_type: pa.DataType) -> Vector:
    def vector(strings: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        return pc.cast(strings, arrow_type), None

    return vector


def _int_vector(strings: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    # Only plain ASCII digit strings, optionally negative, take the fast cast: the cast would
    # also accept hex ("0x1F"); "+" signs, overflow and garbage go to the per-value converter.
    plain = pc.ascii_is_decimal(strings)
    if _all(plain):
        return pc.cast(strings, pa.int64()), None
    plain = pc.or_(plain, pc.match_substring_regex(strings, _NEGATIVE_RE))
    if _all(plain):
        return pc.cast(strings, pa.int64()), None
    candidates = pc.if_else(plain, strings, _NULL_STRING)
    return pc.cast(candidates, pa.int64()), pc.invert(plain)


def _reference_vector(strings: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    # "0", "00", "+0" all mean "not set", exactly as in scalar_int(zero_is_null=True).
    result, recheck = _int_vector(strings)
    zero = pc.equal(result, _ZERO)
    if _any(zero):
        result = pc.if_else(zero, _NULL_INT, result)
    return result, recheck


def _float_vector(strings: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    result = pc.cast(strings, pa.float64())
    finite = pc.is_finite(result)
    if _all(finite):
        return result, None
    # nan/inf spellings parse but are rejected (with a reason) by the per-value converter.
    return pc.if_else(finite, result, _NULL_FLOAT), pc.invert(finite)


def _bool_vector(strings: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    is_true = pc.is_in(strings, value_set=_TRUE_WIRE)
    is_false = pc.is_in(strings, value_set=_FALSE_WIRE)
    known = pc.or_(is_true, is_false)
    result = pc.if_else(known, is_true, _NULL_BOOL)
    if _all(known):
        return result, None
    # Nulls are not in either set but need no second look.
    return result, pc.and_(pc.invert(known), strings.is_valid())


# Arrow parses years 0000-9999 in any offset; Python (and most readers) handle 0001-9999 in UTC.
_MIN_US = pa.scalar(-62_135_596_800_000_000, pa.int64())  # 0001-01-01T00:00:00Z
_MAX_US = pa.scalar(253_402_300_799_999_999, pa.int64())  # 9999-12-31T23:59:59.999999Z
_MIN_DAY = pa.scalar(-719_162, pa.int64())  # 0001-01-01
_MAX_DAY = pa.scalar(2_932_896, pa.int64())  # 9999-12-31


def _outside(values: pa.Array, low: pa.Scalar, high: pa.Scalar) -> pa.Array | None:
    outside = pc.or_(pc.less(values, low), pc.greater(values, high))
    return outside if _any(outside) else None


def _datetime_vector(strings: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    result = pc.cast(strings, TIMESTAMP_TYPE)
    outside = _outside(pc.cast(result, pa.int64()), _MIN_US, _MAX_US)
    if outside is None:
        return result, None
    return pc.if_else(outside, _NULL_TIMESTAMP, result), outside


def _date_vector(strings: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    plain = pc.equal(pc.binary_length(strings), _TEN)
    if _any(plain):
        dates = pc.cast(pc.if_else(plain, strings, _NULL_STRING), pa.date32())
        strings = pc.if_else(plain, _NULL_STRING, strings)
    else:
        dates = None
    micros = pc.cast(pc.cast(strings, TIMESTAMP_TYPE), pa.int64())
    # Nearest UTC midnight: floor((t + 12 h) / 1 day), see scalar_date for why.
    shifted = pc.add(micros, _HALF_DAY_SHIFTED)
    days = pc.subtract(pc.divide(shifted, _DAY_US), _SHIFT_DAYS)
    if dates is not None:
        days = pc.coalesce(pc.cast(pc.cast(dates, pa.int32()), pa.int64()), days)
    outside = _outside(days, _MIN_DAY, _MAX_DAY)
    if outside is not None:
        days = pc.if_else(outside, _NULL_INT, days)
    return pc.cast(pc.cast(days, pa.int32()), pa.date32()), outside


_MONEY_RE = r"(?s)^(?P<amount>[^|]*)(?:\|(?P<currency>.*))?$"


def _money_vector(strings: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    parts = pc.extract_regex(strings, pattern=_MONEY_RE)
    amount_text, currency_text = parts.flatten()
    amount_text = _null_where_in(amount_text, _EMPTY)
    currency = _null_where_in(currency_text, _EMPTY)
    amount = pc.cast(amount_text, DECIMAL_TYPE)
    struct = pa.StructArray.from_arrays(
        [amount, currency], fields=list(MONEY_TYPE), mask=pc.invert(strings.is_valid())
    )
    return struct, None


# --------------------------------------------------------------------------- the converters

convert_int: Converter = string_column(_int_vector, scalar_int, pa.int64())
convert_reference: Converter = string_column(
    _reference_vector, lambda raw: scalar_int(raw, zero_is_null=True), pa.int64(), _EMPTY_OR_ZERO
)
convert_decimal: Converter = string_column(_cast(DECIMAL_TYPE), scalar_decimal, DECIMAL_TYPE)
convert_float: Converter = string_column(_float_vector, scalar_float, pa.float64())
convert_bool: Converter = string_column(_bool_vector, scalar_bool, pa.bool_())
convert_datetime: Converter = string_column(_datetime_vector, scalar_datetime, TIMESTAMP_TYPE)
convert_date: Converter = string_column(_date_vector, scalar_date, pa.date32())
convert_money: Converter = string_column(_money_vector, scalar_money, MONEY_TYPE)


_BOOL_OR_NONE = frozenset({bool, type(None)})
_STR_OR_NONE = frozenset({str, type(None)})
_FLAG_WIRE = frozenset({bool, str, type(None)})


def convert_flag(values: ColumnValues) -> Converted:
    """`convert_bool` for a boolean user field, which arrives in two forms: `"1"`/`"0"` from the
    get method and JSON `true`/`false` from list methods (see `pipeline.fetch.listing`). A
    column of JSON booleans (and nulls) is read as it is; anything else takes convert_bool,
    which gives JSON booleans the same values."""
    if not isinstance(values, pa.Array) and set(map(type, values)) <= _BOOL_OR_NONE:
        return pa.array(values, type=pa.bool_()), []
    return convert_bool(values)


def _stage_flags(values: Sequence[Any]) -> pa.Array | None:
    """A boolean user field's values as wire strings, JSON booleans as `"true"`/`"false"`
    (which convert_bool reads as it reads the booleans); None for any other kind of value."""
    if isinstance(values, pa.Array):
        return None
    kinds = set(map(type, values))
    if kinds <= _STR_OR_NONE:
        return pa.array(values, type=pa.string())
    if kinds <= _BOOL_OR_NONE:
        return pc.cast(pa.array(values, type=pa.bool_()), pa.string())
    if kinds <= _FLAG_WIRE:  # a part with rows of both methods
        texts = [("true" if v else "false") if type(v) is bool else v for v in values]
        return pa.array(texts, type=pa.string())
    return None


#: A boolean user field held as wire strings until its chunk is typed: one compute pass per
#: run of parts instead of several per part.
FLAG_STAGING = Staging(pa.string(), _stage_flags, convert_bool)


def convert_text(values: ColumnValues) -> Converted:
    """Text is kept verbatim (`""` stays `""`); objects, arrays and numbers become JSON text."""
    if isinstance(values, pa.Array):
        return values, []
    try:
        return pa.array(values, type=pa.string()), []
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    texts = [None if value is None else json_text(value) for value in values]
    return pa.array(texts, type=pa.string()), []


def convert_unknown(values: ColumnValues) -> Converted:
    """A type we do not know, kept as text; URLs in it lose `auth`, since server-made values of
    other modules carry the token too (crm `restservice.php` `tryExternalizeDiskFileField`)."""
    array, failures = convert_text(values)
    hit = pc.fill_null(pc.match_substring(array, _AUTH), False)
    if not _any(hit):
        return array, failures
    texts = [None if text is None else scrub_urls(text) for text in array.to_pylist()]
    return pa.array(texts, type=pa.string()), failures


def _file_url(url: Any) -> str:
    text = url if type(url) is str else json_text(url)
    return strip_auth(text) if _AUTH in text else text


def _plain_files(values: ColumnValues) -> pa.Array | None:
    """The column when every value is a plain file object (int id, string URLs) or empty, URLs
    without `auth`; None when some value needs `convert_file`'s checks."""
    rows: list[tuple[int | None, str | None, str | None] | None] = []
    for value in values:
        if type(value) is dict:
            file_id = value.get("id")
            show = value.get("showUrl")
            download = value.get("downloadUrl")
            if not (file_id is None or type(file_id) is int):
                return None
            if show is not None:
                if type(show) is not str:
                    return None
                if _AUTH in show:
                    show = strip_auth(show)
            if download is not None:
                if type(download) is not str:
                    return None
                if _AUTH in download:
                    download = strip_auth(download)
            rows.append((file_id, show, download))
        elif value is None or value == "":
            rows.append(None)
        else:
            return None
    try:
        # Tuples: pyarrow fills a struct from them by position, with no key lookups.
        return pa.array(rows, type=FILE_TYPE)
    except (pa.ArrowException, OverflowError):
        return None  # an id beyond 64 bits


def convert_file(values: ColumnValues) -> Converted:
    """File objects are few per deal and already structured: one pass in Python, three columns.
    Plain ones (`_plain_files`) are the common case and cost a fraction of the checked pass."""
    plain = _plain_files(values)
    if plain is not None:
        return plain, []
    return _checked_files(values)


def _checked_files(values: ColumnValues) -> Converted:
    """`convert_file` with every check on every value."""
    ids: list[int | None] = []
    shows: list[str | None] = []
    downloads: list[str | None] = []
    missing: list[bool] = []
    failures: list[Failure] = []
    for i, value in enumerate(values):
        if type(value) is dict:
            file_id = value.get("id")
            show = value.get("showUrl")
            download = value.get("downloadUrl")
            if type(file_id) is not int or not _INT64_MIN <= file_id <= _INT64_MAX:
                try:
                    file_id = scalar_int(file_id)
                except ConversionError as exc:
                    failures.append(Failure(i, value, f"bad file id: {exc}"))
                    file_id = show = download = None
            if failures and failures[-1].row == i:
                missing.append(True)
            else:
                missing.append(False)
                if show is not None:
                    show = _file_url(show)
                if download is not None:
                    download = _file_url(download)
            ids.append(file_id)
            shows.append(show)
            downloads.append(download)
            continue
        if not (value is None or value == ""):
            failures.append(Failure(i, value, f"expected a file object, got {_fmt(value)}"))
        ids.append(None)
        shows.append(None)
        downloads.append(None)
        missing.append(True)
    array = pa.StructArray.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(shows, pa.string()), pa.array(downloads, pa.string())],
        fields=list(FILE_TYPE),
        mask=pa.array(missing, pa.bool_()),
    )
    return array, failures


def _multifield_entry(value: Any) -> dict[str, Any] | None:
    """One multifield entry as a struct row; ConversionError for anything else."""
    if value is None or value == "":
        return None
    if type(value) is not dict:
        raise ConversionError(f"expected a multifield entry object, got {_fmt(value)}")
    try:
        entry_id = scalar_int(value.get("ID"))
    except ConversionError as exc:
        raise ConversionError(f"bad multifield ID: {exc}") from None
    row: dict[str, Any] = {"ID": entry_id}
    for key in _MULTIFIELD_TEXTS:
        text = value.get(key)
        row[key] = None if text is None else (text if type(text) is str else json_text(text))
    return row


def convert_multifield(values: ColumnValues) -> Converted:
    """Multifield entries are few per record and already structured: one pass in Python."""
    rows: list[dict[str, Any] | None] = []
    failures: list[Failure] = []
    for i, value in enumerate(values):
        try:
            rows.append(_multifield_entry(value))
        except ConversionError as exc:
            failures.append(Failure(i, value, str(exc)))
            rows.append(None)
    return pa.array(rows, type=MULTIFIELD_TYPE), failures


def takes_fast_path(arrow_type: pa.DataType) -> bool:
    """Whether pyarrow may read this column's wire values straight from the payload dicts.

    Only for columns whose wire values are plain strings: pyarrow converts exactly str (and
    bytes) to `string` and refuses everything else. It must not be used for lists or file
    objects: it reads a string as a list of characters ("91" -> ["9", "1"]) and a list as a
    struct, so those columns always go through the Python converters.
    """
    return not (pa.types.is_list(arrow_type) or arrow_type in (FILE_TYPE, MULTIFIELD_TYPE))


def list_type(element_type: pa.DataType) -> pa.DataType:
    """The Arrow list type of an `isMultiple` field. The item is named "element", as Parquet's
    compliant nested layout names it, so a table read back has exactly the schema written."""
    return pa.list_(pa.field("element", element_type))


_WIRE_LIST = pa.list_(pa.field("element", pa.string()))
_NO_ITEMS: list[Any] = []
_LIST_OR_NONE = frozenset({list, type(None)})


def _stage_list(values: Sequence[Any]) -> pa.Array | None:
    """A multiple field's values as lists of wire strings (see `list_of` for the forms); None
    when some element is not a string or null."""
    if isinstance(values, pa.Array):
        return None
    # Lists and nulls only (the common case): pyarrow reads them as they are. A bare string must
    # not get there: pyarrow would read it as a list of characters.
    if set(map(type, values)) <= _LIST_OR_NONE:
        try:
            return pa.array(values, type=_WIRE_LIST)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return None
    clean: list[Any] = []
    for value in values:
        kind = type(value)
        if kind is list or value is None:
            clean.append(value)
        elif kind is dict:
            clean.append(list(value.values()))
        elif value is False or value == "":
            clean.append(_NO_ITEMS)
        elif kind is str:
            clean.append([value])
        else:
            return None
    try:
        return pa.array(clean, type=_WIRE_LIST)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None


def _flat_lists(values: ColumnValues) -> tuple[pa.Array, list[Any], pa.Array | None] | None:
    """The offsets, elements and null mask (None: no nulls) of a column of JSON arrays and nulls
    only, flattened by C loops (~4x cheaper than one Python step per value: a column of file
    lists); None for any other column."""
    if isinstance(values, pa.Array):
        return None
    kinds = set(map(type, values))
    if not kinds <= _LIST_OR_NONE:
        return None
    missing = None
    if type(None) in kinds:
        missing = pa.array([value is None for value in values], pa.bool_())
        values = [_NO_ITEMS if value is None else value for value in values]
    offsets = pa.array([0, *accumulate(map(len, values))], pa.int32())
    return offsets, list(chain.from_iterable(values)), missing


def list_of(element: Converter, element_type: pa.DataType) -> Converter:
    """A converter for an `isMultiple` field: flatten, convert the elements as one column, refold.

    A JSON array is the documented form (REST docs `api-reference/crm/data-types.md`,
    `isMultiple`: "values in the field are passed as an array"). A JSON object is taken as a PHP
    array with non-sequential keys (its values, in order); a bare value as a one-element list. A
    bad element is null inside its list and yields one failure that names its position.

    Empty: the portal sends a multiple field with no values as `false` (a NULL column that main's
    `CUserTypeManager::GetUserFields` unserialises to false), `""` (no UF row; also every empty
    date/datetime, `CRestUtil::ConvertDate`) or `[]` (a stored empty array; every empty file,
    crm `tryExternalizeFileField`). All three are the same empty list, never an error. Null and an
    absent key stay a null list: the portal did not say anything about the field.
    """
    return _list_converters(element, element_type).convert


def list_staging(element: Converter, element_type: pa.DataType) -> Staging | None:
    """The `Staging` of a multiple field whose elements are wire strings (None for files and
    multifields: their elements are objects)."""
    if not takes_fast_path(element_type):
        return None
    return Staging(_WIRE_LIST, _stage_list, _list_converters(element, element_type).finish)


class ListConverters(NamedTuple):
    """`convert`: a multiple field's converter; `finish`: its staged form's (`Staging.finish`);
    `checked`: the per-value pass `convert` takes when staging refuses the values."""

    convert: Converter
    finish: Converter
    checked: Converter


def _list_converters(element: Converter, element_type: pa.DataType) -> ListConverters:
    arrow_type = list_type(element_type)
    wire_strings = takes_fast_path(element_type)

    def convert(values: ColumnValues) -> Converted:
        if wire_strings:
            staged = _stage_list(values)
            if staged is not None:
                return finish(staged)
        return checked(values)

    def checked(values: ColumnValues) -> Converted:
        lists = _flat_lists(values)
        if lists is not None:
            return _refold(*lists)
        flat: list[Any] = []
        offsets = [0]
        missing: list[bool] = []
        for value in values:
            if value is None:
                missing.append(True)
            else:
                missing.append(False)
                if isinstance(value, list):
                    flat.extend(value)
                elif isinstance(value, dict):
                    flat.extend(value.values())
                elif not (value is False or value == ""):
                    flat.append(value)
            offsets.append(len(flat))
        return _refold(pa.array(offsets, pa.int32()), flat, pa.array(missing, pa.bool_()))

    def finish(staged: ColumnValues) -> Converted:
        """Type `_stage_list`'s lists of wire strings."""
        assert isinstance(staged, pa.ListArray)
        offsets = staged.offsets
        first, last = offsets[0].as_py(), offsets[-1].as_py()
        if first:
            offsets = pc.subtract(offsets, pa.scalar(first, pa.int32()))
        elements = staged.values.slice(first, last - first)
        return _refold(offsets, elements, staged.is_null())

    def _refold(offsets_array: pa.Array, flat: ColumnValues, missing: pa.Array | None) -> Converted:
        elements, element_failures = element(flat)
        result = pa.ListArray.from_arrays(offsets_array, elements, type=arrow_type, mask=missing)
        failures: list[Failure] = []
        if element_failures:
            offsets = offsets_array.to_pylist()
            row = 0
            for failure in element_failures:
                while offsets[row + 1] <= failure.row:
                    row += 1
                position = failure.row - offsets[row]
                failures.append(Failure(row, failure.raw, f"item {position}: {failure.reason}"))
        return result, failures

    return ListConverters(convert, finish, checked)


__all__ = [
    "DECIMAL_TYPE",
    "FILE_TYPE",
    "FLAG_STAGING",
    "MONEY_TYPE",
    "MULTIFIELD_TYPE",
    "TIMESTAMP_TYPE",
    "ConversionError",
    "Converted",
    "Converter",
    "Failure",
    "Staging",
    "convert_bool",
    "convert_date",
    "convert_datetime",
    "convert_decimal",
    "convert_file",
    "convert_flag",
    "convert_float",
    "convert_int",
    "convert_money",
    "convert_multifield",
    "convert_reference",
    "convert_text",
    "convert_unknown",
    "json_text",
    "list_of",
    "list_staging",
    "list_type",
    "scalar_bool",
    "scalar_date",
    "scalar_datetime",
    "scalar_decimal",
    "scalar_file",
    "scalar_float",
    "scalar_int",
    "scalar_money",
    "scrub_urls",
    "strip_auth",
    "takes_fast_path",
]
