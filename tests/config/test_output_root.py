"""An output root that starts like a URI but is not one is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import OutputConfig
from pipeline.errors import UsageError


@pytest.mark.parametrize("root", ["delta:/tmp/x", "s3:bucket/prefix", "file:/data", "s3:/b/p"])
def test_a_scheme_without_slashes_is_refused(root: str) -> None:
    scheme = root.split(":", 1)[0]
    with pytest.raises(UsageError, match=f"expected {scheme}://") as err:
        OutputConfig(root=root)
    assert "--table-format delta" in str(err.value)
    assert f"./{root}" in str(err.value)


@pytest.mark.parametrize(
    "root",
    ["s3://bucket/prefix", "file:///data/out", "./delta:/x", "out", "/abs/out", "a:b", "C:/x"],
)
def test_uris_paths_and_drive_letters_pass(root: str) -> None:
    assert OutputConfig(root=root).root == root


def test_the_cli_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    hook = "http://127.0.0.1:9/rest/1/secret/"
    result = CliRunner().invoke(
        cli,
        ["run", "--webhook", hook, "--ids", str(ids), "--out", "delta:/tmp/x"],
    )
    assert result.exit_code == 2, result.output
    assert "expected delta://" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt"]
