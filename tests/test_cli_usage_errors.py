"""click's own usage errors (an extra argument, a bad choice) quote what was typed: through the
`deal-export` entry point a webhook URL in them is masked, in text and in JSON mode alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main

SECRET = "s3cr3tT0kenXYZ"
URL = f"https://portal.example/rest/1/{SECRET}/"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--ids", "ids.txt", "--out", "out", URL],  # the URL where no argument goes
        ["run", "--ids", "ids.txt", "--out", "out", "--plan", URL],  # not one of the choices
        ["retry", "out", URL],
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_click_usage_errors_mask_a_webhook_secret(
    args: list[str],
    as_json: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["deal-export", *args, *(["--log-format", "json"] if as_json else [])]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert "https://portal.example/rest/1/***/" in err
    if as_json:
        record = json.loads(err.strip().splitlines()[-1])
        assert record["exit_code"] == 2, record
    else:
        assert err.startswith("Usage: deal-export ")


def test_an_option_given_twice_with_different_values_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # click keeps the last of a repeated option: the first file's IDs would be dropped unsaid.
    monkeypatch.setattr(
        "sys.argv", ["deal-export", "run", "--ids", "a.txt", "--ids", "b.txt", "--out", "out"]
    )
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "Invalid value for '--ids': given 2 times ('a.txt', 'b.txt'); give it once" in (
        capsys.readouterr().err
    )


def test_an_option_repeated_with_the_same_value_is_that_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "sys.argv", ["deal-export", "run", "--ids", "a.txt", "--ids", "a.txt", "--out", "out"]
    )
    with pytest.raises(SystemExit) as exited:
        main()
    # Past the options: the run itself stops at the missing credentials.
    assert exited.value.code == 2
    assert "no portal credentials" in capsys.readouterr().err
