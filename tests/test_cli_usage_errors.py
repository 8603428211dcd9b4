"""click's own usage errors (an extra argument, a bad choice) quote what was typed: through the
`deal-export` entry point a webhook URL in them is masked, in text and in JSON mode alike."""

from __future__ import annotations

import json

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
