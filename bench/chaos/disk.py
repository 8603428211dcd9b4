"""Scenario 5: the disk fills up under the output root, then space comes back.

The output root lives on a small tmpfs (`mount -t tmpfs -o size=...`, which needs root) whose
free space is cut, with a filler file, to a fraction of what the export needs. The run must fail
cleanly (exit 1, a one-line message, no traceback), leave nothing half-written where a reader
looks, and once the filler is gone the same command must complete with every ID exactly once.

Where mounting is impossible (not root, no tmpfs), the substitute is RLIMIT_FSIZE on the child:
writes past the limit fail with EFBIG instead of ENOSPC. That proves the same clean failure and
resume on a write error, but not the filesystem-full path itself; the detail line says which ran.
"""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.chaos.audit import audit_output, check_readable, temp_files
from bench.chaos.harness import SECRET, UNPACED, Context, Findings, check, no_traceback
from bench.chaos.runner import Outcome, Scenario
from bench.chaos.secret_scan import scan_tree
from pipeline.simulator import SimulatorConfig, running_simulator

#: Seconds after which a run on a full disk counts as hung (an unpaced run takes about two).
HANG_S = 12.0


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _may_mount() -> bool:
    # CHAOS_NO_MOUNT=1 forces the substitute (to exercise it where mounting works).
    return os.geteuid() == 0 and os.environ.get("CHAOS_NO_MOUNT") != "1"


def _mount_tmpfs(path: Path, size: int) -> bool:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "chaos-tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _umount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        # Busy (a child still holds a file): detach now, the kernel frees it when released.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(mount: Path, leave: int) -> Path:
    """Write a filler file so that about `leave` bytes stay free on the mount."""
    st = os.statvfs(mount)
    free = st.f_bavail * st.f_frsize
    filler = mount / "filler.bin"
    with filler.open("wb") as f:
        remaining = max(0, free - leave)
        block = b"\0" * (1 << 20)
        while remaining > 0:
            n = min(remaining, len(block))
            f.write(block[:n])
            remaining -= n
    return filler


def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


async def disk_full(ctx: Context) -> Outcome:
    config = SimulatorConfig(deals=1200 if ctx.quick else 3000, seed=51, secret=SECRET)
    # Share of the export's size left free: mid-run, and (full suite) almost nothing at all.
    levels = [0.4] if ctx.quick else [0.4, 0.02]
    async with running_simulator(config) as sim:
        work = ctx.dir("disk-full")
        wanted = set(range(1, sim.portal.max_id + 1))

        mount = work / "mnt"
        mount.mkdir()
        mounted = _may_mount()
        # Without a mount, data files must be the biggest writes for a file-size limit to hit
        # them (and not the schema snapshot): one file per chunk, no partitions.
        layout = [] if mounted else ["--partition-by", "none"]

        def args_for(root: Path) -> list[str]:
            ids = ["--ids", f"1-{sim.portal.max_id}", "--ids-format", "range"]
            return ["run", *ids, "--out", str(root), "--chunk-size", "400", *layout, *UNPACED]

        calib = await ctx.cli(args_for(work / "calibration"), env=ctx.env(sim), cwd=work)
        check(calib.code == 0, f"calibration run exited {calib.code}: {calib.tail()}")
        need = _tree_bytes(work / "calibration")
        written = [p for p in (work / "calibration").rglob("*") if p.is_file()]
        largest = max(p.stat().st_size for p in written if p.suffix == ".parquet")
        metadata = max(p.stat().st_size for p in written if p.suffix != ".parquet")
        # Room for every metadata file, not for the biggest data file.
        limit = (largest + metadata) // 2 if largest > metadata else largest // 2

        mounted = mounted and _mount_tmpfs(mount, 2 * need + (8 << 20))
        seen = Findings()
        steps: list[str] = []
        figures: dict[str, object] = {"export_bytes": need, "tmpfs": mounted}
        try:
            for level in levels if mounted else [0.5]:
                root = mount / f"out-{int(level * 100)}" if mounted else work / "out-fsize"
                args = args_for(root)
                if mounted:
                    filler = _fill(mount, int(need * level))
                    preexec = None
                else:
                    preexec = _limit_file_size(limit)
                # An unpaced run takes a second or two; a run that outlives the limit is stuck.
                failed = await ctx.cli(
                    args,
                    env=ctx.env(sim),
                    cwd=work,
                    preexec=preexec,
                    limit_s=HANG_S,
                    kill_on_timeout=True,
                )
                step = f"{int(level * 100)}% free" if mounted else f"RLIMIT_FSIZE {limit} B"
                seen.no_traceback(failed, step)
                if failed.timed_out:
                    seen.check(
                        False,
                        f"{step}: the run hung after the disk filled (killed after {HANG_S:.0f} s)",
                    )
                else:
                    check(
                        failed.code == 1, f"{step}: exit {failed.code}, expected 1: {failed.tail()}"
                    )
                said = failed.stderr + failed.stdout
                seen.check(
                    failed.timed_out
                    or (
                        "deal-export: error:" in said
                        and any(w in said.lower() for w in ("space", "too large", "disk"))
                    ),
                    f"{step}: no clear one-line message about the disk: {failed.tail(200)}",
                )
                if root.exists():
                    check(not (root / "_SUCCESS").exists(), f"{step}: _SUCCESS after disk full")
                    check_readable(root)
                    junk = temp_files(root)
                    seen.check(not junk, f"{step}: temp files left: {[p.name for p in junk[:2]]}")
                    if not failed.timed_out:
                        seen.check(not (root / "_lock").exists(), f"{step}: lock left behind")
                kept = len(list((root / "_checkpoints").glob("*.json"))) if root.exists() else 0
                if mounted:
                    filler.unlink()
                again = await ctx.cli(args, env=ctx.env(sim), cwd=work)
                no_traceback(again)
                check(again.code == 0, f"{step}, space back: exit {again.code}: {again.tail()}")
                audit = audit_output(root, sim.portal, wanted)
                ended = "hung" if failed.timed_out else f"exit {failed.code}"
                steps.append(f"{step}: {ended} with {kept} chunks kept, then exit 0")
                message = next((line for line in failed.stderr.splitlines() if "error" in line), "")
                figures[step] = {
                    "exit": failed.code,
                    "message": message.replace(str(ctx.work), "<work>")[:300],
                    "chunks_kept": kept,
                    "exported": audit.exported,
                }
                if mounted:
                    hits, files = scan_tree(root, ctx.secrets)
                    ctx.early_hits.extend(hits)
                    ctx.early_files += files
        finally:
            if mounted:
                _umount(mount)
        how = "tmpfs" if mounted else "no mount possible: RLIMIT_FSIZE substitute (EFBIG)"
        detail = f"{how}; " + "; ".join(steps) + f"; {audit.describe()}"
        seen.raise_if_any(detail)
        return Outcome(detail, figures)


def scenarios(quick: bool) -> list[Scenario]:
    return [Scenario("disk-full", disk_full, limit_s=120 if quick else 180)]
