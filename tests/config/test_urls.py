"""One URL rule set (`pipeline.urls`): a truth table of which URLs each use accepts, and the
same answer from the loader, the transport and the signer."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.config import WebhookAuth
from pipeline.config_load import load_config
from pipeline.errors import UsageError
from pipeline.fetch.auth import WebhookSigner
from pipeline.fetch.transport import check_url as transport_check_url
from pipeline.urls import (
    check_url,
    is_loopback_host,
    show_url,
    validate_https,
    validate_webhook_url,
    webhook_secret,
)

SECRET = "t0ps3cr3tv4lue"

# url, request allowed (https or loopback http), endpoint allowed, webhook allowed
TABLE: list[tuple[str, bool, bool, bool]] = [
    (f"https://p.bitrix24.com/rest/1/{SECRET}/", True, True, True),
    (f"https://p.bitrix24.com/rest/1/{SECRET}", True, True, True),
    (f"https://p.bitrix24.com:8443/rest/12/{SECRET}/", True, True, True),
    (f"http://127.0.0.1:8024/rest/1/{SECRET}/", True, True, True),
    (f"http://127.8.9.10/rest/1/{SECRET}/", True, True, True),
    (f"http://localhost/rest/1/{SECRET}/", True, True, True),
    (f"http://LOCALHOST/rest/1/{SECRET}/", True, True, True),
    (f"http://[::1]:9/rest/1/{SECRET}/", True, True, True),
    (f"http://p.bitrix24.com/rest/1/{SECRET}/", False, False, False),
    (f"http://10.0.0.1/rest/1/{SECRET}/", False, False, False),
    (f"http://128.0.0.1/rest/1/{SECRET}/", False, False, False),
    (f"ftp://127.0.0.1/rest/1/{SECRET}/", False, False, False),
    (f"https:///rest/1/{SECRET}/", False, False, False),
    (f"https://[{SECRET}/rest/1/x/", False, False, False),
    (f"https://p.bitrix24.com:port/rest/1/{SECRET}/", False, False, False),
    (SECRET, False, False, False),
    ("", False, False, False),
    # Endpoints, not webhooks:
    ("https://p.bitrix24.com/rest/", True, True, False),
    ("https://oauth.bitrix24.tech/oauth/token/", True, True, False),
    (f"https://p.bitrix24.com/api/{SECRET}/", True, True, False),
    (f"https://p.bitrix24.com/rest/x/{SECRET}/", True, True, False),
    (f"https://p.bitrix24.com/rest/1/{SECRET}/crm.deal.get", True, True, False),
    (f"https://p.bitrix24.com/rest/1/{SECRET}/?a=1", True, True, False),
    (f"https://p.bitrix24.com/rest/1/{SECRET}/#top", True, True, False),
    (f"https://u:{SECRET}@p.bitrix24.com/rest/1/x/", True, True, False),
]


def _accepts(rule: Callable[[str], object], url: str) -> bool:
    """Whether `rule` accepts `url`; a refusal must not show the secret."""
    try:
        rule(url)
    except UsageError as exc:
        message = str(exc)
    else:
        return True
    assert SECRET not in message, f"{rule}: the secret leaked into {message}"
    return False


def _loaded_webhook(url: str) -> None:
    if load_config(env={"BITRIX24_WEBHOOK_URL": url}).auth is None:  # empty counts as unset
        raise UsageError("no webhook")


@pytest.mark.parametrize(("url", "request_ok", "endpoint_ok", "webhook_ok"), TABLE)
def test_url_truth_table(url: str, request_ok: bool, endpoint_ok: bool, webhook_ok: bool) -> None:
    assert _accepts(check_url, url) is request_ok
    assert _accepts(transport_check_url, url) is request_ok  # the transport's is this rule
    assert _accepts(lambda u: validate_https(u, "portal.oauth.endpoint"), url) is endpoint_ok
    assert _accepts(validate_webhook_url, url) is webhook_ok
    # A loaded webhook and a directly built one (the Python API) obey the same rule.
    assert _accepts(_loaded_webhook, url) is webhook_ok
    assert _accepts(lambda u: WebhookSigner(WebhookAuth(u)), url) is webhook_ok


@pytest.mark.parametrize("url", [row[0] for row in TABLE])
def test_the_display_form_never_shows_the_secret(url: str) -> None:
    assert SECRET not in show_url(url)


def test_webhook_normal_form_and_secret() -> None:
    url = f"https://p.bitrix24.com/rest/1/{SECRET}"
    assert validate_webhook_url(f"  {url} ") == url + "/"
    assert validate_webhook_url(f"\ufeff{url}\n") == url + "/"  # a file saved with a BOM
    assert webhook_secret(url) == SECRET
    assert webhook_secret("https://p.bitrix24.com/rest/") is None
    assert WebhookSigner(WebhookAuth(url)).secrets == (SECRET,)
    assert show_url(url) == "https://p.bitrix24.com/rest/1/***"


@pytest.mark.parametrize("blank", ["\n", "\r\n", "\t", " ", "\x00", "\x7f"])
@pytest.mark.parametrize("cut", [1, len(SECRET) // 2, len(SECRET) - 1])
def test_a_webhook_url_with_a_blank_inside_is_refused_with_the_secret_masked(
    blank: str, cut: int
) -> None:
    # URL parsers drop tabs and line breaks, so the portal would take it, while a mask that
    # ends at the blank would show the rest of the secret in every message and file.
    url = f"https://p.bitrix24.com/rest/1/{SECRET[:cut]}{blank}{SECRET[cut:]}/"
    with pytest.raises(UsageError, match="space, tab or line break") as refused:
        validate_webhook_url(url)
    assert str(refused.value) == (
        "webhook URL contains a space, tab or line break (a URL wrapped or pasted in pieces?): "
        "https://p.bitrix24.com/rest/1/***/"
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("localhost.", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
