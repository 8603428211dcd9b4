"""PHP semantics the portal's wire format inherits: `parse_str`, `(int)` casts, array keys and
`json_encode` of arrays.

Sources: rest module `rest_util.php` (`CRestUtil::ParseBatchQuery`, `getRequestData`: `parse_str`);
crm module `restservice.php` (`CCrmRestHelper::resolveEntityID`: `(int)`); REST docs
`settings/how-to-call-rest-api/batch.md` (`[]` sections); b24pysdk `call_batches.py` `_force_dict`
(lists instead of objects).

PHP has one array type. A key that is a canonical decimal integer string ("123", not "0123" or
"+1") becomes an int key; `json_encode` writes an array as a JSON list when its keys are exactly
0..n-1 in order, and as an object otherwise. That is why batch sections are sometimes lists and
why empty sections are `[]`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

PHP_INT_MAX = 2**63 - 1
PHP_INT_MIN = -(2**63)

_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_LEADING_NUMBER = re.compile(
    r"[ \t\n\r\v\f]*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)

_INT_START = frozenset("-0123456789")

PhpKey = int | str


def php_key(key: PhpKey) -> PhpKey:
    """The key PHP stores for `key`: canonical integer strings become ints."""
    if isinstance(key, str) and key[:1] in _INT_START and _CANONICAL_INT.match(key) and key != "-0":
        value = int(key)
        if PHP_INT_MIN <= value <= PHP_INT_MAX:
            return value
    return key


def php_int(value: object) -> int:
    """PHP `(int)$value`: leading-numeric strings are truncated ("12abc" -> 12, "12.7" -> 12,
    "abc" -> 0), integer strings saturate at PHP_INT_MAX, arrays give 0 when empty else 1."""
    if value is None or value is False:
        return 0
    if value is True:
        return 1
    if isinstance(value, int):
        return max(PHP_INT_MIN, min(PHP_INT_MAX, value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return 0
        return max(PHP_INT_MIN, min(PHP_INT_MAX, int(value)))
    if isinstance(value, str):
        if value.isascii() and value.isdigit():
            return min(PHP_INT_MAX, int(value))
        m = _LEADING_NUMBER.match(value)
        if m is None:
            return 0
        text = m.group(1)
        if any(c in text for c in ".eE"):
            return php_int(float(text))
        return max(PHP_INT_MIN, min(PHP_INT_MAX, int(text)))
    if isinstance(value, Mapping | list | tuple):
        return 1 if value else 0
    return 0


def _split_key(raw: str) -> list[str] | None:
    """Split `a[b][]` into ["a", "b", ""]; None when the name is empty."""
    bracket = raw.find("[")
    if bracket <= 0:
        base = raw if bracket < 0 else ""
        if not base:
            return None
        # PHP rewrites "." and " " in the top-level name to "_".
        return [base.replace(".", "_").replace(" ", "_")]
    base = raw[:bracket].replace(".", "_").replace(" ", "_")
    parts = [base]
    rest = raw[bracket:]
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            # An unclosed bracket makes PHP treat the first "[" as "_" in the name: rare enough
            # to keep the parts parsed so far.
            break
        parts.append(rest[1:close])
        rest = rest[close + 1 :]
    return parts


def _next_index(array: dict[PhpKey, Any]) -> int:
    ints = [k for k in array if isinstance(k, int)]
    return max(ints) + 1 if ints else 0


#: A key path step that appends (`[]`): the next integer index of that array.
_APPEND = None
_Keys = tuple[PhpKey | None, ...]
#: id(array) -> (the array, its next `[]` index), per parse. Rescanning the keys on every
#: `[]` (`_next_index`) makes a 50-ID `filter[@ID][]` quadratic; each entry holds its array, so
#: no id is reused while the parse runs.
_Nexts = dict[int, tuple[dict[PhpKey, Any], int]]


def _keys(parts: list[str]) -> _Keys:
    """The keys PHP stores along a bracket path (`_APPEND` for an inner `[]`)."""
    return (php_key(parts[0]), *(_APPEND if p == "" else php_key(p) for p in parts[1:]))


def _store(target: dict[PhpKey, Any], keys: _Keys, value: Any, nexts: _Nexts) -> None:
    node = target
    last = len(keys) - 1
    for i, key in enumerate(keys):
        if key is _APPEND:
            known = nexts.get(id(node))
            key = _next_index(node) if known is None else known[1]
        child: dict[PhpKey, Any] = node
        if i == last:
            node[key] = value
        else:
            found = node.get(key)
            if isinstance(found, dict):
                child = found
            else:
                child = node[key] = {}
        if isinstance(key, int):
            known = nexts.get(id(node))
            nxt = _next_index(node) if known is None else known[1]
            nexts[id(node)] = (node, key + 1 if key >= nxt else nxt)
        if i == last:
            return
        node = child


def assign(target: dict[PhpKey, Any], parts: list[str], value: Any) -> None:
    """Store `value` at the bracket path `parts` the way PHP's `parse_str` does."""
    _store(target, _keys(parts), value, {})


