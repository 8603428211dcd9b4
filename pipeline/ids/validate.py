"""Strict validation of one input token as a Bitrix24 deal ID. Pure: bytes in, int or reason out.

The portal casts the `id` parameter with PHP `(int)` (crm module `restservice.php`,
`CCrmRestHelper::resolveEntityID`), so `12abc` and `12.7` would silently become deal 12. We
therefore accept only a plain run of ASCII decimal digits whose value is in 1..2^63-1 (deal IDs
are stored as int64), optionally surrounded by ASCII whitespace (which also swallows the `\\r`
of CRLF files). Leading zeros are accepted (`007` is 7): the value is still unambiguous.
Everything else is rejected with a short, stable reason.
"""

from __future__ import annotations

from typing import Final

MAX_ID: Final = 2**63 - 1
#: Longest line we look at. A deal ID needs 19 digits; anything this long is not an ID.
MAX_LINE_BYTES: Final = 1024
#: How much of a bad line is kept for the sidecar (characters, after decoding).
MAX_RAW_CHARS: Final = 100

REASON_NOT_INTEGER: Final = "not a decimal integer"
REASON_ZERO: Final = "zero is not a deal ID"
REASON_NEGATIVE: Final = "negative number"
REASON_TOO_LARGE: Final = "larger than 2^63-1"
REASON_NOT_UTF8: Final = "not valid UTF-8"
REASON_NUL: Final = "contains a NUL byte"
REASON_TOO_LONG: Final = f"line longer than {MAX_LINE_BYTES} bytes"
REASON_EMPTY: Final = "empty value"
REASON_NULL: Final = "null value"
REASON_NOT_INTEGRAL: Final = "not an integer (has a fraction or exponent)"
REASON_MALFORMED_ROW: Final = "malformed CSV row"

REASONS: Final = (
    REASON_NOT_INTEGER,
    REASON_ZERO,
    REASON_NEGATIVE,
    REASON_TOO_LARGE,
    REASON_NOT_UTF8,
    REASON_NUL,
    REASON_TOO_LONG,
    REASON_EMPTY,
    REASON_NULL,
    REASON_NOT_INTEGRAL,
    REASON_MALFORMED_ROW,
)

_MAX_DIGITS: Final = len(str(MAX_ID))  # 19


def is_skippable(token: bytes) -> bool:
    """True for lines a text ID list may contain without meaning anything: blank or `#` comment."""
    s = token.strip()
    return not s or s.startswith(b"#")


def parse_id(token: bytes) -> int | str:
    """Return the deal ID `token` spells, or the reason it is not one.

    The caller decides what is skippable (see `is_skippable`); an empty token here is invalid.
    """
    s = token.strip()
    # Fast path: bytes.isdigit() is ASCII-only, so Unicode digits and signs never get here.
    if len(token) <= MAX_LINE_BYTES and s.isdigit() and len(s) < _MAX_DIGITS:
        value = int(s)
        return value if value else REASON_ZERO
    return _slow_path(token, s)


def _slow_path(token: bytes, s: bytes) -> int | str:
    if len(token) > MAX_LINE_BYTES:
        return REASON_TOO_LONG
    if s.isdigit():
        significant = s.lstrip(b"0")
        if not significant:
            return REASON_ZERO
        if len(significant) > _MAX_DIGITS:
            return REASON_TOO_LARGE
        value = int(significant)
        return value if value <= MAX_ID else REASON_TOO_LARGE
    if b"\x00" in token:
        return REASON_NUL
    try:
        s.decode("utf-8")
    except UnicodeDecodeError:
        return REASON_NOT_UTF8
    if not s:
        return REASON_EMPTY
    if s.startswith(b"-") and s[1:].isdigit():
        return REASON_NEGATIVE
    if _looks_fractional(s):
        return REASON_NOT_INTEGRAL
    return REASON_NOT_INTEGER


def _looks_fractional(s: bytes) -> bool:
    """`12.7`, `1e3`, `1.0E+5`: a number, but not an integer literal we accept."""
    body = s.lstrip(b"+-").lower()
    if b"." not in body and b"e" not in body:
        return False
    mantissa, _, exponent = body.partition(b"e")
    whole, _, fraction = mantissa.partition(b".")
    if not (whole + fraction).isdigit():
        return False
    return not exponent or exponent.lstrip(b"+-").isdigit()


def display_raw(token: bytes) -> str:
    """The bad token as the sidecar shows it: decoded with escapes, without CR, truncated."""
    text = token.rstrip(b"\r")[: MAX_RAW_CHARS * 4].decode("utf-8", errors="backslashreplace")
    text = text.replace("\x00", "\\x00")
    if len(text) > MAX_RAW_CHARS:
        return text[:MAX_RAW_CHARS] + "…"
    if len(token) > MAX_RAW_CHARS * 4:
        return text + "…"
    return text


__all__ = [
    "MAX_ID",
    "MAX_LINE_BYTES",
    "MAX_RAW_CHARS",
    "REASONS",
    "REASON_EMPTY",
    "REASON_MALFORMED_ROW",
    "REASON_NEGATIVE",
    "REASON_NOT_INTEGER",
    "REASON_NOT_INTEGRAL",
    "REASON_NOT_UTF8",
    "REASON_NUL",
    "REASON_NULL",
    "REASON_TOO_LARGE",
    "REASON_TOO_LONG",
    "REASON_ZERO",
    "display_raw",
    "is_skippable",
    "parse_id",
]
