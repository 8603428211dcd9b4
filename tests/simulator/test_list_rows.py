"""List rows built from templates (`Portal.list_rows`) against the field-by-field transform of
each record's get form (`ListPlan.row`), and what a failed command leaves behind.

The list path builds a row from its template's row plus the record's own values, so that it
never encodes or decodes a whole record; these tests pin it to the plain transform for every
user field type, every empty-multiple form, leads (whose empty multifields `build` drops),
touched deals and every kind of select.
"""

from __future__ import annotations

import gc

import aiohttp
import orjson
import pytest

from pipeline.simulator import RunningSimulator, SimulatorConfig
from pipeline.simulator.config import EMPTY_MULTIPLE_FORMS
from pipeline.simulator.fields import ALL_USER_FIELD_KINDS
from pipeline.simulator.listform import ListPlan
from pipeline.simulator.methods import NOT_FOUND, Outcome
from pipeline.simulator.portal import Portal
from pipeline.simulator.server import Simulator
from tests.simulator.conftest import post_json


def _selects(portal: Portal) -> list[list[str]]:
    names = list(portal.fields_meta)
    ufs = [n for n in names if n.startswith("UF_")]
    return [
        names,
        ["*", "UF_*"],
        ["*"],
        ["UF_*"],
        ["ID"],
        ["ID", "TITLE", "CONTACT_IDS", "NO_SUCH_FIELD"],
        ufs[::3],
    ]


@pytest.mark.parametrize("empty_multiple", EMPTY_MULTIPLE_FORMS)
@pytest.mark.parametrize("entity", ["deal", "lead"])
def test_rows_equal_the_transform_of_the_get_form(empty_multiple: str, entity: str) -> None:
    config = SimulatorConfig(
        deals=600, leads=600, seed=11, user_fields=ALL_USER_FIELD_KINDS,
        empty_multiple=empty_multiple,  # type: ignore[arg-type]
    )  # fmt: skip
    sim = Simulator(config)
    portal = sim.records(entity)
    portal.touch(portal.existing_ids[::7], at=1_760_000_000)
    ids = portal.existing_ids
    stored_empty_lists = empty_multiple == "empty_list"
    for select in _selects(portal):
        plan = ListPlan(portal.fields_meta, select, stored_empty_lists)
        fast = portal.list_rows(ids, plan)
        slow = [plan.row(data) for i in ids if (data := portal.deal_data(i)) is not None]
        # Byte equality: values, JSON types and key order.
        assert orjson.dumps(fast) == orjson.dumps(slow), select
        # A second pass comes from the cached template rows.
        assert orjson.dumps(portal.list_rows(ids, plan)) == orjson.dumps(slow), select


def test_plan_follows_the_select_masks() -> None:
    portal = Simulator(SimulatorConfig(deals=10, user_fields=ALL_USER_FIELD_KINDS)).portal
    meta = portal.fields_meta
    multiple = {n for n, (_, many, _) in meta.items() if many}
    every = ListPlan(meta, ["*", "UF_*"], False)
    assert "ID" in every.names
    assert not multiple & set(every.names)
    named = ListPlan(meta, list(meta), False)
    assert set(named.names) == set(meta) - {"CONTACT_IDS"}
    assert list(named.names) == [n for n in meta if n != "CONTACT_IDS"]  # fields order
    assert ListPlan(meta, ["TITLE"], False).names == ("ID", "TITLE")
    assert not ListPlan(meta, ["ID", "NO_SUCH_FIELD"], False).full


async def test_failed_commands_keep_no_frames_alive(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """The portal's errors are module-level instances: raising one again extends its
    traceback, which held every failed command's frames (and answers) for good."""
    missing = sim.portal.deleted_ids[:20]
    ok = sim.portal.visible_ids[:30]
    cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in [*ok, *missing]}
    gc.collect()
    before = sum(isinstance(o, Outcome) for o in gc.get_objects())
    for _ in range(20):
        status, body = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
        assert status == 200
        assert len(body["result"]["result_error"]) == len(missing)
    gc.collect()
    assert NOT_FOUND.__traceback__ is None
    assert sum(isinstance(o, Outcome) for o in gc.get_objects()) <= before
