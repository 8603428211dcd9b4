"""Scenario 10: OAuth over two nights, the way a nightly job runs it.

Night 1 exports every deal (`--modified-since` far back) with the tokens in a token file; its
access token is made to expire mid-run, so the run refreshes, and the refresh rotates the
refresh token too (the docs, `settings/oauth/auto-renewal.md`: save the new pair). Then some
deals are edited, the night passes (the access token expires again), and night 2 runs
`--since-last-run` in the nightly `overwrite` mode: it can refresh only with the refresh token
night 1 saved. Both nights must exit 0 and pass the exactly-once audit.

The portal puts the caller's access token into every file URL it sends (crm `restservice.php`
`externalizeFile`), and a light fault mix adds error lines to the JSON logs. Every token the
portal issued (the first pair and every rotated one) and the client secret must be absent from
every output file (Parquet values decoded), the sidecar (two poison deals make sure there is
one each night), every log line and every message;
they join the suite's final scan too. The token file is where the tokens belong: it is skipped
by the scans and checked instead (the current pair, mode 0600, nothing else secret).
"""

from __future__ import annotations

import json
import random
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.chaos.audit import audit_output, read_data
from bench.chaos.harness import SECRET, Context, check, no_traceback
from bench.chaos.kills import PACED, _wait_for_commit
from bench.chaos.runner import Outcome, Scenario
from bench.chaos.secret_scan import scan_scenario
from pipeline.output import read_watermark
from pipeline.simulator import FaultConfig, OAuthSettings, RunningSimulator, SimulatorConfig
from pipeline.simulator import running_simulator as serve

#: Distinctive values, so a scan for them cannot be fooled by a coincidental substring.
SETTINGS = OAuthSettings(
    client_id="local.chaos0000000001",
    client_secret="chaosCl1entS3cretQ7wz",
    access_token="chaosAcc3ssT0kenN1ght0x",
    refresh_token="chaosRefr3shT0kenN1ght0x",
)
LIGHT_FAULTS = FaultConfig(error_500=0.02, html_503=0.02, reset=0.02, seed=17)
#: The exporter's default overlap (`[ids] overlap_s`): night 2 asks back this far.
OVERLAP_S = 300


class IssuedTokens:
    """Every token the simulated OAuth server handed out: the first pair plus each rotated
    pair, recorded as the server answers a refresh."""

    def __init__(self, sim: RunningSimulator) -> None:
        store = sim.sim.tokens
        self.values: set[str] = {store.access_token, store.refresh_token}
        refresh = store.refresh

        def recording(params: dict[str, str], now: float) -> dict[str, Any]:
            answer = refresh(params, now)
            self.values.update((answer["access_token"], answer["refresh_token"]))
            return answer

        store.refresh = recording  # type: ignore[method-assign]


def _env(ctx: Context, sim: RunningSimulator) -> dict[str, str]:
    return ctx.env(
        None,
        BITRIX24_OAUTH_ENDPOINT=sim.oauth_endpoint,
        BITRIX24_OAUTH_TOKEN_URL=sim.token_url,
        BITRIX24_OAUTH_CLIENT_ID=SETTINGS.client_id,
        BITRIX24_OAUTH_CLIENT_SECRET=SETTINGS.client_secret,
    )


def _check_token_file(path: Path, sim: RunningSimulator, night: int) -> None:
    """The file holds the portal's current pair (what the next refresh needs), 0600, and no
    other credential; keys it had besides the pair are kept."""
    check(stat.S_IMODE(path.stat().st_mode) == 0o600, f"night {night}: token file not 0600")
    saved = json.loads(path.read_text())
    pair = (saved.get("access_token"), saved.get("refresh_token"))
    check(pair == (sim.access_token, sim.refresh_token),
          f"night {night}: the token file does not hold the rotated pair")  # fmt: skip
    check(saved.get("member_id") == "kept as is", f"night {night}: the token file lost a key")
    check(SETTINGS.client_secret not in path.read_text(), "the client secret is in the token file")
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")]
    check(not leftovers, f"night {night}: token file temp files left: {leftovers}")


def _discovered(out: Path) -> set[int]:
    """The IDs the run discovered (kept in the output as `_deal_export/input.parquet`)."""
    return set(pq.read_table(out / "_deal_export" / "input.parquet").column("ID").to_pylist())


def _listed_since(sim: RunningSimulator, since: float) -> set[int]:
    """What `crm.deal.list` filtered on DATE_MODIFY >= since returns: the readable deals (row
    permissions leave hidden ones out of list answers, crm `restservice.php`)."""
    portal = sim.portal
    return {i for i in portal.visible_ids if portal.date_modify(i) >= since}


def _poison(poison: list[int], wanted: set[int]) -> dict[int, str | None]:
    return {p: "WRONG_ENCODING" for p in poison if p in wanted}


def _file_urls(out: Path) -> int:
    """File URLs in the data (so the scan has something to prove); none may carry `auth`."""
    data = read_data(out)
    urls = 0
    for name in data.column_names:
        if not name.startswith("UF_CRM_"):
            continue
        for value in data.column(name).to_pylist():
            files = value if isinstance(value, list) else [value]
            for item in files:
                if isinstance(item, dict) and "downloadUrl" in item:
                    urls += 1
                    check("auth=" not in str(item["downloadUrl"]), "a file URL kept auth=")
    return urls


