"""PHP semantics the wire format inherits: pure functions.

Sources: rest module `rest_util.php`, `CRestUtil::ParseBatchQuery`; crm module `restservice.php`,
`CCrmRestHelper::resolveEntityID`; REST docs `settings/how-to-call-rest-api/batch.md`."""

from __future__ import annotations

import pytest

from pipeline.simulator.php import (
    PHP_INT_MAX,
    as_list,
    parse_str,
    php_array,
    php_int,
    php_key,
    truthy,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12),
        ("12abc", 12),
        ("abc", 0),
        ("12.7", 12),
        (" 42", 42),
        ("-5", -5),
        ("1e3", 1000),
        ("", 0),
        (None, 0),
        (True, 1),
        (12.9, 12),
        ("99999999999999999999", PHP_INT_MAX),
        ([], 0),
        ([7], 1),
        ("0x1A", 0),
    ],
)
def test_php_int_cast(value: object, expected: int) -> None:
    assert php_int(value) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("123", 123),
        ("0", 0),
        ("-7", -7),
        ("007", "007"),
        ("-0", "-0"),
        ("d1", "d1"),
        ("1.5", "1.5"),
    ],
)
def test_php_array_keys(key: str, expected: int | str) -> None:
    assert php_key(key) == expected


def test_parse_str_brackets() -> None:
    parsed = parse_str(
        "select[]=ID&select[]=TITLE&filter[>ID]=5&filter[@ID][]=1&filter[@ID][]=2"
        "&order[DATE_MODIFY]=ASC&start=-1&a.b=1&title=%D0%AF+x"
    )
    assert parsed["select"] == {0: "ID", 1: "TITLE"}
    assert parsed["filter"] == {">ID": "5", "@ID": {0: "1", 1: "2"}}
    assert parsed["order"] == {"DATE_MODIFY": "ASC"}
    assert parsed["start"] == "-1"
    assert parsed["a_b"] == "1"  # PHP rewrites "." in top-level names
    assert parsed["title"] == "Я x"
    assert as_list(parsed["select"]) == ["ID", "TITLE"]


def test_parse_str_numeric_keys_and_last_wins() -> None:
    assert parse_str("cmd[5]=a&cmd[]=b&id=1&id=2") == {"cmd": {5: "a", 6: "b"}, "id": "2"}


def test_parse_str_appends_after_the_highest_integer_key() -> None:
    """`[]` takes the highest integer key so far plus one, whatever came between."""
    assert parse_str("a[]=x&a[5]=y&a[]=z&a[k]=w&a[]=v") == {
        "a": {0: "x", 5: "y", 6: "z", "k": "w", 7: "v"}
    }
    assert parse_str("a[3]=x&a[1]=y&a[]=z") == {"a": {3: "x", 1: "y", 4: "z"}}
    # An array replaced by a scalar, then a fresh array: the fresh one starts at 0.
    assert parse_str("a[x][]=1&a[x][]=2&a[x]=s&a[y][]=3") == {"a": {"x": "s", "y": {0: "3"}}}
    ids = "&".join(f"filter%5B%40ID%5D%5B%5D={i}" for i in range(1, 51))
    assert parse_str(ids)["filter"]["@ID"] == {n: str(n + 1) for n in range(50)}


def test_php_array_serialisation() -> None:
    assert php_array([]) == []
    assert php_array([(0, "a"), (1, "b")]) == ["a", "b"]
    assert php_array([(1, "b")]) == {"1": "b"}
    assert php_array([(1, "b"), (0, "a")]) == {"1": "b", "0": "a"}
    assert php_array([("d1", "x")]) == {"d1": "x"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("0", False),
        ("true", True),
        ("false", False),
        (1, True),
        (0, False),
        ("", False),
    ],
)
def test_halt_flag(value: object, expected: bool) -> None:
    assert truthy(value) is expected
