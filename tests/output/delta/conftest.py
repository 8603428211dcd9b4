"""A local S3 server (moto) in a process of its own, for the Delta tests.

The shared `s3_endpoint` fixture runs moto in a thread of the test process. Against it,
deltalake's table discovery (`DeltaTable.is_deltatable`) never got an answer and gave up after
its 180 s retry timeout: the blocking call apparently keeps the in-process server thread from
running (the GIL is the likely reason). A server in its own process has no such coupling.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # bounded: at most ~20 s for the server to come up
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("moto server exited") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
