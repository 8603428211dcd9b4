"""One masking function (`pipeline.redact.redact`): every way a secret can be written down
(log record, error, effective config, manifest config, output-root display) masks the same."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.config import OAuthAuth, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import effective_config_dict, load_config, secrets_of
from pipeline.logs import SecretFilter
from pipeline.output import mask_config
from pipeline.output.store import display_uri
from pipeline.redact import MASK, is_secret_key, mask_text, mask_url, redact

HOOK_SECRET = "hooks3cr3tvalue"
ACCESS, REFRESH, CLIENT = "access-AAAA1111", "refresh-BBBB2222", "client-CCCC3333"
HOOK = f"https://p.bitrix24.com/rest/7/{HOOK_SECRET}/"


def _oauth() -> RunConfig:
    auth = OAuthAuth("https://p.bitrix24.com/rest/", ACCESS, REFRESH, "app.1", CLIENT)
    return RunConfig(auth=auth, output=OutputConfig(root="out"))


def _webhook() -> RunConfig:
    return RunConfig(auth=WebhookAuth(HOOK), output=OutputConfig(root="out"))


SECRETS = (HOOK_SECRET, ACCESS, REFRESH, CLIENT)


def _clean(value: object) -> bool:
    text = json.dumps(value, default=str)
    return not any(s in text for s in SECRETS)


@pytest.mark.parametrize("config", [_oauth(), _webhook()], ids=["oauth", "webhook"])
def test_effective_and_manifest_config_hold_no_secret(config: RunConfig) -> None:
    effective = effective_config_dict(config)
    assert _clean(effective)
    assert _clean(mask_config(config))
    assert _clean(mask_config(effective))  # what the manifest writes from a run


def test_effective_config_shows_what_is_set_and_the_manifest_drops_it() -> None:
    effective = effective_config_dict(_oauth())
    assert effective["auth"]["client_secret"] == MASK
    assert effective["auth"]["client_id"] == "app.1"
    assert effective["auth"]["token_file"] is None  # a path, not a secret
    manifest = mask_config(effective)
    assert "client_secret" not in manifest["auth"]
    assert manifest["auth"]["endpoint"] == "https://p.bitrix24.com/rest/"
    assert effective_config_dict(_webhook())["auth"]["url"] == (
        f"https://p.bitrix24.com/rest/7/{MASK}/"
    )


def test_loaded_oauth_secrets_are_masked_everywhere(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"access_token": ACCESS, "refresh_token": REFRESH}))
    loaded = load_config(
        env={
            "BITRIX24_OAUTH_ENDPOINT": "https://p.bitrix24.com/rest/",
            "BITRIX24_OAUTH_CLIENT_ID": "app.1",
            "BITRIX24_OAUTH_CLIENT_SECRET": CLIENT,
            "BITRIX24_OAUTH_TOKEN_FILE": str(tokens),
        }
    )
    assert {ACCESS, REFRESH, CLIENT} <= set(secrets_of(loaded))
    effective = effective_config_dict(loaded)
    assert _clean(effective)
    assert effective["auth"]["token_file"] == str(tokens)


def test_log_records_text_and_fields_are_masked() -> None:
    mask = SecretFilter([ACCESS])
    record = logging.LogRecord("pipeline.x", logging.INFO, __file__, 1, "used %s", (ACCESS,), None)
    record.payload = {"refresh_token": REFRESH, "url": HOOK, "items": (ACCESS, 3)}
    assert mask.filter(record)
    assert ACCESS not in record.getMessage()
    assert record.payload == {
        "refresh_token": MASK,
        "url": f"https://p.bitrix24.com/rest/7/{MASK}/",
        "items": [MASK, 3],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"calling {HOOK}batch", f"calling https://p.bitrix24.com/rest/7/{MASK}/batch"),
        (f"POST auth={ACCESS}&x=1", f"POST auth={MASK}&x=1"),
        ("s3://AKIA:verysecret@bucket/p?secret_key=abc&region=x", None),
        ("token_file=/etc/tokens.json retry_after=2", "token_file=/etc/tokens.json retry_after=2"),
        (f"the refresh token {REFRESH} expired", f"the refresh token {MASK} expired"),
    ],
)
def test_text_url_and_known_secret_masking(text: str, expected: str | None) -> None:
    masked = mask_text(text, [REFRESH])
    if expected is not None:
        assert masked == expected
    assert "verysecret" not in masked
    assert "secret_key=abc" not in masked
    assert redact(text, [REFRESH]) == masked


def test_output_root_display_is_the_same_masking() -> None:
    uri = "s3://AKIAXX:verysecret@bucket/p?secret_key=abc&region=x"
    assert display_uri(uri) == mask_url(uri) == f"s3://{MASK}@bucket/p?secret_key={MASK}&region=x"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("client_secret", True),
        ("access_token", True),
        ("refresh_token", True),
        ("webhook_url", True),
        ("password", True),
        ("aws_secret_access_key", True),
        ("api_key", True),
        ("token_file", False),
        ("token_url", False),
        ("client_id", False),
        ("auth", False),
        ("url", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_short_known_secrets_are_not_masked_in_words() -> None:
    assert mask_text("abc defabc", ["abc"]) == "abc defabc"
