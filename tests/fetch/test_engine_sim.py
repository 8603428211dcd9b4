"""The fetch engine over real HTTP against the simulator: completeness under faults, fatal
errors, OAuth refresh, cancellation, batch size 1, discovery."""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.clock import ScaledClock
from pipeline.config import FetchConfig, LimitsConfig, OAuthAuth, WebhookAuth
from pipeline.errors import FatalPortalError
from pipeline.fetch import PortalClient, discover_modified_ids, fetch_batches, fetch_deals
from pipeline.fetch import engine as engine_module
from pipeline.outcomes import DealFailed, DealFetched, FetchOutcome
from pipeline.simulator import FaultConfig, SimulatorConfig, running_simulator

from .helpers import aiter_ids, client_sockets_to, fetch_all, fetch_tasks

UNLIMITED = LimitsConfig(rate=0, operating_budget_s=None)
SCALE = 20.0


def fast_fetch(**kw: object) -> FetchConfig:
    values: dict[str, object] = {"max_attempts": 8, "backoff_base_s": 0.5, "backoff_max_s": 4.0}
    values.update(kw)
    return FetchConfig(**values)  # type: ignore[arg-type]


def check_outcomes(sim, requested: list[int], outcomes: list) -> None:  # type: ignore[no-untyped-def]
    ids = [o.id for o in outcomes]
    assert len(ids) == len(set(ids)), "an ID got two outcomes"
    assert set(ids) == set(requested), "an ID got no outcome"
    for o in outcomes:
        wire = sim.portal.deal_wire(o.id)
        if isinstance(o, DealFetched):
            assert o.payload == wire
            assert o.attempts >= 1
        else:
            assert isinstance(o, DealFailed)
            assert wire is None, f"{o.id} exists but failed: {o}"
            assert o.error_class == "permanent"
            assert o.retryable is False
            assert o.code == ""
            expected = "Access denied." if o.id in hidden else "Not found"
            assert o.message == expected


hidden: set[int] = set()


@pytest.mark.parametrize("batch_size", [50, 1])
async def test_fault_mix_every_id_exactly_once(
    batch_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The mix by probability, plus a script so that every kind surely happens in a short run.
    script = {
        2: "reset",
        3: "truncated",
        4: "html_502",
        5: "error_500",
        6: "slow",
        7: "no_time",
        8: "html_504",
        9: "reset",
    }
    faults = FaultConfig(
        error_500=0.05,
        html_502=0.02,
        reset=0.01,
        truncated=0.01,
        slow=0.01,
        slow_s=2.0,
        seed=11,
        script=script,  # type: ignore[arg-type]
    )
    deals = 1500 if batch_size == 50 else 250
    cfg = SimulatorConfig(deals=deals, seed=7, faults=faults, time_scale=SCALE)
    async with running_simulator(cfg) as sim:
        hidden.clear()
        hidden.update(sim.portal.hidden_ids)
        top = sim.portal.max_id + 25  # some IDs never existed
        requested = list(range(1, top + 1))
        stream: list[int] = []
        for i in requested:
            stream.append(i)
            if i % 37 == 0:
                stream.append(i)  # adjacent duplicate
            if i % 41 == 0 and i > 3:
                stream.append(i - 2)  # near duplicate, still in flight
        client = PortalClient(
            WebhookAuth(sim.webhook_url),
            limits=UNLIMITED,
            fetch=fast_fetch(batch_size=batch_size),
            clock=ScaledClock(SCALE),
        )
        async with client:
            outcomes = await asyncio.wait_for(fetch_all(client, stream), 40)
        check_outcomes(sim, requested, outcomes)
        assert any(isinstance(o, DealFailed) for o in outcomes)
        assert any(o.id in hidden for o in outcomes if isinstance(o, DealFailed))
        served = sim.stats()["faults"]
        for kind in ("error_500", "html_502", "reset", "truncated", "slow", "no_time"):
            assert served.get(kind, 0) > 0, f"fault {kind} never injected: {served}"
        assert client.stats.transient_errors > 0
        assert sim.secret not in caplog.text
        assert all(sim.secret not in o.message for o in outcomes if isinstance(o, DealFailed))
        assert client.stats.retries > 0


async def test_no_read_permission_is_permanent_per_id() -> None:
    cfg = SimulatorConfig(deals=100, seed=3, can_read_deals=False)
    async with (
        running_simulator(cfg) as sim,
        PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED) as client,
    ):
        outcomes = await fetch_all(client, range(1, 60))
    assert len(outcomes) == 59
    assert all(isinstance(o, DealFailed) and o.error_class == "permanent" for o in outcomes)
    assert {o.message for o in outcomes if isinstance(o, DealFailed)} <= {
        "Access denied.",
        "Access denied",
    }


async def test_revoked_webhook_stops_promptly_with_secret_masked() -> None:
    async with running_simulator(SimulatorConfig(deals=3000, seed=5)) as sim:
        client = PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED)
        seen = 0
        loop = asyncio.get_running_loop()
        revoked_at = 0.0

        async def consume() -> None:
            nonlocal seen, revoked_at
            async with aclosing(fetch_deals(aiter_ids(range(1, 3000)), client)) as stream:
                async for _ in stream:
                    seen += 1
                    if seen == 100:
                        sim.revoke_webhook()
                        revoked_at = loop.time()

        async with client:
            with pytest.raises(FatalPortalError) as info:
                await consume()
            stopped_in = loop.time() - revoked_at
            assert not fetch_tasks()
        assert stopped_in < 3.0
        msg = str(info.value)
        assert "NO_AUTH_FOUND" in msg
        assert "webhook" in msg  # says what to fix
        assert sim.secret not in msg
        assert "/rest/1/***/" in msg
        assert info.value.code == "NO_AUTH_FOUND"


