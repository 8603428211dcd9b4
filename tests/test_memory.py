"""`pipeline.memory`: the allocator options a run sets, and that deltalake's jemalloc reads them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.memory import ALLOCATOR_ENV, configure


def test_configure_sets_the_defaults_and_keeps_what_the_user_set() -> None:
    env: dict[str, str] = {}
    configure(env)
    assert env == ALLOCATOR_ENV
    assert {"MIMALLOC_PURGE_DELAY", "_RJEM_MALLOC_CONF"} <= set(env)  # pyarrow's and deltalake's
    mine = {"_RJEM_MALLOC_CONF": "narenas:4", "MIMALLOC_PURGE_DELAY": "10"}
    configure(mine)
    assert mine == {**ALLOCATOR_ENV, "_RJEM_MALLOC_CONF": "narenas:4", "MIMALLOC_PURGE_DELAY": "10"}


def test_deltalakes_jemalloc_reads_the_options_set_before_it_loads() -> None:
    # A misspelt variable would silently do nothing: ask jemalloc to print what it applied.
    script = (
        "import os\n"
        "from pipeline.memory import configure\n"
        "configure()\n"
        "os.environ['_RJEM_MALLOC_CONF'] += ',stats_print:true'\n"
        "import deltalake\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout + done.stderr
    assert "opt.narenas: 1" in printed
    assert "opt.dirty_decay_ms: 0" in printed


@pytest.mark.skipif(sys.platform != "linux", reason="jemalloc is pyarrow's pool on Linux only")
def test_pyarrows_pool_is_jemalloc_with_the_options_set_before_it_loads() -> None:
    script = (
        "import os\n"
        "from pipeline.memory import configure\n"
        "configure()\n"
        "os.environ['JE_ARROW_MALLOC_CONF'] += ',stats_print:true'\n"
        "import pyarrow as pa\n"
        "print(pa.default_memory_pool().backend_name)\n"
        "pa.allocate_buffer(1 << 20)\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == "jemalloc"
    printed = done.stdout + done.stderr
    assert "opt.oversize_threshold: 65536" in printed
    assert "opt.narenas: 1" in printed
