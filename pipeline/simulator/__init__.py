"""A local Bitrix24 portal for tests, benchmarks and demos (an aiohttp server on 127.0.0.1).

    async with running_simulator(SimulatorConfig(deals=2000, seed=7)) as sim:
        sim.webhook_url      # "http://127.0.0.1:<port>/rest/1/<secret>/"
        sim.portal.deal_wire(410)

It follows the real server, quirks included: PHP array serialisation in `batch`, `(int)` casts,
the `crm.deal.get` wire formats, the leaky bucket and operating-time limits, and seeded faults.
Sources: REST docs (`limits.md`, `settings/how-to-call-rest-api/batch.md`, `crm-deal-get.md`),
rest module `rest_provider.php` / `rest_util.php`, crm module `restservice.php`.

The handle (`RunningSimulator`):

* addresses: `webhook_url`, `base_url`, `secret`, `oauth_endpoint` (`<base>/rest/`),
  `token_url` (`<base>/oauth/token/`), `access_token`, `refresh_token`, `config`, `clock`;
* truth: `portal.deal_wire(id)`, `portal.deal_data(id)` (hidden deals too), `portal.fields()`,
  `portal.existing_ids` / `visible_ids` / `hidden_ids` / `deleted_ids`, `portal.status(id)`,
  `portal.date_modify(id)`, `stats()`;
* control: `set_faults(FaultConfig)`, `revoke_webhook()` / `restore_webhook()`,
  `expire_access_token()`, `touch(ids, at=None)`, `portal.delete(ids)`, `create(count)`,
  `restore(ids)`.

Over HTTP: `GET /_simulator/stats`, `GET /_simulator/deal/{id}` (the wire deal; header
`X-Deal-Status: visible|hidden`; 404 when deleted or missing), `GET /_simulator/clock`,
`POST /_simulator/touch`, `/_simulator/delete` and `/_simulator/restore` with
`{"ids": [...], "at": ts}`, `POST /_simulator/create` with `{"count": n, "at": ts}`.
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
