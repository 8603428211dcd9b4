"""Process-wide allocator settings of a run, applied before the libraries that read them load.

On Linux pyarrow allocates through its bundled jemalloc instead of its default mimalloc
(`ARROW_DEFAULT_MEMORY_POOL`, read "prior to loading the arrow library": Arrow docs,
arrow.apache.org/docs/r/reference/MemoryPool.html; Linux wheels have both, Windows builds only
mimalloc, so elsewhere mimalloc stays). A run's large Arrow buffers (a chunk's columns, its
sorted copy, a file being encoded) come and go every second or so; jemalloc serves requests
above `oversize_threshold` from a dedicated arena that does not cache freed extents (jemalloc(3),
"opt.oversize_threshold"), so their pages go back at once while small buffers keep jemalloc's
decay (Arrow's build: 1 s, on a background thread). `JE_ARROW_MALLOC_CONF` is that jemalloc's
`MALLOC_CONF` (its symbols are prefixed `je_arrow_`; `stats_print:true` in it shows the options
applied). Measured against mimalloc with the options below, `deal-export run` to the folder
sink, interleaved: 100,000 IDs peak RSS 147.1/146.7/147.7 -> 140.8/140.8/139.2 MB, 30,000 IDs
141.2-146.4 -> 136.9-138.9 MB (6 runs each), CPU within noise. Purging every freed extent
(`dirty_decay_ms:0,muzzy_decay_ms:0`) peaked ~6 MB lower still but cost 0.1-0.2 CPU-s more
system time per 30,000 deals (madvise and refaults; 13-20% more CPU in all); a 16 KiB
threshold ~2 MB lower for ~0.2 CPU-s more system time per 100,000; a 1 MiB threshold, or a
10-100 ms decay without one, peaked as mimalloc does.

mimalloc (where it stays) keeps freed pages for a second and commits its arenas eagerly; a run
frees a chunk's memory every second or so, so returning pages at once keeps its peak RSS near
what it uses (mimalloc docs, "Environment Options": MIMALLOC_PURGE_DELAY=0 "purges
immediately", MIMALLOC_ARENA_EAGER_COMMIT). Both allocators read their options when pyarrow
loads: the CLI sets them before any command imports it; a caller of `pipeline.api` that
imported pyarrow first keeps pyarrow's own defaults (about 60-75 MB more peak RSS on a
backfill).

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
one thread (`one_worker`), not to asyncio's default pool of several (measured with mimalloc;
jemalloc's one arena, `narenas:1`, is shared by every thread anyway). mimalloc keeps a heap per
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
import sys
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor

ALLOCATOR_ENV: dict[str, str] = {
    "MIMALLOC_PURGE_DELAY": "0",
    "MIMALLOC_ARENA_EAGER_COMMIT": "0",
    #: pyarrow's jemalloc (see the top): 64 KiB, the large size class above which a buffer is
    #: a column's or a file's rather than a compute kernel's scratch; one arena, as one worker.
    "JE_ARROW_MALLOC_CONF": "oversize_threshold:65536,narenas:1",
    #: jemalloc(3): "opt.narenas", "opt.dirty_decay_ms", "opt.muzzy_decay_ms".
    "_RJEM_MALLOC_CONF": "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0",
}
if sys.platform == "linux":
    ALLOCATOR_ENV["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"


def configure(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the allocator options a run wants, unless the environment already names them."""
    for name, value in ALLOCATOR_ENV.items():
        environ.setdefault(name, value)


def one_worker() -> ThreadPoolExecutor:
    """The executor for a run's event loop (`loop.set_default_executor`): one worker thread,
    so `asyncio.to_thread` jobs run one after another on the same thread."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="deal-export-worker")


__all__ = ["ALLOCATOR_ENV", "configure", "one_worker"]
