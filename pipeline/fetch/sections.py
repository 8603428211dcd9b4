"""`loads_batch`: a list `batch` answer decoded one `result.result` section at a time. Pure.

Why: orjson decodes a body through a working buffer some 12-15 times the body's size, and that
buffer is what sets a run's glibc heap. glibc's mmap threshold is dynamic: freeing a block that
was mmap()ed raises the threshold to that block's size, so every later buffer of that size
comes from the heap, and the heap top it grew into stays resident (man 3 mallopt,
M_MMAP_THRESHOLD and M_TRIM_THRESHOLD). A 1,000-row list answer (~2.2 MB of JSON) costs ~30 MB
of heap that way; one section of at most 50 rows (~110 KB) ~1.5 MB.

How: the answer is cut into its sections and a skeleton, each decoded on its own, and put back
together. A batch answer opens with its `result.result` object and follows it with
`result_error` (REST docs `settings/how-to-call-rest-api/batch.md`, the response layout), and
PHP's `json_encode` writes no whitespace (php.net `json_encode`, without JSON_PRETTY_PRINT);
the list commands' keys are `l0`, `l1`, ... (`pipeline.fetch.listing.list_key`), each section a
JSON list of rows:

    {"result":{"result":{"l0":[...],"l1":[...]},"result_error":...},"time":{...}}

Why a wrong cut cannot go unnoticed: inside a JSON string every `"` is escaped as `\\"`, so
the bytes `],"l1":[` can only be a list's end followed by a key `l1` opening a list. The first
piece starts at a real token boundary, and each next one where the previous piece ended, so a
piece that decodes on its own is exactly one whole value; after the last one, the `}` at the
cut closes `result.result`. A row with a key that looks like a section's makes its piece
undecodable, and the answer is decoded whole.

The contract: the same value `orjson.loads(body)` returns, and the same exception when that
raises. Anything this does not expect (another layout, whitespace, a section that is not a
list, keys out of order, a `result` key in the tail, a piece that does not decode) decodes the
whole body instead. Each piece is decoded three levels deep, as deep as it sits in the whole
body, so orjson's nesting limit applies to it exactly as to the whole.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

#: The opening of a batch answer up to the first byte inside `result.result`.
_HEAD = b'{"result":{"result":{'
#: Where `result.result` closes: the next key of `result` is `result_error`.
_CLOSE = b'},"result_error":'
#: A section's key and the list it opens; at most nine digits, so the index is a small int.
_KEY = re.compile(rb'"(l(?:0|[1-9][0-9]{0,8}))":\[')
#: What precedes every section's key but the first: the end of the section before it.
_NEXT = b'],"l'
#: How far from its guess `_end_before` looks first, each way.
_FIRST_WIDTH = 4096
#: A key `result` (or one ending in an escaped quote and `result`) after the sections.
_RESULT_KEY = b'"result":'
#: The depth `result.result`'s values sit at in the body: outer object, `result`, itself.
_OPEN, _SHUT = b"[[[", b"]]]"


def loads_batch(body: bytes) -> Any:
    """`orjson.loads(body)`, decoding a list batch answer's sections one by one when its
    layout allows it (see the module docstring); raises what `orjson.loads(body)` raises."""
    try:
        decoded = _by_sections(body)
    except orjson.JSONDecodeError:
        decoded = None
    return orjson.loads(body) if decoded is None else decoded


def _by_sections(body: bytes) -> dict[str, Any] | None:
    """The decoded answer, or None when the body is not laid out as expected. May raise
    orjson.JSONDecodeError when a piece does not decode (the caller then decodes the whole)."""
    if not body.startswith(_HEAD):
        return None
    # From the end: the tail after the sections is a few KB, the sections are the rest.
    close = body.rfind(_CLOSE, len(_HEAD))
    if close < 0 or body.find(_RESULT_KEY, close) >= 0:
        return None
    view = memoryview(body)
    sections: dict[str, Any] = {}
    pos, last, sized = len(_HEAD), -1, 0
    while pos < close:
        key = _KEY.match(body, pos)
        if key is None:
            return None
        name = key[1].decode("ascii")
        index = int(name[1:])
        if index <= last:
            return None
        last = index
        start = key.end() - 1
        size = sized // len(sections) if sections else 0
        end = _end_before(body, b'],"l%d":[' % (index + 1), start, close, size)
        try:
            sections[name] = _decode(view, start, end)
        except orjson.JSONDecodeError:
            if end != close:
                raise
            # Not the last section after all: the next command's key is not `index + 1`
            # (a failed command answers only in result_error).
            end = _end_before_any(body, start, close)
            if end == close:
                raise
            sections[name] = _decode(view, start, end)
        sized += end - start
        pos = end + 1  # onto the next key's quote (or past `close`)
    if not sections:
        return None
    skeleton = orjson.loads(b"".join((view[: len(_HEAD) - 1], b"{}", view[close + 1 :])))
    if not isinstance(skeleton, dict):
        return None
    outer = skeleton.get("result")
    if not isinstance(outer, dict) or outer.get("result") != {}:
        return None
    outer["result"] = sections
    return skeleton


def _decode(view: memoryview, start: int, end: int) -> Any:
    # One more copy of the body in all, in section-sized pieces.
    return orjson.loads(b"".join((_OPEN, view[start:end], _SHUT)))[0][0][0]


def _end_before(body: bytes, needle: bytes, start: int, close: int, size: int) -> int:
    """Where the section opening at `start` ends if the next key is the one in `needle`: at the
    comma before it, else at `close`.

    A search runs at about a byte a step through JSON (most bytes of `needle` are common in
    it), so it starts where the key most likely is: as far on as the sections before were long
    on average (`size`; they differ by the few rows the portal does not return), and widens from
    there both ways, doubling, until it has covered the whole section; the key is mostly found
    within a few KB. A wrong guess only costs time: the key is unique, and the piece must
    still decode."""
    span = len(needle) - 1
    lo = hi = min(start + size, close)
    width = _FIRST_WIDTH if size else close - start
    while lo > start or hi < close:
        # Each window takes the matches that *start* in it: [hi, ahead), then [behind, lo).
        ahead = min(hi + width, close)
        at = body.find(needle, hi, min(ahead + span, close))
        if at >= 0:
            return at + 1
        behind = max(lo - width, start)
        at = body.rfind(needle, behind, min(lo + span, close))
        if at >= 0:
            return at + 1
        lo, hi, width = behind, ahead, width * 2
    return close


def _end_before_any(body: bytes, start: int, close: int) -> int:
    """Where the section opening at `start` ends whatever the next key: at the comma before the
    first section key after it, else at `close`."""
    at = body.find(_NEXT, start, close)
    while at >= 0:
        if _KEY.match(body, at + 2):
            return at + 1
        at = body.find(_NEXT, at + 1, close)
    return close


__all__ = ["loads_batch"]
