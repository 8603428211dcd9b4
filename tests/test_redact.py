from __future__ import annotations

import pytest

from pipeline.redact import MASK, mask_text, mask_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://p.bitrix24.com/rest/1/abc123xyz/", f"https://p.bitrix24.com/rest/1/{MASK}/"),
        (
            "https://p.bitrix24.com/rest/17/abc123xyz/batch.json",
            f"https://p.bitrix24.com/rest/17/{MASK}/batch.json",
        ),
        ("http://127.0.0.1:8024/rest/1/s3cr3t", f"http://127.0.0.1:8024/rest/1/{MASK}"),
        (
            "https://p/rest/crm.deal.get?auth=tok123&id=5",
            f"https://p/rest/crm.deal.get?auth={MASK}&id=5",
        ),
        (
            "https://o/token/?refresh_token=r1&client_secret=cs",
            f"https://o/token/?refresh_token={MASK}&client_secret={MASK}",
        ),
        ("https://p/rest/crm.deal.get", "https://p/rest/crm.deal.get"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected


def test_mask_text_removes_known_secrets() -> None:
    text = "failed calling portal with token abcdef123 (rest/1/abcdef123/)"
    out = mask_text(text, ["abcdef123"])
    assert "abcdef123" not in out
    assert MASK in out
