"""Process-wide allocator settings of a run, applied before the libraries that read them load.

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
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: jemalloc(3): "opt.narenas", "opt.dirty_decay_ms", "opt.muzzy_decay_ms".
ALLOCATOR_ENV: dict[str, str] = {
    "_RJEM_MALLOC_CONF": "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0",
}


def configure(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the allocator options a run wants, unless the environment already names them."""
    for name, value in ALLOCATOR_ENV.items():
        environ.setdefault(name, value)


__all__ = ["ALLOCATOR_ENV", "configure"]
