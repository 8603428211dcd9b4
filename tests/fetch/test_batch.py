"""Batch building and the answer shapes PHP produces (docs `batch.md`)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.fetch.batch import (
    CommandError,
    as_section,
    batch_timings,
    build_batch,
    command_key,
    parse_batch,
    parse_error,
)


def test_build_batch_keys_encoding_and_halt() -> None:
    body = build_batch([410, 411, 9_000_000_000])
    assert body["halt"] == 0
    assert list(body["cmd"]) == ["d410", "d411", "d9000000000"]
    method, _, query = body["cmd"]["d410"].partition("?")
    assert method == "crm.deal.get"
    assert parse_qs(query) == {"ID": ["410"]}
    assert urlsplit(body["cmd"]["d9000000000"]).query == "ID=9000000000"


def test_build_batch_rejects_bad_sizes_and_duplicates() -> None:
    with pytest.raises(ValueError, match=r"1\.\.50"):
        build_batch([])
    with pytest.raises(ValueError, match=r"1\.\.50"):
        build_batch(list(range(1, 52)))
    with pytest.raises(ValueError, match="duplicate"):
        build_batch([5, 5])


def test_keys_are_not_numeric() -> None:
    assert not command_key(123).isdigit()


def test_dict_shapes_split_per_id() -> None:
    result = {
        "result": {"d1": {"ID": "1", "TITLE": "a"}, "d2": {"ID": "2"}},
        "result_error": {"d3": {"error": "", "error_description": "Not found"}},
        "result_total": [],
        "result_next": [],
        "result_time": {"d1": {"operating": 1.0}, "d2": {"operating": 1.2}},
    }
    reply = parse_batch(result, [1, 2, 3])
    assert reply.deals == {1: {"ID": "1", "TITLE": "a"}, 2: {"ID": "2"}}
    assert reply.errors == {3: CommandError("", "Not found")}
    assert reply.missing == []
    assert [t["operating"] for t in batch_timings(result)] == [1.0, 1.2]


def test_empty_sections_as_php_lists() -> None:
    # All commands failed: `result` is PHP's empty array, i.e. JSON [].
    result = {
        "result": [],
        "result_error": {"d7": {"error": "", "error_description": "Access denied."}},
        "result_time": [],
    }
    reply = parse_batch(result, [7])
    assert reply.deals == {}
    assert reply.errors == {7: CommandError("", "Access denied.")}
    assert batch_timings(result) == []


def test_list_sections_are_keyed_by_position() -> None:
    result = {
        "result": [{"ID": "10"}, None],
        "result_error": [None, {"error": "ERROR_CORE", "error_description": "SQL"}],
    }
    reply = parse_batch(result, [10, 11])
    assert reply.deals == {10: {"ID": "10"}}
    assert reply.errors == {11: CommandError("ERROR_CORE", "SQL")}


def test_missing_keys_are_reported_never_dropped() -> None:
    # After a halt (or a server bug), later commands appear nowhere.
    result = {"result": {"d1": {"ID": "1"}}, "result_error": []}
    reply = parse_batch(result, [1, 2, 3])
    assert reply.deals.keys() == {1}
    assert reply.missing == [2, 3]


def test_every_sent_id_lands_in_exactly_one_bucket() -> None:
    ids = list(range(1, 51))
    result = {
        "result": {f"d{i}": {"ID": str(i)} for i in ids if i % 3 == 0},
        "result_error": {
            f"d{i}": {"error": "", "error_description": "Not found"} for i in ids if i % 3 == 1
        },
    }
    reply = parse_batch(result, ids)
    buckets = [set(reply.deals), set(reply.errors), set(reply.missing)]
    assert set().union(*buckets) == set(ids)
    assert sum(len(b) for b in buckets) == len(ids)


def test_bad_payloads_become_errors() -> None:
    result = {"result": {"d1": "oops", "d2": {"ID": "3"}}}
    reply = parse_batch(result, [1, 2])
    assert reply.errors[1].code == "BAD_PAYLOAD"
    assert reply.errors[2].code == "BAD_PAYLOAD"


def test_result_not_an_object_means_all_missing() -> None:
    assert parse_batch(None, [1, 2]).missing == [1, 2]
    assert parse_batch([], [1]).missing == [1]


def test_as_section_and_parse_error_tolerate_junk() -> None:
    assert as_section(None, ["a"]) == {}
    assert as_section(5, ["a"]) == {}
    assert as_section([1, 2, 3], ["a"]) == {"a": 1}
    assert as_section({1: "x"}, []) == {"1": "x"}
    assert parse_error({"error": None, "error_description": None}) == CommandError("", "")
    assert parse_error("boom") == CommandError("", "boom")
    assert parse_error({"error": 42}) == CommandError("42", "")
