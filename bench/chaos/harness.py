"""What every chaos scenario shares: a workspace, the real `deal-export` process, transcripts.

Scenarios run `sys.executable -m pipeline ...` as a child process against a simulator served on
127.0.0.1 by this process's event loop, so the portal keeps answering while the child works.
Every command, its stdout and its stderr are kept (`Context.transcripts`) for the secret scan.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.simulator import RunningSimulator

#: The webhook secret of every simulator the suite starts: distinctive, so that a scan for it
#: cannot be fooled by a coincidental substring.
SECRET = "chaosZ9q4Wv7SeCrEt2x"

#: No client-side pacing: for scenarios about correctness rather than limits.
UNPACED = ["--rate", "0", "--operating-budget", "off", "--no-progress"]

#: The repository root: child processes run with it on sys.path so `-m pipeline` resolves.
REPO = Path(__file__).resolve().parents[2]


class ScenarioFailed(Exception):
    """A scenario's check did not hold; the message is the one-line reason."""


def check(condition: object, reason: str) -> None:
    """Fail the scenario with `reason` unless `condition` holds."""
    if not condition:
        raise ScenarioFailed(reason)


@dataclass(frozen=True)
class Completed:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    #: Killed by the harness after its time limit (the code is then -SIGKILL).
    timed_out: bool = False

    def tail(self, n: int = 300) -> str:
        """The end of stderr (or stdout), on one line, for a failure reason."""
        text = (self.stderr.strip() or self.stdout.strip())[-n:]
        return " ".join(text.split())


@dataclass(frozen=True)
class Transcript:
    """One `deal-export` invocation as the secret scan sees it."""

    scenario: str
    args: tuple[str, ...]
    stdout: str
    stderr: str


@dataclass
class Context:
    """The suite's shared state: its workspace, its size, and everything the CLI printed."""

    work: Path
    quick: bool
    seed: int = 20261127
    scenario: str = ""
    transcripts: list[Transcript] = field(default_factory=list)
    #: Strings that must never appear anywhere: the simulator's secret, the fake secrets of the
    #: bad-input URLs, every OAuth token issued and the OAuth client secret.
    secrets: set[str] = field(default_factory=lambda: {SECRET})
    #: Files that hold a credential by design (an OAuth token file): the scans skip them, and
    #: their scenario checks what they hold instead.
    credential_files: set[Path] = field(default_factory=set)
    #: Trees that vanish before the scan (a tmpfs that is unmounted) are scanned early; hits and
    #: file counts land here.
    early_hits: list[str] = field(default_factory=list)
    early_files: int = 0
    #: Every child started; the runner kills any still alive when its scenario ends.
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    def dir(self, name: str) -> Path:
        """A fresh directory for one scenario (or one step of it)."""
        path = self.work / name
        n = 1
        while path.exists():
            n += 1
            path = self.work / f"{name}-{n}"
        path.mkdir(parents=True)
        return path

    def env(self, sim: RunningSimulator | None, **extra: str) -> dict[str, str]:
        """The child's environment: ours minus any Bitrix24/deal-export settings, plus the
        simulator's webhook (through the environment, as the docs advise, never argv)."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("BITRIX24_", "DEAL_EXPORT_"))
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        if sim is not None:
            env["BITRIX24_WEBHOOK_URL"] = sim.webhook_url
        env.update(extra)
        return env

    def record(self, args: Sequence[str], stdout: str, stderr: str) -> None:
        self.transcripts.append(Transcript(self.scenario, tuple(args), stdout, stderr))

    async def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        stdin: bool = False,
        preexec: Any = None,
    ) -> asyncio.subprocess.Process:
        """Start `deal-export ARGS`; the caller must `finish` it so the transcript is kept."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline",
            *args,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=preexec,
        )
        self.procs.append(proc)
        return proc

    async def reap(self) -> None:
        """Kill children a failed or cancelled scenario left running."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        self.procs.clear()

    async def finish(
        self,
        proc: asyncio.subprocess.Process,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        limit_s: float = 120.0,
        kill_on_timeout: bool = False,
    ) -> Completed:
        """Wait for a started process and record its output. Past `limit_s` it is killed: the
        scenario fails, or (`kill_on_timeout`) gets a Completed with `timed_out` set."""
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), limit_s)
            timed_out = False
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            timed_out = True
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        self.record(args, stdout, stderr)
        if timed_out and not kill_on_timeout:
            raise ScenarioFailed(
                f"deal-export {' '.join(args[:1])} did not finish within {limit_s:.0f} s"
            )
        assert proc.returncode is not None
        return Completed(tuple(args), proc.returncode, stdout, stderr, timed_out)

    async def cli(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        stdin: bytes | None = None,
        limit_s: float = 120.0,
        preexec: Any = None,
        kill_on_timeout: bool = False,
    ) -> Completed:
        """Run `deal-export ARGS` to completion while the simulator keeps serving."""
        proc = await self.start(args, env=env, cwd=cwd, stdin=stdin is not None, preexec=preexec)
        return await self.finish(
            proc, args, stdin=stdin, limit_s=limit_s, kill_on_timeout=kill_on_timeout
        )


def traceback_in(done: Completed) -> str | None:
    """The exception line of a traceback the user saw, or None when there was none."""
    text = done.stderr + done.stdout
    if "Traceback" not in text:
        return None
    last = ""
    for line in text.splitlines():
        bare = line.strip().lstrip("|").strip()
        head = bare.split(":", 1)[0]
        if head and " " not in head and head.endswith(("Error", "Exception", "Group", "Interrupt")):
            last = bare
    return (last or "Traceback")[:240]


def no_traceback(done: Completed) -> None:
    found = traceback_in(done)
    check(found is None, f"a traceback reached the user, ending in: {found}")


class Findings:
    """Checks that should not stop a scenario: it goes on (to show what else holds) and fails
    at the end with every reason."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def check(self, condition: object, reason: str) -> None:
        if not condition:
            self.reasons.append(reason)

    def no_traceback(self, done: Completed, step: str) -> None:
        found = traceback_in(done)
        self.check(found is None, f"{step}: a traceback reached the user, ending in: {found}")

    def raise_if_any(self, detail: str) -> None:
        if self.reasons:
            raise ScenarioFailed("; ".join(self.reasons) + f" (otherwise: {detail})")


__all__ = [
    "REPO",
    "SECRET",
    "UNPACED",
    "Completed",
    "Context",
    "Findings",
    "ScenarioFailed",
    "Transcript",
    "check",
    "no_traceback",
    "traceback_in",
]
