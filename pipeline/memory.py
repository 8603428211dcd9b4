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
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

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


__all__ = ["ALLOCATOR_ENV", "configure"]
