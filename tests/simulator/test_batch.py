"""`batch` over real HTTP: per-command sections and the PHP array quirks.

Sources: REST docs `settings/how-to-call-rest-api/batch.md`; rest module `rest_provider.php`,
`methodsBatch`."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import aiohttp

from pipeline.simulator import RunningSimulator
from tests.conftest import SimulatorFactory
from tests.simulator.conftest import post_form, post_json


async def test_mixed_batch_sections(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ok = sim.portal.visible_ids[:3]
    missing = sim.portal.deleted_ids[0]
    cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in [*ok, missing]}
    status, body = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    res = body["result"]
    assert list(res) == ["result", "result_error", "result_total", "result_next", "result_time"]
    assert res["result"] == {f"d{i}": sim.portal.deal_wire(i) for i in ok}
    assert res["result_error"] == {f"d{missing}": {"error": "", "error_description": "Not found"}}
    assert res["result_total"] == []
    assert res["result_next"] == []
    # A failed command has no result_time entry; the others carry operating counters.
    assert set(res["result_time"]) == {f"d{i}" for i in ok}
    for entry in res["result_time"].values():
        assert {"start", "finish", "duration", "processing", "date_start", "date_finish"} <= set(
            entry
        )
    assert "start" in body["time"]


async def test_list_cmd_gives_list_sections(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    ids = sim.portal.visible_ids[:3]
    cmd = [f"crm.deal.get?id={i}" for i in ids]
    _, body = await post_json(http, sim.webhook_url + "batch", {"cmd": cmd})
    res = body["result"]
    assert res["result"] == [sim.portal.deal_wire(i) for i in ids]
    assert res["result_error"] == []  # empty section: a JSON list, not {}
    assert isinstance(res["result_time"], list)
    assert len(res["result_time"]) == 3


async def test_only_first_command_failing_makes_error_a_list(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    good = sim.portal.visible_ids[0]
    cmd = ["crm.deal.get?id=0", f"crm.deal.get?id={good}"]
    _, body = await post_json(http, sim.webhook_url + "batch", {"cmd": cmd})
    res = body["result"]
    # Keys {0} form a 0-based sequence -> list; keys {1} do not -> object with "1".
    assert res["result_error"] == [
        {"error": "", "error_description": "ID is not defined or invalid."}
    ]
    assert res["result"] == {"1": sim.portal.deal_wire(good)}
    assert list(res["result_time"]) == ["1"]


async def test_numeric_string_keys_are_php_ints(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    a, b = sim.portal.visible_ids[:2]
    cmd = {"0": f"crm.deal.get?id={a}", "1": f"crm.deal.get?id={b}"}
    _, body = await post_json(http, sim.webhook_url + "batch", {"cmd": cmd})
    assert isinstance(body["result"]["result"], list)
    cmd2 = {str(a): f"crm.deal.get?id={a}", "007": f"crm.deal.get?id={b}"}
    _, body2 = await post_json(http, sim.webhook_url + "batch", {"cmd": cmd2})
    assert list(body2["result"]["result"]) == [str(a), "007"]


async def test_halt_stops_after_first_failure(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    a, b = sim.portal.visible_ids[:2]
    missing = sim.portal.deleted_ids[0]
    cmd = {
        "a": f"crm.deal.get?id={a}",
        "m": f"crm.deal.get?id={missing}",
        "b": f"crm.deal.get?id={b}",
    }
    _, body = await post_json(http, sim.webhook_url + "batch", {"halt": 1, "cmd": cmd})
    res = body["result"]
    assert list(res["result"]) == ["a"]
    assert list(res["result_error"]) == ["m"]
    assert "b" not in res["result_time"]
    _, body = await post_json(http, sim.webhook_url + "batch", {"halt": "false", "cmd": cmd})
    assert set(body["result"]["result"]) == {"a", "b"}


async def test_commands_past_fifty_fail_individually(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim: RunningSimulator = await simulator(deals=100, seed=3)
    ids = sim.portal.visible_ids[:55]
    cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in ids}
    _, body = await post_json(http, sim.webhook_url + "batch", {"cmd": cmd})
    res = body["result"]
    assert list(res["result"]) == [f"d{i}" for i in ids[:50]]
    assert res["result_error"] == {
        f"d{i}": {
            "error": "ERROR_BATCH_LENGTH_EXCEEDED",
            "error_description": "Max batch length exceeded",
        }
        for i in ids[50:]
    }


async def test_form_encoded_batch(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    a, b = sim.portal.visible_ids[:2]
    form = "&".join(
        [
            f"cmd[x{a}]={quote(f'crm.deal.get?ID={a}')}",
            f"cmd[x{b}]={quote(f'crm.deal.get?id={b}')}",
            "halt=0",
        ]
    )
    status, body = await post_form(http, sim.webhook_url + "batch.json", form)
    assert status == 200
    assert body["result"]["result"] == {
        f"x{a}": sim.portal.deal_wire(a),
        f"x{b}": sim.portal.deal_wire(b),
    }


async def test_nested_batch_and_unknown_method_inside(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    cmd = {"n": "batch?cmd[0]=crm.deal.fields", "u": "crm.deal.nope?id=1", "f": "crm.deal.fields"}
    _, body = await post_json(http, sim.webhook_url + "batch", {"cmd": cmd})
    res = body["result"]
    assert res["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert res["result_error"]["u"]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert res["result"]["f"] == sim.portal.fields()


async def test_result_references_between_commands(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    first = sim.portal.visible_ids[0]
    cmd = {
        "list": "crm.deal.list?filter[>ID]=0&select[]=ID&order[ID]=ASC&start=-1",
        "get": "crm.deal.get?id=$result[list][0][ID]",
        "again": "crm.deal.get?" + urlencode({"id": "$result[get][ID]"}),
        "dangling": "crm.deal.get?id=$result[nothing][ID]",
    }
    _, body = await post_json(http, sim.webhook_url + "batch", {"cmd": cmd})
    res = body["result"]
    assert res["result"]["get"] == sim.portal.deal_wire(first)
    assert res["result"]["again"]["ID"] == str(first)
    assert res["result_error"]["dangling"]["error_description"] == "ID is not defined or invalid."


# -- poison deals and per-command refusals (issue 10) ----------------------------------------


async def test_poison_deal_fails_the_whole_answer_with_200(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    probe = await simulator(deals=80, seed=6, hidden_fraction=0.0)
    ids = probe.portal.visible_ids[:4]
    sim = await simulator(deals=80, seed=6, hidden_fraction=0.0, poison_ids=frozenset({ids[2]}))
    wrong = {"error": "WRONG_ENCODING", "error_description": "Wrong request encoding"}
    cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in ids}
    status, body = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    assert (status, body) == (200, wrong)
    # A batch without it, and a plain get of another deal, are untouched.
    cmd.pop(f"d{ids[2]}")
    status, body = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    assert set(body["result"]["result"]) == set(cmd)
    status, body = await post_json(http, sim.webhook_url + "crm.deal.get", {"id": ids[2]})
    assert (status, body) == (200, wrong)
    status, body = await post_json(http, sim.webhook_url + "crm.deal.get", {"id": ids[1]})
    assert status == 200
    assert body["result"] == sim.portal.deal_wire(ids[1])


async def test_poison_fraction_is_deterministic_and_runtime_settable(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    a = await simulator(deals=400, seed=6, poison_fraction=0.05)
    b = await simulator(deals=400, seed=6, poison_fraction=0.05)
    picked_a = {i for i in a.portal.visible_ids if a.sim.api.poisoned(i)}
    picked_b = {i for i in b.portal.visible_ids if b.sim.api.poisoned(i)}
    assert picked_a == picked_b
    assert 0 < len(picked_a) < 60
    first = a.portal.visible_ids[0]
    a.set_poison([first])
    assert a.sim.api.poisoned(first)
    status, body = await post_json(http, a.webhook_url + "crm.deal.get", {"id": first})
    assert body["error"] == "WRONG_ENCODING"
    assert status == 200


async def test_poison_answer_500(simulator: SimulatorFactory, http: aiohttp.ClientSession) -> None:
    probe = await simulator(deals=40, seed=6, hidden_fraction=0.0)
    deal = probe.portal.visible_ids[0]
    sim = await simulator(
        deals=40,
        seed=6,
        hidden_fraction=0.0,
        poison_ids=frozenset({deal}),
        poison_answer="error_500",
    )
    status, body = await post_json(
        http, sim.webhook_url + "batch", {"cmd": {f"d{deal}": f"crm.deal.get?id={deal}"}}
    )
    assert status == 500
    assert body["error"] == "INTERNAL_SERVER_ERROR"


async def test_denied_code_and_status(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(
        deals=200, seed=6, hidden_fraction=0.1, denied_code="ACCESS_DENIED", denied_status=403
    )
    hidden = sim.portal.hidden_ids[0]
    good = sim.portal.visible_ids[0]
    denied = {"error": "ACCESS_DENIED", "error_description": "Access denied."}
    status, body = await post_json(http, sim.webhook_url + "crm.deal.get", {"id": hidden})
    assert (status, body) == (403, denied)
    cmd = {f"d{hidden}": f"crm.deal.get?id={hidden}", f"d{good}": f"crm.deal.get?id={good}"}
    status, body = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    assert status == 200  # inside a batch the refusal is one command's entry
    assert body["result"]["result_error"] == {f"d{hidden}": denied}
    assert list(body["result"]["result"]) == [f"d{good}"]
