"""The reliability suite (`make chaos`): the real `deal-export` process against a misbehaving
simulated portal, each scenario ending in an audit of its output.

    .venv/bin/python -m bench.chaos            # the full suite -> bench/results/chaos.json
    .venv/bin/python -m bench.chaos --quick    # the CI subset (tests/chaos), about 75 s on 2 cores

Scenarios, in order (one module each):
    faults      1. the fault mix: 500, HTML 502/503/504, resets, truncated, slow, no `time`
    storms      2. rate-limit and operating-limit storms below what the client was told
    kills       3. kill -9 at random moments, resumed, ten cycles (three with --quick)
    webhook     4. the webhook revoked mid-run, then restored and resumed
    disk        5. the disk filling up under the output root, then space coming back
    inputs      6. a table of bad inputs, each with its exit code and message
    empties     8. real empties: every empty multiple form over every multiple UF type
    poison      9. poison deals (WRONG_ENCODING, repeating 500) isolated among thousands
    oauth      10. OAuth over two nights: an expiry mid-run, the rotated pair saved
    secret_scan 7. no webhook secret, OAuth token or client secret in any file, line or log
                   (runs last)
"""

from __future__ import annotations

from bench.chaos.runner import Scenario


def all_scenarios(quick: bool) -> list[Scenario]:
    from bench.chaos import (
        disk,
        empties,
        faults,
        inputs,
        kills,
        oauth,
        poison,
        secret_scan,
        storms,
        webhook,
    )

    return [
        *faults.scenarios(quick),
        *storms.scenarios(quick),
        *kills.scenarios(quick),
        *webhook.scenarios(quick),
        *disk.scenarios(quick),
        *inputs.scenarios(quick),
        *empties.scenarios(quick),
        *poison.scenarios(quick),
        *oauth.scenarios(quick),
        *secret_scan.scenarios(quick),
    ]


__all__ = ["all_scenarios"]