async def test_wrong_secret_and_unknown_method_are_fatal() -> None:
    async with running_simulator(SimulatorConfig(deals=10, seed=5)) as sim:
        bad = sim.webhook_url.replace(sim.secret, "wrongsecret123")
        async with PortalClient(WebhookAuth(bad), limits=UNLIMITED) as client:
            with pytest.raises(FatalPortalError) as info:
                await fetch_all(client, [1, 2, 3])
            assert "wrongsecret123" not in str(info.value)
        async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED) as client:
            with pytest.raises(FatalPortalError) as info2:
                await client.call("crm.deal.nosuchmethod")
            assert info2.value.code == "ERROR_METHOD_NOT_FOUND"
            assert sim.secret not in str(info2.value)
            assert "method" in str(info2.value)


async def test_oauth_expiry_mid_run_refreshes_once_and_hands_tokens_back() -> None:
    cfg = SimulatorConfig(deals=2000, seed=9)
    async with running_simulator(cfg) as sim:
        rotated: list[tuple[str, str]] = []
        auth = OAuthAuth(
            endpoint=sim.oauth_endpoint,
            access_token=sim.access_token,
            refresh_token=sim.refresh_token,
            client_id=cfg.oauth.client_id,
            client_secret=cfg.oauth.client_secret,
            token_url=sim.token_url,
        )
        old_access, old_refresh = auth.access_token, auth.refresh_token
        client = PortalClient(
            auth,
            limits=UNLIMITED,
            fetch=FetchConfig(concurrency=6),
            on_tokens_rotated=lambda a, r: rotated.append((a, r)),
        )
        requested = sim.portal.existing_ids[:1500]
        outcomes = []
        async with client:
            async for outcome in fetch_deals(aiter_ids(requested), client):
                outcomes.append(outcome)
                if len(outcomes) == 300:
                    sim.expire_access_token()
        assert sim.stats()["oauth_refreshes"] == 1
        assert len(rotated) == 1
        assert rotated[0] == (sim.access_token, sim.refresh_token)
        assert rotated[0] != (old_access, old_refresh)
        assert client.stats.token_refreshes == 1
        assert sorted(o.id for o in outcomes) == sorted(requested)
        hidden_ids = set(sim.portal.hidden_ids)
        assert all(isinstance(o, DealFetched) for o in outcomes if o.id not in hidden_ids)


async def test_cancellation_leaves_no_task_and_no_connection() -> None:
    # A rate-limited portal keeps the fetch busy for a long time; we cancel it mid-way.
    cfg = SimulatorConfig(deals=3000, seed=2, rate=2.0, burst=50)
    async with running_simulator(cfg) as sim:
        client = PortalClient(
            WebhookAuth(sim.webhook_url),
            limits=LimitsConfig(rate=2.0, burst=8, operating_budget_s=None),
            fetch=FetchConfig(concurrency=4),
        )
        got: list[object] = []

        async def consume() -> None:
            async for outcome in fetch_deals(aiter_ids(range(1, 3000)), client):
                got.append(outcome)

        async with client:
            task = asyncio.create_task(consume())
            for _ in range(200):
                if len(got) >= 120:
                    break
                await asyncio.sleep(0.02)
            assert got, "nothing fetched before the cancel"
            assert client_sockets_to(sim.port) > 0
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not fetch_tasks()
        await asyncio.sleep(0)
        assert client.transport.closed
        assert client_sockets_to(sim.port) == 0
        assert not fetch_tasks()


async def test_discover_modified_ids_keyset_paging() -> None:
    async with running_simulator(SimulatorConfig(deals=400, seed=4)) as sim:
        now = sim.clock.now()
        touched = sim.portal.existing_ids[5:180:2]
        sim.touch(touched, at=now)
        since = datetime.fromtimestamp(now - 5, tz=UTC).astimezone(
            __import__("datetime").timezone(timedelta(hours=-5))
        )
        async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED) as client:
            found = [i async for i in discover_modified_ids(client, since, timedelta(0))]
        threshold = int(now - 5)
        expected = [
            i
            for i in sim.portal.existing_ids
            if sim.portal.readable(i) and sim.portal.date_modify(i) >= threshold
        ]
        assert found == expected
        assert set(touched) & set(sim.portal.visible_ids) <= set(found)
        assert len(found) > 50  # more than one page


async def test_batches_hand_over_each_id_once_and_bound_the_payloads_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow consumer: the engine may not run ahead of it by more than its payload credits,
    # however many IDs are left (get commands executed by the portal, less the outcomes taken).
    monkeypatch.setattr(engine_module, "PAYLOAD_CREDITS", 120)
    cfg = SimulatorConfig(deals=900, seed=5)
    async with running_simulator(cfg) as sim:
        hidden.clear()
        hidden.update(sim.portal.hidden_ids)
        requested = list(range(1, 901))
        client = PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED)
        outcomes: list[FetchOutcome] = []
        ahead: list[int] = []
        async with client, aclosing(fetch_batches(requested, client)) as batches:
            async for batch in batches:
                assert batch.ids == sorted(batch.ids)  # request order (the input ascends)
                assert len(batch.payloads) == len(batch.attempts) == len(batch.ids)
                assert len(batch) > 0
                outcomes += batch.outcomes()
                await asyncio.sleep(0.01)  # the engine works meanwhile
                ahead.append(sim.stats()["deal_gets"] - len(outcomes))
        check_outcomes(sim, requested, outcomes)
    # Credits are taken before a batch is sent and given back once the next batch is asked
    # for: at most the credits' worth of commands answered and not yet taken.
    assert max(ahead) <= 120
    assert len(ahead) >= 900 // 50
