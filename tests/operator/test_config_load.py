"""Config precedence, unknown keys and bad values named, secrets never echoed, examples load."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import OAuthAuth, WebhookAuth
from pipeline.config_load import (
    effective_config_dict,
    load_config,
    load_run_config,
    secrets_of,
    validate_webhook_url,
)
from pipeline.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3tw3bh00k"
URL = f"https://portal.bitrix24.com/rest/7/{SECRET}/"


def write(tmp_path: Path, text: str, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def usage_error(**kwargs: object) -> str:
    with pytest.raises(UsageError) as info:
        load_config(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


# ------------------------------------------------------------------------------- precedence


def test_defaults_without_any_source() -> None:
    cfg = load_config(env={})
    assert cfg.auth is None
    assert cfg.output is None
    assert (cfg.limits.rate, cfg.limits.burst) == (2.0, 50)
    assert cfg.fetch.batch_size == 50
    assert cfg.log_format == "text"
    assert cfg.plan == "standard"


def test_precedence_command_line_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[fetch]\nconcurrency = 3\nmax_attempts = 7\nbackoff_max_s = 30\n"
        "[output]\nroot = 'from-file'\n",
    )
    env = {"DEAL_EXPORT_FETCH_CONCURRENCY": "5", "DEAL_EXPORT_FETCH_MAX_ATTEMPTS": "9"}
    cfg = load_config(config_path=path, env=env, overrides={"fetch.concurrency": 8})
    assert cfg.fetch.concurrency == 8  # command line beats env and file
    assert cfg.fetch.max_attempts == 9  # env beats file
    assert cfg.fetch.backoff_max_s == 30.0  # file beats default
    assert cfg.fetch.batch_size == 50  # default
    assert cfg.output is not None
    assert cfg.output.root == "from-file"


def test_none_override_means_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, "[fetch]\nconcurrency = 3\n")
    cfg = load_config(config_path=path, env={}, overrides={"fetch.concurrency": None})
    assert cfg.fetch.concurrency == 3


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "log_format = 'json'\n")
    assert load_config(env={"DEAL_EXPORT_CONFIG": path}).log_format == "json"


def test_plan_sets_rate_and_burst_and_explicit_values_win(tmp_path: Path) -> None:
    cfg = load_config(env={}, overrides={"limits.plan": "enterprise"})
    assert (cfg.limits.rate, cfg.limits.burst) == (5.0, 250)
    path = write(tmp_path, "[limits]\nplan = 'enterprise'\nburst = 100\n")
    cfg = load_config(config_path=path, env={"DEAL_EXPORT_LIMITS_RATE": "3.5"})
    assert (cfg.limits.rate, cfg.limits.burst) == (3.5, 100)


def test_custom_plan_needs_rate_and_burst() -> None:
    msg = usage_error(env={}, overrides={"limits.plan": "custom", "limits.rate": 1})
    assert "limits.burst" in msg
    cfg = load_config(
        env={}, overrides={"limits.plan": "custom", "limits.rate": 1, "limits.burst": 10}
    )
    assert (cfg.limits.rate, cfg.limits.burst) == (1.0, 10)


def test_operating_budget_can_be_switched_off(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\noperating_budget_s = 'off'\n")
    assert load_config(config_path=path, env={}).limits.operating_budget_s is None
    env = {"DEAL_EXPORT_LIMITS_OPERATING_BUDGET_S": "300"}
    assert load_config(config_path=path, env=env).limits.operating_budget_s == 300.0


def test_partition_by_none(tmp_path: Path) -> None:
    path = write(tmp_path, "[output]\nroot = 'o'\npartition_by = 'none'\n")
    out = load_config(config_path=path, env={}).output
    assert out is not None
    assert out.partition_by is None
    assert out.partition_transform == "none"


def test_empty_environment_variable_counts_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "[fetch]\nconcurrency = 3\n")
    cfg = load_config(config_path=path, env={"DEAL_EXPORT_FETCH_CONCURRENCY": ""})
    assert cfg.fetch.concurrency == 3


def test_bool_and_timestamp_from_environment() -> None:
    cfg = load_config(
        env={
            "DEAL_EXPORT_TRANSPORT_VERIFY_TLS": "no",
            "DEAL_EXPORT_IDS_MODIFIED_SINCE": "2026-01-31T00:00:00+03:00",
        }
    )
    assert cfg.transport.verify_tls is False
    expected = datetime(2026, 1, 31, tzinfo=UTC) - timedelta(hours=3)
    assert cfg.ids.modified_since == expected


def test_ids_selection_is_replaced_as_a_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "[ids]\nsince_last_run = true\ncolumn = 'DEAL_ID'\n")
    cfg = load_config(config_path=path, env={}, overrides={"ids.source": "ids.csv"})
    assert cfg.ids.source == "ids.csv"
    assert cfg.ids.since_last_run is False
    assert cfg.ids.column == "DEAL_ID"


def test_two_id_selections_in_one_source_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[ids]\nsince_last_run = true\nsource = 'x.txt'\n")
    msg = usage_error(config_path=path, env={})
    assert "[ids].source" in msg
    assert "[ids].since_last_run" in msg


# ----------------------------------------------------------------------- unknown / bad values


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[fetch]\nbatchsize = 5\n", "unknown key [fetch].batchsize (did you mean batch_size?)"),
        ("[fetc]\nbatch_size = 5\n", "unknown section [fetc] (did you mean [fetch]?)"),
        ("logformat = 'json'\n", "unknown key logformat (did you mean log_format?)"),
        ("[portal.oath]\nendpoint = 'x'\n", "unknown section [portal].oath"),
        ("[limits]\nrate = -1\n", "[limits].rate must be >= 0, got -1"),
        ("[limits]\nburst = 0\n", "[limits].burst must be >= 1"),
        ("[limits]\nheadroom = 1.0\n", "[limits].headroom must be < 1"),
        ("[limits]\nplan = 'gold'\n", "[limits].plan must be one of standard, enterprise, custom"),
        ("[fetch]\nbatch_size = 51\n", "[fetch].batch_size must be <= 50"),
        ("[fetch]\nbatch_size = 5.5\n", "[fetch].batch_size must be an integer"),
        ("[fetch]\nconcurrency = true\n", "[fetch].concurrency must be an integer"),
        ("[fetch]\nconcurrency = '4'\n", "[fetch].concurrency must be an integer"),
        ("[transport]\nverify_tls = 'maybe'\n", "[transport].verify_tls must be true or false"),
        ("[output]\nexisting_data_behavior = 'append'\n", "[output].existing_data_behavior"),
        ("[ids]\nmodified_since = '2026-01-01T00:00:00'\n", "needs an explicit UTC offset"),
        ("[ids]\nmodified_since = 'yesterday'\n", "[ids].modified_since must be an ISO 8601"),
        ("fetch = 3\n", "fetch must be a table"),
        ("[fetch\n", "invalid TOML"),
    ],
)
def test_file_errors_name_file_and_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path, toml)
    msg = usage_error(config_path=path, env={})
    assert path in msg
    assert expected in msg


def test_range_error_from_environment_names_variable_and_key() -> None:
    msg = usage_error(env={"DEAL_EXPORT_LIMITS_RATE": "-1"})
    assert "DEAL_EXPORT_LIMITS_RATE" in msg
    assert "limits.rate must be >= 0" in msg
    msg = usage_error(env={"DEAL_EXPORT_FETCH_CONCURRENCY": "four"})
    assert "DEAL_EXPORT_FETCH_CONCURRENCY" in msg
    assert "must be an integer" in msg


def test_unknown_environment_variable_with_our_prefix_is_an_error() -> None:
    msg = usage_error(env={"DEAL_EXPORT_FETCH_CONCURENCY": "3"})
    assert "DEAL_EXPORT_FETCH_CONCURENCY" in msg
    assert "did you mean DEAL_EXPORT_FETCH_CONCURRENCY?" in msg
    # Other variables are not ours to judge.
    assert load_config(env={"PATH": "/bin", "BITRIX24_SOMETHING": "x"}).auth is None


def test_unknown_override_key_is_an_error() -> None:
    msg = usage_error(env={}, overrides={"fetch.batchsize": 3})
    assert "fetch.batchsize" in msg
    assert "fetch.batch_size" in msg


def test_bad_override_value_names_the_key() -> None:
    assert "command line: fetch.concurrency must be >= 1" in usage_error(
        env={}, overrides={"fetch.concurrency": 0}
    )


def test_cross_field_check_of_the_dataclass_still_applies() -> None:
    msg = usage_error(env={}, overrides={"fetch.backoff_base_s": 10, "fetch.backoff_max_s": 5})
    assert "fetch.backoff_base_s" in msg


def test_missing_and_directory_config_files(tmp_path: Path) -> None:
    assert "config file not found" in usage_error(config_path=str(tmp_path / "no.toml"), env={})
    assert "is a directory" in usage_error(config_path=str(tmp_path), env={})


def test_ca_bundle_must_exist(tmp_path: Path) -> None:
    msg = usage_error(env={}, overrides={"transport.ca_bundle": str(tmp_path / "ca.pem")})
    assert "transport.ca_bundle" in msg


# -------------------------------------------------------------------------------------- auth


def test_webhook_from_environment_normalised_with_slash() -> None:
    cfg = load_run_config(
        config_path=None,
        env={"BITRIX24_WEBHOOK_URL": URL.rstrip("/")},
        overrides={"output.root": "out"},
    )
    assert cfg.auth == WebhookAuth(URL)


def test_webhook_from_file_and_command_line_wins(tmp_path: Path) -> None:
    secret_file = tmp_path / "hook"
    secret_file.write_text(URL + "\n")
    cfg = load_config(env={"BITRIX24_WEBHOOK_URL_FILE": str(secret_file)})
    assert cfg.auth == WebhookAuth(URL)
    other = "https://other.bitrix24.com/rest/1/anothersecret/"
    cfg = load_config(
        env={"BITRIX24_WEBHOOK_URL_FILE": str(secret_file)},
        overrides={"portal.webhook_url": other},
    )
    assert cfg.auth == WebhookAuth(other)


def test_webhook_and_its_file_in_one_source_is_an_error(tmp_path: Path) -> None:
    msg = usage_error(
        env={"BITRIX24_WEBHOOK_URL": URL, "BITRIX24_WEBHOOK_URL_FILE": str(tmp_path / "f")}
    )
    assert "set only one of" in msg
    assert SECRET not in msg


def test_webhook_file_problems(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent")
    msg = usage_error(env={"BITRIX24_WEBHOOK_URL_FILE": missing})
    assert "file not found" in msg
    assert missing in msg
    empty = tmp_path / "empty"
    empty.write_text("\n")
    # The variable named once, not once as the origin and again as the key.
    assert usage_error(env={"BITRIX24_WEBHOOK_URL_FILE": str(empty)}).endswith(
        f"environment variable BITRIX24_WEBHOOK_URL_FILE: {empty} is empty"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"http://portal.bitrix24.com/rest/7/{SECRET}/", "plain http"),
        (f"ftp://portal.bitrix24.com/rest/7/{SECRET}/", "not an https URL"),
        (f"https://portal.bitrix24.com/api/{SECRET}/", "not a Bitrix24 webhook URL"),
        (f"https://portal.bitrix24.com/rest/x/{SECRET}/", "not a Bitrix24 webhook URL"),
        (f"https://portal.bitrix24.com/rest/7/{SECRET}/crm.deal.get", "a method name"),
        (f"https://portal.bitrix24.com/rest/7/{SECRET}/?a=1", "query or fragment"),
        (f"https://u:{SECRET}@portal.bitrix24.com/rest/7/x/", "user:password@"),
        (f"https://[{SECRET}/rest/7/x/", "not a valid URL"),
        (SECRET, "not an https URL"),
        ("", "not an https URL"),
    ],
)
def test_bad_webhook_urls_are_usage_errors_with_the_secret_masked(url: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        validate_webhook_url(url)
    assert expected in str(info.value)
    assert SECRET not in str(info.value)
    # The same through the loader, from the command line.
    msg = usage_error(env={}, overrides={"portal.webhook_url": url})
    assert SECRET not in msg


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:8024/rest/1/{SECRET}/",
        f"http://localhost/rest/1/{SECRET}",
        f"http://[::1]:9/rest/1/{SECRET}/",
        f"https://b24-abc.bitrix24.ru/rest/12/{SECRET}",
    ],
)
def test_good_webhook_urls(url: str) -> None:
    assert validate_webhook_url(url).endswith(f"/{SECRET}/")


def test_oauth_from_environment_and_files(tmp_path: Path) -> None:
    (tmp_path / "refresh").write_text("refresh-token-xyz\n")
    path = write(
        tmp_path,
        "[portal.oauth]\nendpoint = 'https://p.bitrix24.com/rest'\nclient_id = 'app.1'\n"
        f"refresh_token_file = '{tmp_path / 'refresh'}'\n",
    )
    env = {
        "BITRIX24_OAUTH_ACCESS_TOKEN": "access-token-abc",
        "BITRIX24_OAUTH_CLIENT_SECRET": "client-secret-def",
    }
    cfg = load_config(config_path=path, env=env)
    assert cfg.auth == OAuthAuth(
        endpoint="https://p.bitrix24.com/rest/",
        access_token="access-token-abc",
        refresh_token="refresh-token-xyz",
        client_id="app.1",
        client_secret="client-secret-def",
    )
    dumped = json.dumps(effective_config_dict(cfg), default=str)
    for secret in secrets_of(cfg):
        assert secret not in dumped
    assert set(secrets_of(cfg)) == {"access-token-abc", "refresh-token-xyz", "client-secret-def"}


OAUTH_ENV = {
    "BITRIX24_OAUTH_ENDPOINT": "https://p.bitrix24.com/rest/",
    "BITRIX24_OAUTH_CLIENT_ID": "app.1",
    "BITRIX24_OAUTH_CLIENT_SECRET": "client-secret-def",
}


def test_oauth_tokens_from_a_token_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"access_token": "acc-1", "refresh_token": "ref-1", "expires": 1}))
    path = write(tmp_path, f"[portal.oauth]\ntoken_file = '{tokens}'\n")
    cfg = load_config(config_path=path, env=OAUTH_ENV)
    assert isinstance(cfg.auth, OAuthAuth)
    assert (cfg.auth.access_token, cfg.auth.refresh_token) == ("acc-1", "ref-1")
    assert cfg.auth.token_file == str(tokens)
    assert {"acc-1", "ref-1"} <= set(secrets_of(cfg))
    dumped = json.dumps(effective_config_dict(cfg), default=str)
    assert "acc-1" not in dumped
    assert "ref-1" not in dumped
    # the environment and the command line name it too
    env = {**OAUTH_ENV, "BITRIX24_OAUTH_TOKEN_FILE": str(tokens)}
    assert load_config(env=env).auth == cfg.auth
    by_option = load_config(env=OAUTH_ENV, overrides={"portal.oauth.token_file": str(tokens)})
    assert by_option.auth == cfg.auth


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "token file not found"),
        ("not json", "not a JSON object"),
        ('["acc-1"]', "not a JSON object"),
        ('{"access_token": "acc-1"}', "has no refresh_token"),
        ('{"access_token": "", "refresh_token": "ref-1"}', "has no access_token"),
    ],
    ids=["missing", "garbage", "list", "no-refresh", "empty-access"],
)
def test_bad_token_files_are_one_line_usage_errors(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    tokens = tmp_path / "tokens.json"
    if content is not None:
        tokens.write_text(content)
    env = {**OAUTH_ENV, "BITRIX24_OAUTH_TOKEN_FILE": str(tokens)}
    msg = usage_error(env=env)
    assert expected in msg
    assert "BITRIX24_OAUTH_TOKEN_FILE" in msg
    assert "acc-1" not in msg
    assert "\n" not in msg


def test_a_token_file_and_a_token_in_one_source_conflict(tmp_path: Path) -> None:
    env = {
        **OAUTH_ENV,
        "BITRIX24_OAUTH_TOKEN_FILE": str(tmp_path / "t.json"),
        "BITRIX24_OAUTH_REFRESH_TOKEN": "ref-2",
    }
    assert "set only one of" in usage_error(env=env)
    # A higher source's token file replaces a lower source's tokens.
    tokens = tmp_path / "t.json"
    tokens.write_text(json.dumps({"access_token": "acc-1", "refresh_token": "ref-1"}))
    path = write(tmp_path, "[portal.oauth]\naccess_token = 'acc-0'\nrefresh_token = 'ref-0'\n")
    env = {**OAUTH_ENV, "BITRIX24_OAUTH_TOKEN_FILE": str(tokens)}
    auth = load_config(config_path=path, env=env).auth
    assert isinstance(auth, OAuthAuth)
    assert (auth.access_token, auth.refresh_token) == ("acc-1", "ref-1")


def test_incomplete_oauth_names_what_is_missing() -> None:
    msg = usage_error(env={"BITRIX24_OAUTH_ENDPOINT": "https://p.bitrix24.com/rest/"})
    assert "BITRIX24_OAUTH_ACCESS_TOKEN" in msg
    assert "portal.oauth.client_secret" in msg


def test_webhook_in_a_higher_source_replaces_oauth_of_a_lower_one(tmp_path: Path) -> None:
    path = write(tmp_path, "[portal.oauth]\nendpoint = 'https://p.bitrix24.com/rest/'\n")
    cfg = load_config(config_path=path, env={"BITRIX24_WEBHOOK_URL": URL})
    assert cfg.auth == WebhookAuth(URL)
    msg = usage_error(env={"BITRIX24_WEBHOOK_URL": URL, "BITRIX24_OAUTH_CLIENT_ID": "a"})
    assert "not both" in msg


def test_run_config_requires_auth_and_output() -> None:
    with pytest.raises(UsageError, match="BITRIX24_WEBHOOK_URL"):
        load_run_config(config_path=None, env={}, overrides={"output.root": "o"})
    with pytest.raises(UsageError, match="--out"):
        load_run_config(config_path=None, env={"BITRIX24_WEBHOOK_URL": URL}, overrides={})


def test_effective_config_masks_the_webhook_secret() -> None:
    cfg = load_run_config(
        config_path=None, env={"BITRIX24_WEBHOOK_URL": URL}, overrides={"output.root": "o"}
    )
    dumped = json.dumps(effective_config_dict(cfg))
    assert SECRET not in dumped
    assert "portal.bitrix24.com/rest/7/***/" in dumped
    assert SECRET in secrets_of(cfg)


# ------------------------------------------------------------------------------ the examples


@pytest.mark.parametrize("name", ["nightly.toml", "backfill.toml"])
def test_example_configs_load_into_a_run_config(name: str) -> None:
    path = str(REPO / "configs" / name)
    cfg = load_config(config_path=path, env={"BITRIX24_WEBHOOK_URL": URL})
    run = cfg.run_config()
    assert run.output.partition_by == "DATE_CREATE"
    assert run.output.partition_transform == "month"
    assert cfg.plan == "standard"
    json.dumps(effective_config_dict(cfg))


def test_nightly_is_incremental_and_backfill_resumes() -> None:
    nightly = load_config(config_path=str(REPO / "configs" / "nightly.toml"), env={})
    backfill = load_config(config_path=str(REPO / "configs" / "backfill.toml"), env={})
    assert nightly.ids.since_last_run
    assert nightly.log_format == "json"
    assert backfill.output is not None
    assert backfill.output.existing_data_behavior == "resume"
    assert backfill.fetch.concurrency > nightly.fetch.concurrency
