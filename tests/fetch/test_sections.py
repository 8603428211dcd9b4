"""`loads_batch` against `orjson.loads`: the same value (byte for byte once encoded again: types
and key order) or the same error, for real simulator answers and for bodies built to trip the
section cutter. Pure, no socket; the client test runs over a `MockTransport`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
from pipeline.errors import TransientError
from pipeline.fetch import PortalClient
from pipeline.fetch.listing import (
    build_list_batch,
    chunk_ids,
    list_command,
    list_select,
    select_query,
)
from pipeline.fetch.sections import _by_sections, loads_batch
from pipeline.fetch.wire import HttpRequest, HttpResponse, MockTransport
from pipeline.simulator import SimulatorConfig
from pipeline.simulator.fields import ALL_USER_FIELD_KINDS
from pipeline.simulator.php import from_json
from pipeline.simulator.server import Simulator

TIME = {"start": 1.5, "finish": 1.75, "duration": 0.25, "processing": 0.25}


def outcome(decode: Any, body: bytes) -> tuple[str, Any, bytes]:
    """What decoding `body` gives, comparable across decoders: the value and the value encoded
    again (types and key order; nothing for values too deep for orjson to encode), or that
    it raised."""
    try:
        value = decode(body)
    except orjson.JSONDecodeError:
        return "error", None, b""
    try:
        return "value", value, orjson.dumps(value)
    except TypeError:
        return "value", value, b""


def assert_same(body: bytes) -> None:
    assert outcome(loads_batch, body) == outcome(orjson.loads, body)


def took_sections(body: bytes) -> bool:
    try:
        return _by_sections(body) is not None
    except orjson.JSONDecodeError:
        return False


def answer(sections: Any, *, errors: Any = None, tail: bytes = b"") -> bytes:
    """A list batch answer as PHP's json_encode lays it out (compact, `result` first)."""
    keys = list(sections) if isinstance(sections, dict) else []
    inner = {
        "result": sections,
        "result_error": [] if errors is None else errors,
        "result_total": {k: 0 for k in keys},
        "result_next": [],
        "result_time": {k: TIME for k in keys},
    }
    body = orjson.dumps({"result": inner, "time": TIME})
    return body[:-1] + tail + b"}" if tail else body


def rows(*ids: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"ID": str(i), "TITLE": f"deal {i}", **extra} for i in ids]


# -- real answers ----------------------------------------------------------------------------


def simulator_answer(config: SimulatorConfig, chunks: Sequence[Sequence[int]],
                     cmd: dict[str, str] | None = None) -> bytes:  # fmt: skip
    sim = Simulator(config)
    fields = orjson.loads(orjson.dumps(sim.api.call("crm.deal.fields", {}, "webhook:1")[1]))
    select = select_query(list_select(fields["result"]))
    request = build_list_batch(chunks, select)
    request["cmd"].update(cmd or {})
    status, body = sim.api.call("batch", from_json(request), "webhook:1")
    assert status == 200
    return orjson.dumps(body)


@pytest.mark.parametrize("empty_multiple", ["mix", "empty_list"])
@pytest.mark.parametrize("commands", [1, 2, 20])
def test_real_answers_decode_by_sections_to_the_same_value(
    empty_multiple: str, commands: int
) -> None:
    config = SimulatorConfig(
        deals=1200, seed=5, user_fields=ALL_USER_FIELD_KINDS, hidden_fraction=0.1,
        deleted_fraction=0.2, empty_multiple=empty_multiple,  # type: ignore[arg-type]
    )  # fmt: skip
    # IDs past the portal's last deal make whole sections empty (`[]`), first and last too.
    middle = range(1, 50 * max(commands - 2, 1) + 1)
    body = simulator_answer(
        config, chunk_ids([*range(5000, 5050), *middle, *range(6000, 6050)])[:commands]
    )
    assert took_sections(body)
    assert_same(body)


