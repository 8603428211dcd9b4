"""Scenario 6: a table of bad inputs, each with the exit code and message an operator should get.

ID files (empty, missing, binary, garbage, a huge line, a bad range), configs (unknown key, bad
value, bad TOML, an unknown environment variable) and webhook URLs (plain http to a remote host,
not a webhook path, not a URL, a wrong secret). Every row: the expected exit code, a fragment of
the expected message, no traceback, the URL's secret never echoed, and for usage errors no
export. The rows are cheap and independent, so they run side by side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.chaos.audit import audit_output, read_sidecar, visible_data_files
from bench.chaos.harness import SECRET, UNPACED, Context, check, no_traceback
from bench.chaos.runner import Outcome, Scenario
from pipeline.simulator import SimulatorConfig, running_simulator

#: Fake secrets in the bad URLs: they must not be echoed either (the scan hunts them too).
FAKE_HTTP = "fakeS3cretHttpQ1"
FAKE_PATH = "fakeS3cretPathQ2"
FAKE_GARBAGE = "fakeS3cretJunkQ3"
WRONG = "wr0ngS3cretQ4zz"

RANGE = ["--ids", "1-3", "--ids-format", "range"]


@dataclass(frozen=True)
class BadInput:
    name: str
    args: list[str]
    code: int
    fragments: tuple[str, ...]
    files: dict[str, bytes] = field(default_factory=dict)
    #: Webhook URL: None = the simulator's; otherwise a format string with {base} and {user}.
    webhook: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Exit 0 rows: (unique valid IDs, invalid lines) the audit expects.
    accounted: tuple[set[int], int] | None = None


TABLE = [
    BadInput("ids-empty", ["--ids", "ids.txt"], 2, ("holds no deal IDs",), {"ids.txt": b""}),
    BadInput("ids-missing", ["--ids", "missing.txt"], 2, ("not found", "missing.txt")),
    BadInput(
        "ids-binary",
        ["--ids", "ids.txt"],
        2,
        ("no valid deal ID",),
        {"ids.txt": b"\x00\x01\x02\xff\xfe" * 400},
    ),
    BadInput(
        "ids-garbage",
        ["--ids", "ids.txt"],
        2,
        ("no valid deal ID", "'hello'"),
        {"ids.txt": b"hello\nworld\nnot an id\n" * 50},
    ),
    BadInput(
        "ids-huge-line",
        ["--ids", "ids.txt"],
        0,
        ("1 input lines were not valid deal IDs",),
        {"ids.txt": b"1\n2\n" + b"9" * 200_000 + b"\n3\n"},
        accounted=({1, 2, 3}, 1),
    ),
    BadInput("ids-bad-range", ["--ids", "5-1", "--ids-format", "range"], 2, ("first ID is above",)),
    BadInput(
        "config-unknown-key",
        ["--config", "c.toml", *RANGE],
        2,
        ("c.toml", "batchsize", "did you mean batch_size"),
        {"c.toml": b"[fetch]\nbatchsize = 10\n"},
    ),
    BadInput(
        "config-bad-value",
        ["--config", "c.toml", *RANGE],
        2,
        ("batch_size must be <= 50",),
        {"c.toml": b"[fetch]\nbatch_size = 500\n"},
    ),
    BadInput(
        "config-bad-toml",
        ["--config", "c.toml", *RANGE],
        2,
        ("c.toml", "invalid TOML"),
        {"c.toml": b"[fetch\nbatch_size = \n"},
    ),
    BadInput(
        "config-unknown-env",
        RANGE,
        2,
        ("DEAL_EXPORT_FETCH_BATCHSIZE", "DEAL_EXPORT_FETCH_BATCH_SIZE"),
        env={"DEAL_EXPORT_FETCH_BATCHSIZE": "10"},
    ),
    BadInput(
        "url-http-remote",
        RANGE,
        2,
        ("https", "***"),
        webhook=f"http://portal.example.com/rest/1/{FAKE_HTTP}/",
    ),
    BadInput(
        "url-not-webhook",
        RANGE,
        2,
        ("not a Bitrix24 webhook URL",),
        webhook=f"https://portal.example.com/api/{FAKE_PATH}",
    ),
    BadInput(
        "url-garbage",
        RANGE,
        2,
        ("BITRIX24_WEBHOOK_URL",),
        webhook=f"not a url {FAKE_GARBAGE}",
    ),
    BadInput(
        "url-wrong-secret",
        RANGE,
        1,
        ("NO_AUTH_FOUND", "***"),
        webhook="{base}/rest/{user}/" + WRONG + "/",
    ),
]


def _scenario(row: BadInput) -> Callable[[Context], Awaitable[Outcome]]:
    async def run(ctx: Context) -> Outcome:
        ctx.secrets.update({FAKE_HTTP, FAKE_PATH, FAKE_GARBAGE, WRONG})
        async with running_simulator(SimulatorConfig(deals=10, seed=61, secret=SECRET)) as sim:
            work = ctx.dir(f"input-{row.name}")
            for name, content in row.files.items():
                (work / name).write_bytes(content)
            extra = dict(row.env)
            if row.webhook is not None:
                url = row.webhook.format(base=sim.base_url, user=sim.config.user_id)
                extra["BITRIX24_WEBHOOK_URL"] = url
            done = await ctx.cli(
                ["run", *row.args, "--out", "out", *UNPACED],
                env=ctx.env(sim, **extra),
                cwd=work,
                limit_s=60,
            )
            no_traceback(done)
            said = done.stdout + done.stderr
            check(done.code == row.code, f"exit {done.code}, expected {row.code}: {done.tail(200)}")
            for fragment in row.fragments:
                check(fragment in said, f"message lacks {fragment!r}: {done.tail(200)}")
            leaked = [s for s in ctx.secrets if s in said]
            check(not leaked, f"the URL's secret was echoed: {leaked}")
            out = work / "out"
            if row.code != 0:
                check(not (out / "_SUCCESS").exists(), "a failed run left _SUCCESS")
                check(not out.exists() or not visible_data_files(out), "a failed run left data")
                message = next(
                    (line for line in done.stderr.splitlines() if "error" in line), done.tail(120)
                )
                return Outcome(f"exit {done.code}: {message[:140]}", {"exit": done.code})
            assert row.accounted is not None
            wanted, invalid = row.accounted
            audit = audit_output(out, sim.portal, wanted, invalid_lines=invalid)
            side = read_sidecar(out)
            lines = [] if side is None else side.column("line").to_pylist()
            check(3 in lines, f"the invalid line is not recorded with its number: {lines}")
            return Outcome(f"exit 0, {audit.describe()}, line 3 in the sidecar", {"exit": 0})

    return run


def scenarios(quick: bool) -> list[Scenario]:
    return [
        Scenario(f"bad-input:{row.name}", _scenario(row), limit_s=90, group="bad-input")
        for row in TABLE
    ]
