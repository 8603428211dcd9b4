"""The token file writer: atomic, owner-only, one warning when there is nowhere to save."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import OAuthAuth, WebhookAuth
from pipeline.token_file import TokenSaver, token_saver, write_private


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def pipeline_logs() -> Iterator[list[logging.LogRecord]]:
    """Records of the `pipeline` loggers (which do not propagate once the CLI set them up)."""
    logger = logging.getLogger("pipeline")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


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