def test_a_failed_command_leaves_a_gap_in_the_keys() -> None:
    config = SimulatorConfig(deals=300, seed=2)
    chunks = chunk_ids(range(1, 201))
    # l1 calls a method the portal does not have: an entry in result_error, none in result.
    failing = {"l1": list_command(chunks[1], "select%5B%5D=ID", "crm.nothing.list")}
    body = simulator_answer(config, chunks, failing)
    decoded = orjson.loads(body)
    assert list(decoded["result"]["result"]) == ["l0", "l2", "l3"]
    assert "l1" in decoded["result"]["result_error"]
    assert took_sections(body)
    assert_same(body)


# -- bodies built to trip the cutter ----------------------------------------------------------

TRICKY_TEXT = [
    '],"l1":[',
    '"l1":[',
    '},"result_error":',
    '"result":',
    "\\",
    '\\"',
    '\\\\"],"l1":[',
    "back\\slash\\",
    "Новая сделка № 1 — ✓ 🚀",
    "\u2028\u2029\x00\x1f",
]


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_tricky_text_in_rows_still_decodes_by_sections(text: str) -> None:
    body = answer({"l0": rows(1, 2, NOTE=text), "l1": rows(3, TITLE=text), "l2": []})
    assert took_sections(body)
    assert_same(body)


@pytest.mark.parametrize(
    "sections",
    [
        {"l0": [], "l1": []},
        {"l0": rows(1), "l1": [], "l2": rows(2)},
        {"l3": rows(1), "l7": rows(2)},
        # Sections far longer and shorter than the ones before (the search starts at a guess).
        {
            "l0": rows(1),
            "l1": rows(*range(2, 60)),
            "l2": [],
            "l3": rows(*range(70, 99)),
            "l5": rows(200),
            "l6": rows(*range(300, 350)),
        },
        {"l0": [[1, [2, [3]]], {"a": {"b": [None, True, 1.5, -0]}}]},
        {"l0": rows(1, UF=[{"id": 1, "showUrl": "/x"}], EMPTY=[])},
    ],
)
def test_shapes_the_portal_sends_decode_by_sections(sections: dict[str, Any]) -> None:
    body = answer(sections, errors={"l9": {"error": "", "error_description": "Not found"}})
    assert took_sections(body)
    assert_same(body)


def test_a_key_like_a_sections_inside_a_row_falls_back() -> None:
    # The bytes `],"l1":[` inside l0's row: the cut there leaves a piece that does not decode.
    body = answer({"l0": [{"ID": "1", "X": [1], "l1": [2]}], "l1": rows(3)})
    assert b'],"l1":[' in body.split(b'"l1":[{', 1)[0]
    assert not took_sections(body)
    assert_same(body)


@pytest.mark.parametrize(
    "body",
    [
        answer([]),  # every command failed: PHP's empty array
        answer({}),
        answer({"l0": rows(1), "l1": {"0": rows(2)[0]}}),  # a section as a PHP object
        answer({"l1": rows(1), "l0": rows(2)}),  # out of order
        answer({"d1": rows(1)}),  # another key naming
        answer({"l0": rows(1), "x": rows(2)}),
        answer({"l0": rows(1), "l01": rows(2)}),
        answer({"l0": rows(1), "l" + "9" * 12: rows(2)}),
        answer({"l0": "not a list", "l1": rows(1)}),
        answer({"l0": rows(1)}, tail=b',"result":{"result":{}}'),  # a second `result`
        orjson.dumps(orjson.loads(answer({"l0": rows(1)})), option=orjson.OPT_INDENT_2),
        b" " + answer({"l0": rows(1)}),
        answer({"l0": rows(1)}) + b"\n",
        b'{"time":{},"result":{"result":{"l0":[]},"result_error":[]}}',
        b'{"result":{"result":{"l0":[1]},"result_total":[]},"time":{}}',
        b'{"result":{"result":{"l0":[1],"l0":[2]},"result_error":[]}}',  # a repeated key
        b'{"result":{"result":{"l0":[1]},"result_error":[],"result_error":{}}}',
        b'{"result":{"result":{"l0":[1]},"result_error":[]},"result":5}',
        b'{"result":{"result":{"l0":[1]},"result_error":[]},"result_error":[]}',
        b'{"result":{"result":{"l0":[1],"l1":[2]},"result_error":[]}}',
    ],
)
def test_other_layouts_give_what_orjson_gives(body: bytes) -> None:
    assert_same(body)


