"""The token file writer: atomic, owner-only, one warning when there is nowhere to save."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from pipeline import token_file
from pipeline.config import OAuthAuth, WebhookAuth
from pipeline.token_file import TokenSaver, token_saver, write_private


def test_write_private_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]


def test_saver_masks_first_and_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"access_token": "a0", "refresh_token": "r0", "expires": 5, "x": 1}))
    masked: list[str] = []
    saver = TokenSaver(str(path), masked.append)
    saver.save("a1", "r1", None)
    assert masked == ["a1", "r1"]
    assert json.loads(path.read_text()) == {"access_token": "a1", "refresh_token": "r1", "x": 1}
    saver("a2", "r2")  # a plain on_tokens_rotated call works too
    assert json.loads(path.read_text())["refresh_token"] == "r2"
    assert saver.saved == 2


def test_without_a_token_file_one_warning_per_run(
    pipeline_logs: list[logging.LogRecord],
) -> None:
    masked: list[str] = []
    saver = TokenSaver(None, masked.append)
    saver.save("a1", "r1", 1)
    saver.save("a2", "r2", 2)
    warnings = [r for r in pipeline_logs if "cannot be saved" in r.getMessage()]
    assert len(warnings) == 1
    assert "--token-file" in warnings[0].getMessage()
    assert masked == ["a1", "r1", "a2", "r2"]


def test_an_unwritable_token_file_is_one_error_line_not_a_crash(
    tmp_path: Path, pipeline_logs: list[logging.LogRecord]
) -> None:
    saver = TokenSaver(str(tmp_path / "missing-dir" / "tokens.json"), lambda s: None)
    saver.save("a1", "r1", None)
    errors = [r.getMessage() for r in pipeline_logs if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "could not save the rotated OAuth tokens" in errors[0]
    assert "a1" not in errors[0]
    assert saver.saved == 0


def test_a_webhook_has_no_tokens_to_save() -> None:
    assert token_saver(WebhookAuth("https://p/rest/1/s/"), lambda s: None) is None
    oauth = OAuthAuth("https://p/rest/", "a", "r", "id", "secret", token_file="t.json")
    saver = token_saver(oauth, lambda s: None)
    assert saver is not None
    assert saver.path == Path("t.json")


async def test_the_write_back_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(token_file.os, "fsync", fsync)
    path = tmp_path / "tokens.json"
    masked: list[str] = []
    saver = TokenSaver(str(path), masked.append)
    await saver.rotated("a1", "r1", 7)
    assert masked == ["a1", "r1"]
    assert json.loads(path.read_text()) == {
        "access_token": "a1",
        "refresh_token": "r1",
        "expires": 7,
    }
    assert len(threads) == 2  # the file and its directory
    assert threading.get_ident() not in threads


def test_a_failed_save_is_tried_again_at_the_end_of_the_run(tmp_path: Path) -> None:
    directory = tmp_path / "later"
    saver = TokenSaver(str(directory / "tokens.json"), lambda s: None)
    assert saver.settle() is None  # nothing rotated, nothing to say
    saver.save("a1", "r1", None)
    saver.save("a2", "r2", 9)  # the newest pair is the one that matters
    assert saver.saved == 0
    directory.mkdir()
    assert saver.settle() is None
    assert json.loads((directory / "tokens.json").read_text()) == {
        "access_token": "a2",
        "refresh_token": "r2",
        "expires": 9,
    }
    assert saver.saved == 1
    assert saver.settle() is None  # once saved, nothing pending


def test_a_save_that_still_fails_at_the_end_is_one_line_without_tokens(tmp_path: Path) -> None:
    parent = tmp_path / "not-a-dir"
    parent.write_text("a file where the directory should be")  # fails as root too
    path = parent / "tokens.json"
    saver = TokenSaver(str(path), lambda s: None)
    saver.save("access-secret", "refresh-secret", None)
    problem = saver.settle()
    assert problem is not None
    assert "\n" not in problem
    assert f"could not be saved to {path}" in problem
    assert "Not a directory" in problem
    assert "data is complete" in problem
    assert "re-authorisation" in problem
    assert "access-secret" not in problem
    assert "refresh-secret" not in problem
