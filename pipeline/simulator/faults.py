"""Which fault, if any, hits the n-th `/rest/` request: a pure function of (seed, n, config).

Reproducible by construction: the draw for request n never depends on earlier requests, timing or
concurrency, so the same seed yields the same faults on the same request numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.simulator.config import DRAW_ORDER, FaultConfig, FaultKind
from pipeline.simulator.generate import unit

_SALT_KIND = 0xFA17
_SALT_MODE = 0xFA18
_SALT_POISON = 0x9015

HTML_PAGES: dict[int, tuple[str, str]] = {
    502: ("502 Bad Gateway", "nginx"),
    503: ("503 Service Temporarily Unavailable", "nginx"),
    504: ("504 Gateway Time-out", "nginx"),
}


def pick_fault(config: FaultConfig, seed: int, n: int, method: str) -> FaultKind | None:
    """The fault for request number `n` (1-based) of REST method `method`, or None."""
    scripted = config.script.get(n)
    if scripted is not None:
        return scripted
    if config.methods is not None and method not in config.methods:
        return None
    u = unit(config.seed if config.seed is not None else seed, _SALT_KIND, n)
    acc = 0.0
    for kind in DRAW_ORDER:
        acc += getattr(config, kind)
        if u < acc:
            return kind
    return None


def truncate_mid_body(config: FaultConfig, seed: int, n: int) -> bool:
    """For a `truncated` fault: True = close the connection mid-body (Content-Length promises
    more), False = an honest Content-Length for the cut body. Alternates by a draw."""
    return unit(config.seed if config.seed is not None else seed, _SALT_MODE, n) < 0.5


class Poison:
    """Which deals the portal cannot JSON-encode: the given IDs, plus a fraction drawn on
    (seed, ID), so the same seed poisons the same deals whatever the request order."""

    def __init__(self, ids: Iterable[int], fraction: float, seed: int) -> None:
        self._ids = frozenset(ids)
        self._fraction = fraction
        self._seed = seed

    def __call__(self, deal_id: int) -> bool:
        if deal_id in self._ids:
            return True
        return self._fraction > 0 and unit(self._seed, _SALT_POISON, deal_id) < self._fraction


def html_page(status: int) -> str:
    title, server = HTML_PAGES[status]
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>{server}</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


__all__ = ["HTML_PAGES", "Poison", "html_page", "pick_fault", "truncate_mid_body"]
