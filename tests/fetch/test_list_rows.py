"""`parse_list_batch` takes the usual answer (every requested ID, in order) by a quick path;
whatever the rows, it must split them exactly as the row-by-row reading does."""

from __future__ import annotations

import random
from typing import Any

from pipeline.fetch import listing
from pipeline.fetch.listing import ListReply, parse_list_batch


def _exactly(rows: Any, chunk: list[int]) -> ListReply:
    """The row-by-row reading alone (the quick path never tried)."""
    reply = ListReply()
    if isinstance(rows, dict):
        rows = list(rows.values()) if rows else []
    if not isinstance(rows, list):
        reply.stray.append(f"a {type(rows).__name__} instead of a list of deals")
        return reply
    found = listing._found_by_id(rows, chunk, reply)
    for deal_id in chunk:
        if deal_id in found:
            reply.deals[deal_id] = found[deal_id]
        else:
            reply.absent.append(deal_id)
    return reply


def _same(got: ListReply, want: ListReply) -> None:
    assert list(got.deals) == list(want.deals)
    for deal_id, row in want.deals.items():
        assert got.deals[deal_id] is row  # the very row, not an equal one
    assert got.absent == want.absent
    assert got.stray == want.stray
    assert got.errors == want.errors
    assert got.missing == want.missing


ODD_IDS: list[Any] = [
    None,
    True,
    False,
    7,
    7.0,
    "7.0",
    " 7",
    "+7",
    "07",
    "7_0",
    "x",
    "",
    "-7",
    [7],
    {"a": 1},
    "9" * 5000,
]


def _rows_for(rng: random.Random, chunk: list[int]) -> Any:
    rows: list[Any] = [{"ID": str(i), "TITLE": f"deal {i}"} for i in chunk]
    for _ in range(rng.randrange(3)):
        what = rng.randrange(7)
        at = rng.randrange(len(rows) + 1)
        if what == 0 and rows:
            del rows[min(at, len(rows) - 1)]  # absent
        elif what == 1 and rows:
            twin = rows[min(at, len(rows) - 1)]
            # A second row for one ID: an equal copy, so only identity tells which is kept.
            rows.insert(at, dict(twin) if isinstance(twin, dict) else twin)
        elif what == 2:
            rows.insert(at, {"ID": str(max(chunk) + 1)})  # not asked for
        elif what == 3 and rows:
            rows[min(at, len(rows) - 1)] = {"ID": rng.choice(ODD_IDS)}
        elif what == 4 and rows:
            rows[min(at, len(rows) - 1)] = rng.choice([None, "row", 7, ["ID"], {"TITLE": "x"}])
        elif what == 5 and len(rows) > 1:
            rows[0], rows[-1] = rows[-1], rows[0]  # out of order
        elif what == 6:
            return {str(n): row for n, row in enumerate(rows)}  # a PHP list sent as object
    return rows


def test_every_answer_is_split_as_the_row_by_row_reading_splits_it() -> None:
    rng = random.Random(24)
    for _ in range(3000):
        size = rng.randrange(1, 8)
        chunk = sorted(rng.sample(range(1, 40), size))
        if rng.randrange(10) == 0:
            chunk.append(chunk[0])  # an ID asked for twice
        rows = _rows_for(rng, chunk)
        got = parse_list_batch({"result": {"l0": rows}}, [chunk])
        _same(got, _exactly(rows, chunk))


def test_the_usual_answer_takes_the_quick_path() -> None:
    chunk = [3, 5, 8]
    rows = [{"ID": "3"}, {"ID": "5"}, {"ID": "8"}]
    deals: dict[int, dict[str, Any]] = {}
    assert listing._take_as_asked(rows, chunk, deals)
    assert list(deals) == chunk
    assert all(deals[i] is r for i, r in zip(chunk, rows, strict=True))
    # Each of these is read row by row instead (and nothing is taken).
    for odd in (
        rows[:2],
        [*rows[:2], {"ID": 8}],
        [*rows[:2], {"ID": "8.0"}],
        [*rows[:2], {"TITLE": "x"}],
        [*rows[:2], ["8"]],
        [rows[1], rows[0], rows[2]],
    ):
        untouched: dict[int, dict[str, Any]] = {}
        assert not listing._take_as_asked(odd, chunk, untouched)
        assert untouched == {}
    assert not listing._take_as_asked([*rows, {"ID": "3"}], [*chunk, 3], {})


def test_a_bool_id_is_a_stray_on_either_path() -> None:
    reply = parse_list_batch({"result": {"l0": [{"ID": True}]}}, [[1]])
    assert reply.stray == ["True"]
    assert reply.absent == [1]
    assert not reply.deals