def test_a_repeated_key_keeps_orjsons_choice() -> None:
    body = b'{"result":{"result":{"l0":[1],"l0":[2]},"result_error":[]}}'
    assert loads_batch(body) == {"result": {"result": {"l0": [2]}, "result_error": []}}


@pytest.mark.parametrize("extra", [1020, 1021, 1022])
def test_nesting_limit_applies_as_to_the_whole_body(extra: int) -> None:
    # orjson refuses more than 1,024 levels; a section sits three levels deep.
    deep = b"[" * extra + b"]" * extra
    body = b'{"result":{"result":{"l0":[' + deep + b'],"l1":[]},"result_error":[]}}'
    ours, theirs = outcome(loads_batch, body), outcome(orjson.loads, body)
    assert ours[0] == theirs[0] == ("value" if extra < 1021 else "error")
    if theirs[0] == "value":
        assert depth(ours[1]) == depth(theirs[1]) == extra + 3


def depth(value: Any) -> int:
    """Levels of first elements (too deep for `==`, which recurses)."""
    levels = 0
    while isinstance(value, dict | list) and value:
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
        levels += 1
    return levels


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xed\xa0\x80", b"99999999999999999999999999", b"01", b"nul", b"1,]"],
)
def test_a_bad_value_in_a_section_raises_as_orjson_does(bad: bytes) -> None:
    good = answer({"l0": rows(1), "l1": [0], "l2": rows(2)})
    body = good.replace(b'"l1":[0]', b'"l1":[' + bad + b"]")
    assert_same(body)


def test_every_truncation_raises_as_orjson_does() -> None:
    body = answer({"l0": rows(1, 2), "l1": [], "l2": rows(3)})
    for cut in range(len(body)):
        assert_same(body[:cut])
        with pytest.raises(orjson.JSONDecodeError):
            loads_batch(body[:cut])


# -- properties --------------------------------------------------------------------------------

_text = st.text(alphabet=st.sampled_from(list('"\\],[{}:l0123 aЖ🚀\x00\n')), max_size=12)
_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    _text,
    st.lists(_text, max_size=3),
)
_row = st.dictionaries(st.sampled_from(["ID", "TITLE", "l1", "l2", "result", "X"]), _value)
_sections = st.dictionaries(
    st.sampled_from([f"l{i}" for i in range(5)] + ["x", "l01"]), st.lists(_row, max_size=3)
)


@settings(max_examples=300, deadline=None)
@given(sections=_sections, cut=st.integers(min_value=0, max_value=10_000), flip=st.booleans())
def test_any_answer_or_its_damage_gives_what_orjson_gives(
    sections: dict[str, Any], cut: int, flip: bool
) -> None:
    body = answer(sections)
    assert_same(body)
    if cut < len(body):
        assert_same(body[:cut] + body[cut + 1 :] if flip else body[:cut])


# -- through the client ------------------------------------------------------------------------


@pytest.mark.parametrize("truncate", [False, True])
async def test_the_client_decodes_list_answers_by_sections(truncate: bool) -> None:
    chunks = chunk_ids(range(1, 101))
    body = answer({"l0": rows(*chunks[0]), "l1": rows(*chunks[1][::2])})
    sent = body[: len(body) // 2] if truncate else body

    def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, "application/json", sent, request.url)

    client = PortalClient(
        WebhookAuth("https://portal.example/rest/1/t0ps3cr3tw3bh00k/"),
        limits=LimitsConfig(rate=0, operating_budget_s=None),
        fetch=FetchConfig(max_attempts=1),
        clock=VirtualClock(),
        http=MockTransport(handler),
    )
    async with client:
        if truncate:
            with pytest.raises(TransientError) as caught:
                await client.batch_list(chunks, "select%5B%5D=ID")
            assert caught.value.code == "BAD_JSON"
            return
        reply, _ = await client.batch_list(chunks, "select%5B%5D=ID")
    assert sorted(reply.deals) == [*chunks[0], *chunks[1][::2]]
    assert reply.absent == chunks[1][1::2]
