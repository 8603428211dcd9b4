"""Fixtures shared by every test folder: a real simulated portal on 127.0.0.1.

    async def test_something(simulator):
        sim = await simulator(deals=300, seed=7, rate=2, burst=50)
        ...  # sim.webhook_url, sim.portal, sim.stats(), sim.set_faults(...)

Each simulator started through the factory is stopped when the test ends. Pass
`clock=ScaledClock(K)` (with `time_scale=K`) to share one clock between the portal and the client
under test, so that `operating_reset_at` and the client's `now()` agree.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from pipeline.clock import ScaledClock
from pipeline.simulator import RunningSimulator, SimulatorConfig, running_simulator

SimulatorFactory = Callable[..., Awaitable[RunningSimulator]]


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorFactory]:
    """Start simulators: `await simulator(SimulatorConfig(...))` or `await simulator(deals=..)`."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            config: SimulatorConfig | None = None,
            *,
            clock: ScaledClock | None = None,
            **kwargs: Any,
        ) -> RunningSimulator:
            if config is None:
                config = SimulatorConfig(**kwargs)
            elif kwargs:
                raise TypeError("pass either a SimulatorConfig or keyword arguments, not both")
            return await stack.enter_async_context(running_simulator(config, clock=clock))

        yield start


@pytest.fixture
async def sim(simulator: SimulatorFactory) -> RunningSimulator:
    """A small portal without limits or faults (300 deals, seed 7)."""
    return await simulator(deals=300, seed=7)


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


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3 server (moto) on 127.0.0.1, one per test module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


def fresh_s3_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch, prefix: str) -> tuple[str, Any]:
    """A new bucket on `endpoint` and the root URI `s3://<bucket>/<prefix>?...` with dummy
    credentials and no instance-metadata lookups (no network but ours); also the filesystem."""
    import time

    import pyarrow.fs as pafs

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    fs = pafs.S3FileSystem(
        endpoint_override=endpoint, scheme="http", region="us-east-1", allow_bucket_creation=True
    )
    bucket = f"b{time.monotonic_ns()}"
    fs.create_dir(bucket)
    uri = f"s3://{bucket}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    return uri, fs


#: Folders and modules of the full lane only: real processes started and killed, CLI subprocess
#: runs, benchmarks, the chaos subset and the property tests. `make test-fast` (`-m "not slow"`)
#: runs everything else: unit tests and small simulator tests.
SLOW_PATHS = (
    "tests/e2e/",
    "tests/chaos/",
    "tests/bench/",
    "tests/output/test_crash.py",
    "tests/output/test_s3.py",
    "tests/output/test_visibility.py",
    "tests/output/test_nightly_runs.py",
    "tests/normalise/test_properties.py",
    "tests/operator/test_json_log_lines.py",
    "tests/entity/test_lead_export.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        if where.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)
