from __future__ import annotations

from pipeline.config import FetchConfig
from pipeline.fetch.retry import RetryPolicy


def test_exponential_capped_full_jitter() -> None:
    top = RetryPolicy(base_s=1.0, cap_s=10.0, rand=lambda: 0.999999)
    assert [round(top.delay(n), 3) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    bottom = RetryPolicy(base_s=1.0, cap_s=10.0, rand=lambda: 0.0)
    assert all(bottom.delay(n) == 0.0 for n in range(1, 7))
    assert top.ceiling(0) == 0.0
    assert top.ceiling(10_000) == 10.0


def test_from_config() -> None:
    policy = RetryPolicy.from_config(FetchConfig(backoff_base_s=0.5, backoff_max_s=3.0))
    assert policy.ceiling(1) == 0.5
    assert policy.ceiling(5) == 3.0
    assert 0.0 <= policy.delay(3) <= 2.0
