"""Process-wide allocator settings of a run, applied before the libraries that read them load.

pyarrow allocates through mimalloc, which keeps freed pages for a second and commits its arenas
eagerly; a run frees a chunk's memory every second or so, so returning pages at once keeps its
peak RSS near what it uses (mimalloc docs, "Environment Options": MIMALLOC_PURGE_DELAY=0 "purges
immediately", MIMALLOC_ARENA_EAGER_COMMIT). mimalloc reads them when pyarrow loads: the CLI sets
them before any command imports it; a caller of `pipeline.api` that imported pyarrow first keeps
mimalloc's own defaults (about 60-75 MB more peak RSS on a backfill).

deltalake's Rust core allocates through its own statically linked jemalloc (tikv-jemallocator,
built with the `_rjem_` symbol prefix, so it reads its options from `_RJEM_MALLOC_CONF` rather
than `MALLOC_CONF`; `stats_print:true` in that variable shows them applied). A Delta commit
allocates on the runtime's worker threads, and jemalloc keeps the freed pages of each arena for
`dirty_decay_ms` (10 s by default; jemalloc(3), "opt.dirty_decay_ms", "opt.narenas"), so a
backfill's resident memory grew by about 0.17 MB per chunk. One arena that returns freed pages
at once keeps it flat; Delta commits are few (two per chunk or piece), so the extra `madvise`
calls cost little. jemalloc reads the variable
when the library first allocates, which the lazy import of deltalake delays until the first
Delta operation of the run. A value the user set wins.

glibc's own malloc is left as it is: on a 30,000-deal run to the folder sink, mallopt at CLI
start with M_ARENA_MAX=1 lowered peak RSS by no more than run-to-run noise, a fixed
M_MMAP_THRESHOLD (128 KiB to 4 MiB, with or without M_TRIM_THRESHOLD) or a malloc_trim every
0.2 s saved 3-10 MB but added 0.1-0.2 CPU-s of system time (mallopt(3): a fixed threshold turns
off glibc's dynamic mmap and trim thresholds, so the heap top is returned and refaulted far
more often). MIMALLOC_PURGE_DELAY: 0 and 10 peak alike, 100 or mimalloc's own default 6-20 MB
higher; 0 costs no CPU beyond noise (some 130 more madvise calls and 3% more minor faults a
run than 10).

A run's worker jobs (typing a part, building and writing a chunk, releasing the pool) go to
one thread (`one_worker`), not to asyncio's default pool of several. mimalloc keeps a heap per
thread, and `MemoryPool.release_unused` is `mi_collect(true)` on the calling thread only (Arrow
`cpp/src/arrow/memory_pool.cc`, mimalloc `include/mimalloc.h`: mi_collect "eagerly free memory"
of the current thread's heap); glibc too gives each thread its own arena (mallopt(3),
M_ARENA_MAX). With typing and writing spread over two or three pool threads, mimalloc held
about 35 MB of resident pages above the ~20 MB Arrow had allocated at a run's peak; on one
thread every job shares one heap and one arena, and the release after each commit reaches the
heap that did the allocating: peak RSS of `deal-export run` to the folder sink, interleaved
against the default pool, 100,000 IDs 172-179 -> 159-162 MB and 30,000 IDs 162-168 -> 153-157 MB
(3-4 runs each), CPU within noise. The event loop still fetches and decodes while the worker
types and writes, which is where the second core goes.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor

ALLOCATOR_ENV: dict[str, str] = {
    "MIMALLOC_PURGE_DELAY": "0",
    "MIMALLOC_ARENA_EAGER_COMMIT": "0",
    #: jemalloc(3): "opt.narenas", "opt.dirty_decay_ms", "opt.muzzy_decay_ms".
    "_RJEM_MALLOC_CONF": "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0",
}


def configure(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the allocator options a run wants, unless the environment already names them."""
    for name, value in ALLOCATOR_ENV.items():
        environ.setdefault(name, value)


def one_worker() -> ThreadPoolExecutor:
    """The executor for a run's event loop (`loop.set_default_executor`): one worker thread,
    so `asyncio.to_thread` jobs run one after another on the same thread."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="deal-export-worker")


__all__ = ["ALLOCATOR_ENV", "configure", "one_worker"]
