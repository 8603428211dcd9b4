"""Scenario 7: the webhook secret in no file, no output line and no log line the suite produced.

Runs last. It reads every file under the suite's workspace byte for byte (Parquet data, sidecar,
manifest, checkpoints, configs, ID files), every stdout and stderr of every `deal-export` process
(JSON logs included), and adds what earlier scenarios found in trees that are gone by now (the
unmounted tmpfs). The fake secrets of the bad-input URLs are hunted too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bench.chaos.harness import Context, check
from bench.chaos.runner import Outcome, Scenario


def scan_tree(root: Path, secrets: Iterable[str]) -> tuple[list[str], int]:
    """(places where a secret occurs, files read) for every file under `root`."""
    needles = [s.encode() for s in secrets]
    hits: list[str] = []
    files = 0
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        files += 1
        raw = path.read_bytes()
        hits.extend(f"file {path}" for n in needles if n in raw)
    return hits, files


async def secret_scan(ctx: Context) -> Outcome:
    hits, files = scan_tree(ctx.work, ctx.secrets)
    hits.extend(ctx.early_hits)
    files += ctx.early_files
    lines = json_lines = 0
    for t in ctx.transcripts:
        for stream, text in (("stdout", t.stdout), ("stderr", t.stderr)):
            for n, line in enumerate(text.splitlines(), 1):
                lines += 1
                json_lines += line.startswith("{")
                hits.extend(
                    f"{t.scenario} {t.args[0]} {stream} line {n}" for s in ctx.secrets if s in line
                )
    check(ctx.transcripts, "no deal-export output to scan: run the other scenarios first")
    parquet = sum(1 for _ in ctx.work.rglob("*.parquet"))
    check(parquet, "no Parquet file to scan: run the other scenarios first")
    check(not hits, f"a secret leaked in {len(hits)} places, e.g. {hits[:3]}")
    detail = (
        f"{len(ctx.secrets)} secrets absent from {files} files ({parquet} Parquet) and "
        f"{lines} output lines ({json_lines} JSON log records) of {len(ctx.transcripts)} runs"
    )
    figures = {
        "secrets": len(ctx.secrets),
        "files": files,
        "parquet_files": parquet,
        "lines": lines,
        "json_log_lines": json_lines,
        "runs": len(ctx.transcripts),
    }
    return Outcome(detail, figures)


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("secret-scan", secret_scan, limit_s=120)]
