"""Interim demo (`make demo`): start the simulator and show one real `batch` call against it.

Replaced by the export demo once `deal-export run` lands.
"""

from __future__ import annotations

import asyncio

import aiohttp

from pipeline.redact import mask_url
from pipeline.simulator import SimulatorConfig, running_simulator


async def _demo() -> None:
    async with running_simulator(SimulatorConfig(deals=500, seed=7)) as sim:
        ids = sim.portal.visible_ids[:3]
        missing = sim.portal.deleted_ids[0] if sim.portal.deleted_ids else sim.portal.max_id + 1
        cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in [*ids, missing]}
        deals = len(sim.portal.existing_ids)
        print(f"Simulated portal: {mask_url(sim.webhook_url)} ({deals} deals)")
        print(f"POST batch with {len(cmd)} crm.deal.get commands: {', '.join(cmd)}")
        async with (
            aiohttp.ClientSession() as session,
            session.post(sim.webhook_url + "batch", json={"halt": 0, "cmd": cmd}) as resp,
        ):
            body = await resp.json()
        result = body["result"]
        print(f"HTTP {resp.status}; top-level time: {body['time']['duration']:.4f} s")
        for key, deal in result["result"].items():
            print(f"  {key}: ok    ID={deal['ID']} TITLE={deal['TITLE']!r} "
                  f"OPPORTUNITY={deal['OPPORTUNITY']} {deal['CURRENCY_ID']} "
                  f"STAGE={deal['STAGE_ID']} DATE_MODIFY={deal['DATE_MODIFY']}")  # fmt: skip
        for key, err in result["result_error"].items():
            print(f"  {key}: error {err['error']!r} {err['error_description']!r}")
        print(f"result_time keys (failed commands have none): {sorted(result['result_time'])}")
        stats = sim.stats()
        print(f"Simulator stats: {stats['requests']} request(s), {stats['deals_served']} deal(s) "
              f"served, {stats['deal_gets']} crm.deal.get call(s)")  # fmt: skip


def main() -> None:
    asyncio.run(_demo())


if __name__ == "__main__":
    main()
