"""The `deal-export` entry point leaves what is alive at its end to the process's exit."""

from __future__ import annotations

import gc

import pytest

from pipeline.cli import main


def test_main_freezes_what_is_alive_before_the_interpreter_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.argv", ["deal-export", "--help"])
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process goes on collecting
    assert gc.get_freeze_count() == 0