@functools.lru_cache(maxsize=4096)
def _name_keys(raw: str) -> _Keys | None:
    """A query name, URL-decoded, as its key path; the names of a list command
    (`filter[@ID][]`, `select[]`) repeat on every pair, so each is decoded once."""
    parts = _split_key(unquote_plus(raw))
    return None if parts is None else _keys(parts)


def parse_pairs(pairs: Iterable[tuple[str, Any]]) -> dict[PhpKey, Any]:
    """Build a PHP array from (bracketed name, value) pairs (form fields, multipart parts)."""
    out: dict[PhpKey, Any] = {}
    nexts: _Nexts = {}
    for name, value in pairs:
        parts = _split_key(name)
        if parts is not None:
            _store(out, _keys(parts), value, nexts)
    return out


def parse_str(query: str) -> dict[PhpKey, Any]:
    """PHP `parse_str`: `select[]=ID&filter[>ID]=5&cmd[d1]=...` into nested arrays."""
    if "%" not in query and "+" not in query and "[" not in query and "." not in query:
        # Fast path for the common `id=123` command: no decoding, no brackets.
        simple: dict[PhpKey, Any] = {}
        for chunk in query.split("&"):
            if chunk:
                name, _, value = chunk.partition("=")
                if name:
                    simple[php_key(name.replace(" ", "_"))] = value
        return simple
    out: dict[PhpKey, Any] = {}
    nexts: _Nexts = {}
    for chunk in query.split("&"):
        if not chunk:
            continue
        name, _, value = chunk.partition("=")
        keys = _name_keys(name)
        if keys is None:
            continue
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        _store(out, keys, value, nexts)
    return out


def from_json(value: Any) -> Any:
    """A decoded JSON value as PHP sees it after `json_decode($body, true)`: object keys are
    PHP keys, lists become 0-based arrays (kept as Python lists; `as_list` reads both)."""
    if isinstance(value, dict):
        # Strings dominate (batch commands): skip the recursive call for them.
        return {php_key(k): v if isinstance(v, str) else from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def as_list(value: Any) -> list[Any]:
    """The values of a PHP array in order (a dict from bracket syntax or a JSON list); a scalar
    becomes a one-element list."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [value]


def php_array(items: Mapping[PhpKey, Any] | Iterable[tuple[PhpKey, Any]]) -> Any:
    """What `json_encode` writes for a PHP array: `[]` when empty, a list when the keys are
    0..n-1 in order, otherwise an object with string keys."""
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    if not pairs:
        return []
    if all(k == i and isinstance(k, int) for i, (k, _) in enumerate(pairs)):
        return [v for _, v in pairs]
    return {str(k): v for k, v in pairs}


def truthy(value: Any) -> bool:
    """PHP truthiness for flags like `halt` ("0", "", "false"? see below)."""
    if isinstance(value, str):
        # Bitrix reads `halt` as a boolean flag; "false" in a query string must mean false
        # (REST docs `settings/how-to-call-rest-api/batch.md`: `halt` takes 0/1 or true/false).
        return value.strip().lower() not in ("", "0", "false", "n", "no")
    return bool(value)


__all__ = [
    "PHP_INT_MAX",
    "PhpKey",
    "as_list",
    "assign",
    "from_json",
    "parse_pairs",
    "parse_str",
    "php_array",
    "php_int",
    "php_key",
    "truthy",
]
