"""A local Bitrix24 portal for tests, benchmarks and demos (an aiohttp server on 127.0.0.1).

    async with running_simulator(SimulatorConfig(deals=2000, seed=7)) as sim:
        sim.webhook_url      # "http://127.0.0.1:<port>/rest/1/<secret>/"
        sim.portal.deal_wire(410)

It follows `bitrix24-api.md`, quirks included: PHP array serialisation in `batch`, `(int)` casts,
the wire formats of §5, the leaky bucket and operating-time limits, and seeded faults.
"""

from pipeline.simulator.config import (
    FAULT_KINDS,
    PLANS,
    FaultConfig,
    FaultKind,
    OAuthSettings,
    SimulatorConfig,
)
from pipeline.simulator.fields import USER_FIELD_KINDS
from pipeline.simulator.portal import Portal
from pipeline.simulator.server import RunningSimulator, Simulator, running_simulator

__all__ = [
    "FAULT_KINDS",
    "PLANS",
    "USER_FIELD_KINDS",
    "FaultConfig",
    "FaultKind",
    "OAuthSettings",
    "Portal",
    "RunningSimulator",
    "Simulator",
    "SimulatorConfig",
    "running_simulator",
]