async def _night(ctx: Context, args: list[str], env: dict[str, str], work: Path,
                 night: int, expire_mid_run: RunningSimulator | None) -> float:  # fmt: skip
    """Run one night to exit 0; its wall seconds."""
    started = time.monotonic()
    proc = await ctx.start(args, env=env, cwd=work)
    if expire_mid_run is not None:
        committed = await _wait_for_commit(work / "out", 0, proc, limit_s=30)
        check(committed, "night 1 committed no chunk before the forced expiry point")
        expire_mid_run.expire_access_token()
    done = await ctx.finish(proc, args, limit_s=150)
    no_traceback(done)
    check(done.code == 0, f"night {night} exited {done.code}: {done.tail()}")
    return time.monotonic() - started


async def oauth_two_nights(ctx: Context) -> Outcome:
    config = SimulatorConfig(
        deals=500 if ctx.quick else 2000,
        seed=91,
        secret=SECRET,
        oauth=SETTINGS,
        faults=LIGHT_FAULTS,
    )
    async with serve(config) as sim:
        issued = IssuedTokens(sim)
        rng = random.Random(ctx.seed + 91)
        # Two deals the portal cannot encode, so both nights write sidecar rows for the scan.
        poison = rng.sample(sim.portal.visible_ids, 2)
        sim.set_poison(poison)
        work = ctx.dir("oauth-two-nights")
        tokens = work / "tokens.json"
        pair = {"access_token": sim.access_token, "refresh_token": sim.refresh_token}
        tokens.write_text(json.dumps({**pair, "member_id": "kept as is"}))
        tokens.chmod(0o600)
        ctx.credential_files.add(tokens)
        out = work / "out"
        env = _env(ctx, sim)
        common = ["--out", "out", "--token-file", "tokens.json", "--log-format", "json", *PACED]

        night1 = ["run", "--modified-since", "2000-01-01T00:00:00+00:00", *common]
        seconds1 = await _night(ctx, night1, env, work, 1, expire_mid_run=sim)
        refreshes1 = int(sim.stats()["oauth_refreshes"])
        check(refreshes1 >= 1, "night 1: the forced expiry caused no refresh")
        check(
            sim.refresh_token != SETTINGS.refresh_token, "night 1: the refresh token did not rotate"
        )
        _check_token_file(tokens, sim, 1)
        wanted1 = _listed_since(sim, datetime(2000, 1, 1, tzinfo=UTC).timestamp())
        check(_discovered(out) == wanted1, "night 1 discovered other deals than the portal lists")
        audit1 = audit_output(out, sim.portal, wanted1, expected_failures=_poison(poison, wanted1))
        check(audit1.unanswerable == len(poison), "night 1 wrote no sidecar row to scan")
        urls1 = _file_urls(out)
        check(urls1, "night 1 exported no file URL: the token-in-URL path went untested")
        mark1 = read_watermark(str(out))
        check(mark1 is not None, "night 1 left no watermark")

        touched = rng.sample(sim.portal.visible_ids, 30) + rng.sample(sim.portal.hidden_ids, 2)
        touched.append(poison[0])
        sim.touch(touched)
        sim.expire_access_token()  # the night passes: the access token's hour is long over
        night2 = ["run", "--since-last-run", "--existing-data-behavior", "overwrite", *common]
        seconds2 = await _night(ctx, night2, env, work, 2, expire_mid_run=None)
        refreshes2 = int(sim.stats()["oauth_refreshes"]) - refreshes1
        check(refreshes2 >= 1, "night 2 did not refresh the expired access token")
        _check_token_file(tokens, sim, 2)
        since = datetime.fromisoformat(str(mark1)) - timedelta(seconds=OVERLAP_S)
        wanted2 = _listed_since(sim, since.timestamp())
        readable = set(touched) - set(sim.portal.hidden_ids)
        check(readable <= wanted2, "the touched deals are not all modified since night 1")
        check(_discovered(out) == wanted2, "night 2 discovered other deals than the portal lists")
        audit2 = audit_output(out, sim.portal, wanted2, expected_failures=_poison(poison, wanted2))
        check(audit2.unanswerable >= 1, "night 2 wrote no sidecar row to scan")
        mark2 = read_watermark(str(out))
        check(mark2 is not None and str(mark2) > str(mark1), "night 2 did not move the watermark")

        secrets = issued.values | {SETTINGS.client_secret}
        check(len(issued.values) >= 2 + 2 * (refreshes1 + refreshes2),
              "fewer tokens recorded than the refreshes issued")  # fmt: skip
        ctx.secrets.update(secrets)
        files, lines = scan_scenario(ctx, work, ctx.secrets)
        detail = (
            f"night 1: {refreshes1} refresh after the forced expiry, {audit1.describe()}; "
            f"night 2 (--since-last-run, {len(touched)} touched): {refreshes2} refresh, "
            f"{audit2.describe()}; both exit 0; {len(secrets)} credentials "
            f"({len(issued.values)} tokens, rotated ones included, and the client secret) "
            f"absent from {files} files and {lines} output lines, {urls1} file URLs without auth"
        )
        return Outcome(
            detail,
            {
                "deals": config.deals,
                "refreshes": [refreshes1, refreshes2],
                "night_seconds": [round(seconds1, 2), round(seconds2, 2)],
                "tokens_issued": len(issued.values),
                "night1": {
                    "exported": audit1.exported,
                    "failed_permanent": audit1.failed_permanent,
                },
                "night2": {
                    "touched": len(touched),
                    "exported": audit2.exported,
                    "failed_permanent": audit2.failed_permanent,
                },
                "file_urls": urls1,
                "scanned_files": files,
                "scanned_lines": lines,
                "faults": dict(sim.stats()["faults"]),
            },
        )


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("oauth-two-nights", oauth_two_nights, limit_s=120 if quick else 240)]
