"""Scenario 7: no credential in any file, output line or log line the suite produced.

Runs last. It reads every file under the suite's workspace byte for byte (Parquet data, sidecar,
manifest, checkpoints, configs, ID files) and every Parquet file's values decoded as well (zstd
pages hide a string from a byte scan), every stdout and stderr of every `deal-export` process
(JSON logs included), and adds what earlier scenarios found in trees that are gone by now (the
unmounted tmpfs). Hunted: the webhook secret, the fake secrets of the bad-input URLs, and every
OAuth access and refresh token the portal issued (rotated ones included) plus the client secret.
The OAuth token file is the one place a token belongs; it is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from bench.chaos.harness import Context, Transcript, check
from bench.chaos.runner import Outcome, Scenario


def parquet_text(path: Path) -> str:
    """Every value of a Parquet file, decoded, as text (plus its key-value metadata); a file
    that does not decode yields "" (the byte scan still reads it)."""
    try:
        table = pq.read_table(path)
    except Exception:
        return ""
    meta = table.schema.metadata or {}
    values = [v.decode(errors="replace") for v in meta.values()]
    values.append(orjson.dumps(table.to_pydict(), default=str).decode())
    return "\n".join(values)


def scan_tree(
    root: Path, secrets: Iterable[str], *, skip: Iterable[Path] = ()
) -> tuple[list[str], int]:
    """(places where a secret occurs, files read) for every file under `root` but `skip`:
    raw bytes, and for Parquet files the decoded values too."""
    needles = [s for s in secrets if s]
    raw_needles = [s.encode() for s in needles]
    skipped = {p.resolve() for p in skip}
    hits: list[str] = []
    files = 0
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink() or path.resolve() in skipped:
            continue
        files += 1
        raw = path.read_bytes()
        hits.extend(f"file {path}" for n in raw_needles if n in raw)
        if path.suffix == ".parquet":
            text = parquet_text(path)
            hits.extend(f"decoded Parquet {path}" for n in needles if n in text)
    return hits, files


def scan_transcripts(
    transcripts: Iterable[Transcript], secrets: Iterable[str]
) -> tuple[list[str], int, int]:
    """(places where a secret occurs, lines read, JSON log lines) in the CLI's output."""
    needles = [s for s in secrets if s]
    hits: list[str] = []
    lines = json_lines = 0
    for t in transcripts:
        for stream, text in (("stdout", t.stdout), ("stderr", t.stderr)):
            for n, line in enumerate(text.splitlines(), 1):
                lines += 1
                json_lines += line.startswith("{")
                hits.extend(
                    f"{t.scenario} {t.args[0]} {stream} line {n}" for s in needles if s in line
                )
    return hits, lines, json_lines


def scan_scenario(ctx: Context, root: Path, secrets: Iterable[str]) -> tuple[int, int]:
    """The scan a scenario ends in: its own files under `root` and its own runs' output.
    Returns (files read, lines read); fails the scenario on any hit."""
    wanted = set(secrets)
    hits, files = scan_tree(root, wanted, skip=ctx.credential_files)
    own = [t for t in ctx.transcripts if t.scenario == ctx.scenario]
    said, lines, _ = scan_transcripts(own, wanted)
    hits.extend(said)
    check(own, "no deal-export output of this scenario to scan")
    check(not hits, f"a credential leaked in {len(hits)} places, e.g. {hits[:3]}")
    return files, lines


async def secret_scan(ctx: Context) -> Outcome:
    hits, files = scan_tree(ctx.work, ctx.secrets, skip=ctx.credential_files)
    hits.extend(ctx.early_hits)
    files += ctx.early_files
    said, lines, json_lines = scan_transcripts(ctx.transcripts, ctx.secrets)
    hits.extend(said)
    check(ctx.transcripts, "no deal-export output to scan: run the other scenarios first")
    parquet = sum(1 for _ in ctx.work.rglob("*.parquet"))
    check(parquet, "no Parquet file to scan: run the other scenarios first")
    check(not hits, f"a secret leaked in {len(hits)} places, e.g. {hits[:3]}")
    skipped = sum(1 for p in ctx.credential_files if p.exists())
    detail = (
        f"{len(ctx.secrets)} secrets absent from {files} files ({parquet} Parquet, also "
        f"decoded) and {lines} output lines ({json_lines} JSON log records) of "
        f"{len(ctx.transcripts)} runs"
        + (f"; {skipped} OAuth token files skipped" if skipped else "")
    )
    figures = {
        "secrets": len(ctx.secrets),
        "files": files,
        "parquet_files": parquet,
        "lines": lines,
        "json_log_lines": json_lines,
        "runs": len(ctx.transcripts),
        "token_files_skipped": skipped,
    }
    return Outcome(detail, figures)


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("secret-scan", secret_scan, limit_s=120)]
