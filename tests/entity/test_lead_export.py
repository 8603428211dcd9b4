"""Lead export end to end against the simulator, with the guarantees of deals: every ID exactly
once, typed columns (communication multifields included), sidecar reasons for missing and
hidden leads, resume after an interrupted run, retry, discovery, and the Python API."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline import OutputError, UsageError, export, retry
from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.entity import LEAD
from pipeline.normalise import EntitySchema, normalise_deals
from pipeline.normalise.convert import MULTIFIELD_TYPE
from pipeline.output import OutputRoot
from pipeline.run import export as run_export
from pipeline.simulator import FaultConfig, RunningSimulator
from pipeline.simulator.methods import MethodError
from pipeline.simulator.php import php_int
from tests.conftest import SimulatorFactory
from tests.e2e.helpers import FAST, accounted, cli_env, read_data, read_sidecar, run_cli

FAULT_MIX = FaultConfig(error_500=0.08, html_502=0.04, reset=0.02, truncated=0.02, seed=3)
UNLIMITED = LimitsConfig(rate=0, operating_budget_s=None)


def _lead_ids(tmp_path: Path, sim: RunningSimulator) -> tuple[Path, set[int]]:
    wanted = list(range(1, sim.leads.max_id + 20))  # past the end: never existed
    rng = random.Random(4)
    lines = [str(i) for i in wanted] + [str(rng.choice(wanted)) for _ in range(30)]
    rng.shuffle(lines)
    path = tmp_path / "leads.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, set(wanted)


def _expected(sim: RunningSimulator, ids: list[int]) -> pa.Table:
    """The simulator's truth, typed by the lead schema of its own fields."""
    schema = EntitySchema.from_fields(sim.leads.fields(), LEAD)
    table, _ = normalise_deals([sim.leads.deal_wire(i) for i in ids], schema, ids=ids)
    return table


def _read_json(path: str) -> Any:
    return json.loads(Path(path).read_text())


def _messages(root: Path) -> dict[int, str]:
    side = read_sidecar(root)
    fetch = side.filter(pc.equal(side.column("stage"), "fetch"))
    return dict(
        zip(fetch.column("id").to_pylist(), fetch.column("message").to_pylist(), strict=True)
    )


