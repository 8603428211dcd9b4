"""The list strategy's pure parts: the cost truth table, the chooser, list commands and answers."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.fetch.listing import (
    LIST_PAGE,
    build_list_batch,
    chunk_ids,
    list_select,
    parse_list_batch,
    select_query,
)
from pipeline.fetch.strategy import Chooser, choose
from pipeline.simulator.php import as_list, parse_str

# (get per deal, list per deal, current) -> mode
TRUTH_TABLE: list[tuple[float | None, float | None, str | None, str]] = [
    (None, None, None, "get"),
    (0.020, None, None, "get"),
    (None, 0.002, None, "list"),
    (0.020, 0.002, None, "list"),
    (0.002, 0.020, None, "get"),
    (0.020, 0.020, None, "list"),  # a tie: list sends 50 times fewer commands
    (0.020, 0.019, "get", "get"),  # cheaper, but not by the margin: no switch
    (0.020, 0.017, "get", "list"),
    (0.019, 0.020, "list", "list"),  # get cheaper, not by the margin: stays
    (0.017, 0.020, "list", "get"),
    (0.020, 0.002, "list", "list"),
    (0.002, 0.020, "get", "get"),
]


@pytest.mark.parametrize(("get_cost", "list_cost", "current", "expected"), TRUTH_TABLE)
def test_choose_truth_table(
    get_cost: float | None, list_cost: float | None, current: Any, expected: str
) -> None:
    mode, reason = choose(get_cost, list_cost, current)
    assert mode == expected
    assert reason


def test_auto_probes_both_then_uses_the_cheaper_and_rechecks() -> None:
    chooser = Chooser("auto", recheck_s=100.0)
    first = chooser.next_batch(0.0)
    assert (first.mode, first.probe) == ("list", True)
    second = chooser.next_batch(0.0)
    assert (second.mode, second.probe) == ("get", True)
    # While the probes are out, the known method carries on.
    assert chooser.next_batch(0.0).mode == "get"
    chooser.observed("list", seconds=0.12, deals=50)
    chooser.observed("get", seconds=1.0, deals=50)
    assert chooser.mode == "list"
    assert "list cheaper" in chooser.reason
    assert chooser.next_batch(10.0) == chooser.next_batch(20.0)
    assert not chooser.next_batch(30.0).probe
    recheck = chooser.next_batch(101.0)
    assert (recheck.mode, recheck.probe) == ("get", True)
    assert not chooser.next_batch(102.0).probe  # one probe at a time


def test_absent_ids_make_list_dearer_by_their_follow_up_gets() -> None:
    chooser = Chooser("auto")
    chooser.observed("get", seconds=1.0, deals=50)  # 20 ms per deal
    chooser.observed("list", seconds=0.5, deals=50, absent=40)  # 10 ms + 0.8 x 20 ms
    costs = chooser.per_deal()
    assert costs["list"] == pytest.approx(0.010 + 0.8 * 0.020)
    assert chooser.mode == "get"


def test_a_disagreement_and_failed_list_probes_fall_back_to_get() -> None:
    chooser = Chooser("auto")
    chooser.fall_back("crm.deal.list answered deals that were not asked for")
    assert chooser.next_batch(0.0).mode == "get"
    assert chooser.report()["ran"] == "get"
    assert "fell back" in chooser.report()["reason"]
    failing = Chooser("auto")
    for _ in range(3):
        pick = failing.next_batch(0.0)
        assert pick.mode == "list"
        failing.settled("list", measured=False)
    assert failing.list_off
    assert failing.next_batch(0.0).mode == "get"


def test_an_unused_pick_leaves_its_probe_to_be_sent() -> None:
    chooser = Chooser("auto")
    pick = chooser.next_batch(0.0)
    chooser.cancel(pick)
    assert chooser.next_batch(0.0) == pick


@pytest.mark.parametrize("strategy", ["get", "list"])
def test_a_fixed_strategy_never_probes(strategy: Any) -> None:
    chooser = Chooser(strategy)
    for now in (0.0, 1000.0, 5000.0):
        pick = chooser.next_batch(now)
        assert (pick.mode, pick.probe) == (strategy, False)


FIELDS: dict[str, Any] = {
    "ID": {"type": "integer", "isMultiple": False},
    "TITLE": {"type": "string", "isMultiple": False},
    "CONTACT_IDS": {"type": "crm_contact", "isMultiple": True},
    "UF_FLAG": {"type": "boolean", "isMultiple": False, "isDynamic": True},
    "UF_TAGS": {"type": "string", "isMultiple": True, "isDynamic": True},
    "UF_TEXT": {"type": "string", "isMultiple": False, "isDynamic": True},
    "UF_FILE": {"type": "file", "isMultiple": False, "isDynamic": True},
}


def test_a_list_command_names_every_field_and_asks_for_exactly_its_ids() -> None:
    select = list_select(FIELDS)
    assert select[0] == "ID"
    assert set(select) == set(FIELDS)  # multiple fields too: `*`/`UF_*` would leave them out
    body = build_list_batch(chunk_ids(list(range(1, 121))), select_query(select))
    assert body["halt"] == 0
    assert list(body["cmd"]) == ["l0", "l1", "l2"]
    method, _, query = body["cmd"]["l2"].partition("?")
    assert method == "crm.deal.list"
    params = parse_str(query)
    assert [int(i) for i in as_list(params["filter"]["@ID"])] == list(range(101, 121))
    assert params["order"] == {"ID": "ASC"}
    assert params["start"] == "-1"
    assert as_list(params["select"]) == select
    assert len(chunk_ids(list(range(2 * LIST_PAGE + 1)))) == 3


def test_list_rows_are_handed_on_as_they_came() -> None:
    # The normaliser reads list's forms itself (tests/normalise/test_list_forms.py): a row is
    # neither rewritten nor copied.
    row = {"ID": "7", "UF_FLAG": True, "UF_TAGS": None, "UF_TEXT": None, "UF_FILE": None}
    sent = dict(row)
    reply = parse_list_batch({"result": {"l0": [row]}}, [[7]])
    assert reply.deals[7] is row
    assert row == sent


def test_a_list_answer_is_split_per_requested_id() -> None:
    chunks = [[1, 2, 3], [4, 5], [6]]
    result = {
        "result": {"l0": [{"ID": "1"}, {"ID": "3"}], "l1": []},
        "result_error": {"l2": {"error": "", "error_description": "Access denied."}},
        "result_time": {"l0": {"processing": 0.1}},
    }
    reply = parse_list_batch(result, chunks)
    assert sorted(reply.deals) == [1, 3]
    assert reply.absent == [2, 4, 5]
    assert list(reply.errors) == [6]
    assert reply.missing == []
    assert reply.stray == []
    missing = parse_list_batch({"result": {"l0": []}}, chunks)
    assert missing.missing == [4, 5, 6]


def test_rows_that_were_not_asked_for_are_a_disagreement() -> None:
    reply = parse_list_batch({"result": {"l0": [{"ID": "1"}, {"ID": "99"}]}}, [[1, 2]])
    assert reply.stray == ["99"]
    assert parse_list_batch({"result": {"l0": [{"TITLE": "x"}]}}, [[1]]).stray == ["None"]


async def test_a_batch_is_sized_to_half_the_60_s_cap_by_measured_cost() -> None:
    from pipeline.clock import VirtualClock
    from pipeline.config import LimitsConfig
    from pipeline.fetch.pacing import Observation, OperatingBudget
    from pipeline.fetch.stats import FetchStats

    budget = OperatingBudget(LimitsConfig(), VirtualClock(), FetchStats(), "crm.deal.list")
    assert budget.within_request_cap(50) == 1  # nothing measured yet: one call first
    reservation = await budget.reserve(1)
    budget.release(reservation, Observation(operating=2.0, reset_at=None, per_command_s=2.0))
    assert budget.within_request_cap(50) == 15  # 30 s / 2 s
    assert budget.within_request_cap(10) == 10
    reservation = await budget.reserve(1)
    budget.release(reservation, Observation(operating=4.0, reset_at=None, per_command_s=90.0))
    assert budget.within_request_cap(50) == 1  # never zero
