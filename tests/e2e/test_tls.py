"""TLS for on-premise portals: --ca-bundle is honoured, --no-verify-tls warns once.

The portal is the simulator served over HTTPS on 127.0.0.1 with a self-signed certificate
made for this test by the `openssl` command (neither `trustme` nor `cryptography` is a
dependency); the test is skipped where `openssl` is missing.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from pipeline.simulator import SimulatorConfig
from pipeline.simulator.server import Simulator
from tests.e2e.helpers import FAST, cli_env, run_cli

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

WARNING = "TLS certificate verification is off"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "portal-ca.pem", tmp_path / "portal-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@contextlib.asynccontextmanager
async def https_portal(cert: Path, key: Path, deals: int) -> AsyncIterator[str]:
    """The simulator behind TLS; yields its webhook URL."""
    sim = Simulator(SimulatorConfig(deals=deals, seed=3))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(sim.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"https://127.0.0.1:{port}/rest/{sim.config.user_id}/{sim.secret}/"
    finally:
        await runner.cleanup()


async def _export(tmp_path: Path, url: str, out: str, *extra: str):
    env = cli_env(None, BITRIX24_WEBHOOK_URL=url)
    args = ["run", "--ids", "1-20", "--ids-format", "range", "--out", out, *FAST, *extra]
    return await run_cli(args, env=env, cwd=tmp_path)


async def test_a_ca_bundle_is_honoured_and_an_unknown_ca_refused(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with https_portal(cert, key, deals=20) as url:
        refused = await _export(tmp_path, url, "a")
        trusted = await _export(tmp_path, url, "b", "--ca-bundle", str(cert))
    assert refused.code == 1, refused.stderr
    assert "ca_bundle" in refused.stderr  # the hint for an on-premise portal's own CA
    assert trusted.code == 0, trusted.stderr
    assert WARNING not in trusted.stderr
    assert (tmp_path / "b" / "_SUCCESS").exists()


async def test_no_verify_tls_works_and_warns_once(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with https_portal(cert, key, deals=20) as url:
        done = await _export(tmp_path, url, "out", "--no-verify-tls")
    assert done.code == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if WARNING in line]
    assert len(warnings) == 1, done.stderr
    assert "--no-verify-tls" in warnings[0]


async def test_verify_tls_from_the_config_file_names_its_key(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "onprem.toml").write_text("[transport]\nverify_tls = false\n")
    async with https_portal(cert, key, deals=20) as url:
        done = await _export(
            tmp_path, url, "out", "--config", "onprem.toml", "--log-format", "json"
        )
    assert done.code == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if WARNING in line]
    assert len(warnings) == 1, done.stderr
    assert "[transport].verify_tls" in warnings[0]
    assert '"level": "warning"' in warnings[0] or '"level":"warning"' in warnings[0]
