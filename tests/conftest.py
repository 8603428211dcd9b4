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


#: Folders and modules of the full lane only: real processes started and killed, CLI subprocess
#: runs, benchmarks, the chaos subset and the property tests. `make test-fast` (`-m "not slow"`)
#: runs everything else: unit tests and small simulator tests.
SLOW_PATHS = (
    "tests/e2e/",
    "tests/chaos/",
    "tests/bench/",
    "tests/output/test_crash.py",
    "tests/output/test_s3.py",
    "tests/normalise/test_properties.py",
    "tests/operator/test_json_log_lines.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        if where.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)