async def test_cli_lead_export_under_faults_is_exactly_once_typed_and_explained(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=40, leads=500, seed=11, hidden_fraction=0.05, faults=FAULT_MIX)
    ids_path, wanted = _lead_ids(tmp_path, sim)
    out = tmp_path / "leads"
    done = await run_cli(
        ["run", "--entity", "lead", "--ids", str(ids_path), "--out", str(out),
         "--chunk-size", "120", "--batch-size", "10", *FAST],
        env=cli_env(sim),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert sum(sim.stats()["faults"].values()) > 0, "the fault mix never fired"

    data_ids, fetch_ids = accounted(out)
    assert len(data_ids) == len(set(data_ids)), "a lead was written twice"
    assert len(fetch_ids) == len(set(fetch_ids)), "a failure was recorded twice"
    assert set(data_ids) | set(fetch_ids) == wanted
    assert set(data_ids) == set(sim.leads.visible_ids) & wanted

    # Sidecar reasons: the portal's own texts for hidden and missing leads.
    messages = _messages(out)
    hidden = set(sim.leads.hidden_ids) & wanted
    assert hidden
    assert {messages[i] for i in hidden} == {"Access denied."}
    assert {messages[i] for i in set(fetch_ids) - hidden} == {"Not found"}

    # Typed exactly as the lead schema types the simulator's own answers.
    expected = _expected(sim, sorted(data_ids))
    got = read_data(out).sort_by("ID").select(expected.column_names)
    assert got.schema.field("PHONE").type == pa.list_(pa.field("element", MULTIFIELD_TYPE))
    assert pa.types.is_decimal(got.schema.field("OPPORTUNITY").type)
    assert got.to_pylist() == expected.to_pylist()
    assert any(row for row in got.column("PHONE").to_pylist()), "no lead had a phone"

    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["config"]["entity"] == "lead"
    assert manifest["input_fingerprint"].startswith("lead:")
    assert "unique lead IDs" in done.stdout
    assert "deal" not in done.stdout.replace("deal-export", "")
    assert "deleted or hidden leads" in done.stdout


def _config(sim: RunningSimulator, root: Path, behavior: str = "error", **fetch: Any) -> RunConfig:
    return RunConfig(
        auth=WebhookAuth(sim.webhook_url),
        output=OutputConfig(root=str(root), existing_data_behavior=behavior, chunk_size=40),  # type: ignore[arg-type]
        limits=UNLIMITED,
        fetch=FetchConfig(**fetch),
        entity="lead",
    )


class _Stop(BaseException):
    """Stands for the process dying after some chunks."""


async def test_an_interrupted_lead_export_resumes_exactly_once(
    simulator: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator(deals=30, leads=200, seed=8)
    ids = IdsConfig(source=f"1-{sim.leads.max_id}", format="range")
    root = tmp_path / "out"
    real = OutputRoot.write_chunk
    written = 0

    def write_chunk(self: OutputRoot, *args: Any, **kw: Any) -> dict[str, Any]:
        nonlocal written
        if written == 2:
            raise _Stop
        written += 1
        return real(self, *args, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(OutputRoot, "write_chunk", write_chunk)
        with pytest.raises(_Stop):
            await run_export(_config(sim, root), ids)
    resumed = await run_export(_config(sim, root), ids)
    assert resumed.resumed
    assert resumed.chunks_skipped == 2
    assert resumed.exit_code == 0
    assert resumed.entity == "lead"
    data_ids, fetch_ids = accounted(root)
    assert sorted(data_ids) == sim.leads.visible_ids
    assert len(fetch_ids) == len(set(fetch_ids))
    assert set(data_ids) | set(fetch_ids) == set(range(1, sim.leads.max_id + 1))
    assert read_data(root).sort_by("ID").select(["ID", "PHONE"]).to_pylist() == (
        _expected(sim, sim.leads.visible_ids).select(["ID", "PHONE"]).to_pylist()
    )


def _fail_lead_gets(sim: RunningSimulator, ids: set[int]) -> None:
    """Make `crm.lead.get` of `ids` answer a server fault on every attempt until restored."""
    api = sim.sim.api
    real = api._methods["crm.lead.get"]

    def lead_get(params: dict[Any, Any]) -> Any:
        if php_int(params.get("ID", params.get("id"))) in ids:
            raise MethodError(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        return real(params)

    api._methods["crm.lead.get"] = lead_get
    sim.sim.restore_lead_get = lambda: api._methods.__setitem__("crm.lead.get", real)  # type: ignore[attr-defined]


async def test_retry_uses_the_outputs_entity_and_refuses_another(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=30, leads=150, seed=9)
    flaky = set(sim.leads.visible_ids[::7])
    _fail_lead_gets(sim, flaky)
    root = tmp_path / "out"
    ids = IdsConfig(source=f"1-{sim.leads.max_id}", format="range")
    first = await run_export(_config(sim, root, max_attempts=1, batch_size=10), ids)
    assert first.exit_code == 3
    assert sum(first.counts.failed_retryable.values()) == len(flaky)

    refused = await run_cli(["retry", str(root), "--entity", "deal", *FAST], env=cli_env(sim),
                            cwd=tmp_path)  # fmt: skip
    assert refused.code == 2, refused.stderr
    assert "holds leads, not deals" in refused.stderr
    assert "Traceback" not in refused.stderr

    sim.sim.restore_lead_get()  # type: ignore[attr-defined]
    done = await run_cli(["retry", str(root), *FAST], env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    data_ids, fetch_ids = accounted(root)
    assert sorted(data_ids) == sim.leads.visible_ids
    assert not flaky & set(fetch_ids)
    assert len(data_ids) == len(set(data_ids))


async def test_lead_discovery_finds_the_modified_leads_only(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=80, leads=80, seed=12, hidden_fraction=0.1)
    now = sim.clock.now()
    touched = sim.leads.visible_ids[2:9]
    sim.touch(touched + sim.leads.hidden_ids[:1], at=now, entity="lead")
    sim.touch([i for i in sim.portal.visible_ids if i not in touched][:5], at=now)  # deals
    since = datetime.fromtimestamp(now - 60, UTC).isoformat(timespec="seconds")
    found = await run_cli(
        ["ids", "--entity", "lead", "--modified-since", since, "--overlap", "0", *FAST],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert found.code == 0, found.stderr
    assert [int(line) for line in found.stdout.split()] == touched
    assert f"{len(touched)} lead IDs" in found.stderr
    assert sim.stats()["by_method"].get("crm.deal.list") is None
    assert sim.stats()["by_method"]["crm.lead.list"] >= 1

    out = tmp_path / "out"
    done = await run_cli(
        ["run", "--entity", "lead", "--modified-since", since, "--out", str(out), *FAST],
        env=cli_env(sim, DEAL_EXPORT_IDS_OVERLAP_S="0"),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert sorted(read_data(out).column("ID").to_pylist()) == touched


async def test_the_python_api_exports_leads(sim: RunningSimulator, tmp_path: Path) -> None:
    out = str(tmp_path / "leads")
    wanted = sim.leads.visible_ids[:40] + sim.leads.deleted_ids[:2]
    fast: dict[str, Any] = {"rate": 0, "operating_budget": "off", "webhook_url": sim.webhook_url}
    result = await asyncio.to_thread(lambda: export(out=out, entity="lead", ids=wanted, **fast))
    assert result.ok
    assert result.exported == 40
    assert result.failed_permanent == 2
    assert _read_json(result.manifest)["config"]["entity"] == "lead"
    assert sorted(accounted(Path(out))[0]) == sim.leads.visible_ids[:40]
    with pytest.raises(UsageError, match="holds leads, not deals"):
        await asyncio.to_thread(lambda: retry(out=out, entity="deal", **fast))
    # The same IDs as deals are another input: never resumed into (or mixed with) the leads.
    with pytest.raises(OutputError):
        await asyncio.to_thread(
            lambda: export(out=out, ids=wanted, existing_data_behavior="resume", **fast)
        )
    assert sorted(accounted(Path(out))[0]) == sim.leads.visible_ids[:40]
