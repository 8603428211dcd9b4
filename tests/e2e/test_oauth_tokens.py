"""OAuth over two nights: the rotated pair is saved and masked, so the second run works too."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.simulator import FaultConfig, RunningSimulator
from tests.e2e.helpers import FAST, Completed, cli_env, files_containing, read_data, run_cli

IDS = ("--ids", "1-80", "--ids-format", "range")


def _oauth_env(sim: RunningSimulator, **extra: str) -> dict[str, str]:
    oauth = sim.config.oauth
    return cli_env(
        None,
        BITRIX24_OAUTH_ENDPOINT=sim.oauth_endpoint,
        BITRIX24_OAUTH_CLIENT_ID=oauth.client_id,
        BITRIX24_OAUTH_CLIENT_SECRET=oauth.client_secret,
        BITRIX24_OAUTH_TOKEN_URL=sim.token_url,
        **extra,
    )


def _token_file(tmp_path: Path, sim: RunningSimulator) -> Path:
    path = tmp_path / "tokens.json"
    pair = {"access_token": sim.access_token, "refresh_token": sim.refresh_token}
    path.write_text(json.dumps({**pair, "member_id": "kept as is"}))
    return path


def _temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".tokens.json")]


def _no_token_anywhere(tokens: set[str], runs: list[Completed], *roots: Path) -> None:
    for token in tokens:
        for done in runs:
            assert token not in done.stdout + done.stderr
        for root in roots:
            assert not files_containing(root, token), token


async def test_two_nights_with_a_refresh_in_each_both_succeed(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=80, seed=6)
    path = _token_file(tmp_path, sim)
    tokens = {sim.access_token, sim.refresh_token, sim.config.oauth.client_secret}
    env = _oauth_env(sim, BITRIX24_OAUTH_TOKEN_FILE=str(path))
    runs = []
    for night in (1, 2):
        sim.expire_access_token()  # the first call of the night answers expired_token
        done = await run_cli(
            ["run", *IDS, "--out", "out", "--existing-data-behavior", "overwrite", *FAST],
            env=env,
            cwd=tmp_path,
        )
        runs.append(done)
        assert done.code == 0, (night, done.stderr)
        assert sim.stats()["oauth_refreshes"] == night
        saved = json.loads(path.read_text())
        assert (saved["access_token"], saved["refresh_token"]) == (
            sim.access_token,
            sim.refresh_token,
        )
        assert isinstance(saved["expires"], int)
        assert saved["member_id"] == "kept as is"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        tokens |= {sim.access_token, sim.refresh_token}
    assert read_data(tmp_path / "out").num_rows == len(
        [i for i in sim.portal.visible_ids if i <= 80]
    )
    assert not _temp_files(tmp_path)
    _no_token_anywhere(tokens, runs, tmp_path / "out")


async def test_retry_saves_the_rotated_pair_too(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=80, seed=6)
    path = _token_file(tmp_path, sim)
    tokens = {sim.access_token, sim.refresh_token, sim.config.oauth.client_secret}
    env = _oauth_env(sim)
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    first = await run_cli(
        ["run", *IDS, "--out", "out", "--max-attempts", "1", "--token-file", str(path), *FAST],
        env=env,
        cwd=tmp_path,
    )
    assert first.code == 3, first.stderr
    sim.set_faults(FaultConfig())
    sim.expire_access_token()
    retried = await run_cli(
        ["retry", "out", "--token-file", str(path), *FAST[:-1]], env=env, cwd=tmp_path
    )
    assert retried.code == 0, retried.stderr
    assert sim.stats()["oauth_refreshes"] == 1
    assert json.loads(path.read_text())["refresh_token"] == sim.refresh_token
    tokens |= {sim.access_token, sim.refresh_token}
    sim.expire_access_token()
    night2 = await run_cli(
        ["run", *IDS, "--out", "out", "--existing-data-behavior", "overwrite", *FAST],
        env={**env, "BITRIX24_OAUTH_TOKEN_FILE": str(path)},
        cwd=tmp_path,
    )
    assert night2.code == 0, night2.stderr
    tokens |= {sim.access_token, sim.refresh_token}
    _no_token_anywhere(tokens, [first, retried, night2], tmp_path / "out")


async def test_tokens_from_the_environment_warn_once_that_they_cannot_be_saved(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=80, seed=6)
    tokens = {sim.access_token, sim.refresh_token, sim.config.oauth.client_secret}
    env = _oauth_env(
        sim,
        BITRIX24_OAUTH_ACCESS_TOKEN=sim.access_token,
        BITRIX24_OAUTH_REFRESH_TOKEN=sim.refresh_token,
    )
    sim.expire_access_token()
    done = await run_cli(["run", *IDS, "--out", "out", *FAST], env=env, cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert done.stderr.count("cannot be saved") == 1
    assert "--token-file" in done.stderr
    tokens |= {sim.access_token, sim.refresh_token}
    _no_token_anywhere(tokens, [done], tmp_path / "out")
    # What the warning is about: the next night's refresh token is dead.
    sim.expire_access_token()
    night2 = await run_cli(["run", *IDS, "--out", "out2", *FAST], env=env, cwd=tmp_path)
    assert night2.code == 1
    assert "invalid_grant" in night2.stderr
    _no_token_anywhere(tokens, [night2], tmp_path / "out2")


def _unwritable_after_refresh(
    sim: RunningSimulator, directory: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the moment the OAuth server rotates the pair (the exporter read the token file
    long before), nothing can be written in `directory`: it is made read-only, or (what
    works as root too) replaced by a plain file, so the token file's parent is not a
    directory any more."""
    tokens = sim.sim.tokens
    refresh: Callable[..., dict[str, Any]] = tokens.refresh

    def refresh_then_break(params: dict[str, str], now: float) -> dict[str, Any]:
        if how == "read-only":
            directory.chmod(0o500)
        else:
            shutil.move(directory, directory.with_name(directory.name + ".moved"))
            directory.write_text("not a directory any more\n")
        return refresh(params, now)

    monkeypatch.setattr(tokens, "refresh", refresh_then_break)


@pytest.mark.parametrize("how", ["read-only", "parent-is-a-file"])
async def test_rotated_tokens_that_cannot_be_saved_fail_the_run_after_the_data(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory; the parent-is-a-file case covers it")
    sim = await simulator(deals=80, seed=6)
    directory = tmp_path / "secrets"
    directory.mkdir()
    path = _token_file(directory, sim)
    tokens = {sim.access_token, sim.refresh_token, sim.config.oauth.client_secret}
    env = _oauth_env(sim, BITRIX24_OAUTH_TOKEN_FILE=str(path))
    _unwritable_after_refresh(sim, directory, how, monkeypatch)
    sim.expire_access_token()
    try:
        done = await run_cli(["run", *IDS, "--out", "out", *FAST], env=env, cwd=tmp_path)
    finally:
        if how == "read-only":
            directory.chmod(0o700)
    tokens |= {sim.access_token, sim.refresh_token}
    assert sim.stats()["oauth_refreshes"] == 1
    assert done.code == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("deal-export: error:")]
    assert len(errors) == 1, done.stderr
    assert "data is complete" in errors[0]
    assert f"could not be saved to {path}" in errors[0]
    assert "re-authorisation" in errors[0]
    assert "Traceback" not in done.stderr
    # The data was finished before the run failed.
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert read_data(tmp_path / "out").num_rows == len(
        [i for i in sim.portal.visible_ids if i <= 80]
    )
    _no_token_anywhere(tokens, [done], tmp_path / "out")
