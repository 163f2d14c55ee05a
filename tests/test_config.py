"""Settings: every bad value is a one-line error that names its variable and never echoes a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, DemoMode, find_env_file, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    names = (
        "DUST_API_KEY",
        "DUST_WORKSPACE_ID",
        "DUST_BASE_URL",
        "REDIS_URL",
        "BRIDGE_DEMO",
        "BRIDGE_CONFIGURED_IN",
    )
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_demo_mode_without_a_key() -> None:
    settings = load_settings()
    assert settings.demo is DemoMode.AUTO
    assert settings.demo_active
    assert settings.port == 8080 and settings.host == "127.0.0.1"
    assert settings.context_ttl_seconds == 3600
    assert settings.heartbeat_seconds == 15


def test_real_mode_with_key_and_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUST_API_KEY", "sk-abcdef123456")
    monkeypatch.setenv("DUST_WORKSPACE_ID", "w0rkspace1")
    monkeypatch.setenv("DUST_BASE_URL", "https://eu.dust.tt/")
    settings = load_settings()
    assert not settings.demo_active
    assert settings.dust_base_url == "https://eu.dust.tt"
    assert "sk-abcdef123456" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DUST_BASE_URL", "ftp://dust.tt", "or an http(s) URL such as https://dust.tt or https://eu.dust.tt"),
        ("BRIDGE_CONTEXT_TTL_SECONDS", "abc", "BRIDGE_CONTEXT_TTL_SECONDS:"),
        (
            "BRIDGE_CONTEXT_TTL_SECONDS",
            "0",
            "BRIDGE_CONTEXT_TTL_SECONDS: Input should be greater than or equal to 1",
        ),
        (
            "BRIDGE_SESSION_TTL_SECONDS",
            "5",
            "BRIDGE_SESSION_TTL_SECONDS: Input should be greater than or equal to 60 (got '5')",
        ),
        ("BRIDGE_HEARTBEAT_SECONDS", "-1", "BRIDGE_HEARTBEAT_SECONDS:"),
        ("BRIDGE_DEMO", "maybe", "BRIDGE_DEMO:"),
        ("REDIS_URL", "http://:hunter2@localhost:6379", "REDIS_URL: must start with one of redis://"),
        ("BRIDGE_PORT", "70000", "BRIDGE_PORT:"),
        ("BRIDGE_LOG_LEVEL", "LOUD", "BRIDGE_LOG_LEVEL: must be one of"),
        (
            "BRIDGE_WORKERS",
            "0",
            "BRIDGE_WORKERS: must be auto (one per core the bridge may use) or a number of worker processes"
            " from 1 to 256 (got '0')",
        ),
        ("BRIDGE_WORKERS", "many", "BRIDGE_WORKERS: must be auto"),
        (
            "BRIDGE_DUST_KEEPALIVE_SECONDS",
            "0",
            "BRIDGE_DUST_KEEPALIVE_SECONDS: Input should be greater than 0",
        ),
        (
            "BRIDGE_REDIS_MAX_CONNECTIONS",
            "0",
            "BRIDGE_REDIS_MAX_CONNECTIONS: Input should be greater than or equal to 1 (got '0')",
        ),
        ("BRIDGE_REDIS_MAX_CONNECTIONS", "lots", "BRIDGE_REDIS_MAX_CONNECTIONS: Input should be a valid"),
        ("BRIDGE_REDIS_IDLE_SECONDS", "0", "BRIDGE_REDIS_IDLE_SECONDS: Input should be greater than 0"),
        (
            "BRIDGE_REDIS_POOL_TIMEOUT_SECONDS",
            "120",
            "BRIDGE_REDIS_POOL_TIMEOUT_SECONDS: Input should be less than or equal to 60",
        ),
    ],
)
def test_bad_value_names_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert "hunter2" not in message


def test_production_switch_makes_a_missing_key_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_DEMO", "off")
    with pytest.raises(ConfigError, match="DUST_API_KEY is required when BRIDGE_DEMO=off"):
        load_settings()


def test_key_without_workspace_is_an_error_that_does_not_echo_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUST_API_KEY", "sk-secretvalue999")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "DUST_WORKSPACE_ID" in str(info.value)
    assert "sk-secretvalue999" not in str(info.value)


def test_workspace_without_key_is_an_error_outside_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUST_WORKSPACE_ID", "w0rkspace1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == "DUST_API_KEY must be set together with the other Dust credential"


@pytest.mark.parametrize("key", ["", "  ", "${user_config.dust_api_key}", None])
@pytest.mark.parametrize("workspace", ["w0rkspace1", "my workspace"])
def test_in_the_extension_an_empty_key_is_demo_mode_whatever_the_workspace_says(
    monkeypatch: pytest.MonkeyPatch, key: str | None, workspace: str
) -> None:
    monkeypatch.setenv("BRIDGE_CONFIGURED_IN", "claude-desktop-extension")
    if key is not None:
        monkeypatch.setenv("DUST_API_KEY", key)
    monkeypatch.setenv("DUST_WORKSPACE_ID", workspace)
    settings = load_settings()
    assert settings.demo_active and settings.dust_workspace_id is None


def test_in_the_extension_a_key_without_workspace_is_worded_in_the_forms_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge.desktop import for_extension

    monkeypatch.setenv("BRIDGE_CONFIGURED_IN", "claude-desktop-extension")
    monkeypatch.setenv("DUST_API_KEY", "sk-secretvalue999")
    monkeypatch.setenv("DUST_WORKSPACE_ID", "${user_config.workspace_id}")
    with pytest.raises(ConfigError) as info:
        load_settings()
    sentence = for_extension(str(info.value))
    assert sentence.startswith(
        'The Dust agents extension is not set up correctly, so it cannot reach Dust: "Workspace ID": must be'
        " filled in with the Dust API key (the part after /w/ in your Dust URL), or leave the key empty to"
        " try the demo."
    )
    assert "DUST_" not in sentence and "sk-secretvalue999" not in sentence


def test_csv_lists_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_AGENT_TOOLS", "echo, dust ,")
    monkeypatch.setenv("BRIDGE_ALLOWED_HOSTS", "bridge.example.com")
    settings = load_settings()
    assert settings.agent_tools == ["echo", "dust"]
    assert settings.allowed_hosts == ["bridge.example.com"]


def test_the_example_file_is_valid_as_it_stands(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / ".env.example"
    (Path(str(tmp_path)) / ".env").write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_settings()
    assert settings.demo_active
    assert settings.upload_dir.endswith("dust-mcp-bridge")
    assert settings.redis_url is None and settings.agent_tools == []


def test_every_setting_is_documented_in_the_example_file() -> None:
    from pathlib import Path

    from bridge.config import Settings

    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text(encoding="utf-8")
    for field in Settings.model_fields.values():
        variable = field.validation_alias.choices[0]  # type: ignore[union-attr]
        assert f"\n{variable}=" in example, f"{variable} is missing from .env.example"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "CLAMD_URL",
            "http://clamd:3310",
            "CLAMD_URL: must be unix:///path/to/clamd.sock or tcp://host:port",
        ),
        ("BRIDGE_SCAN_MODE", "sometimes", "BRIDGE_SCAN_MODE:"),
        ("BRIDGE_UPLOAD_ALLOWED_TYPES", "application/x-msdownload", "not a type Dust accepts"),
        ("BRIDGE_UPLOAD_MAX_BYTES", "0", "BRIDGE_UPLOAD_MAX_BYTES:"),
    ],
)
def test_bad_upload_settings(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=expected):
        load_settings()


def test_every_list_setting_accepts_a_comma_separated_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import get_args

    from bridge.config import Settings

    samples = {
        "BRIDGE_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1",
        "BRIDGE_PRINCIPAL_PROXIES": "10.1.2.3,fd00::/8",
        "BRIDGE_CORS_ORIGINS": "https://a.example,https://b.example",
        "BRIDGE_UPLOAD_ALLOWED_TYPES": "application/pdf,image/png",
    }
    list_fields = [
        name
        for name, f in Settings.model_fields.items()
        if list in (get_args(f.annotation) or (f.annotation,)) or str(f.annotation).startswith("list")
    ]
    for name in list_fields:
        variable = Settings.model_fields[name].validation_alias.choices[0]  # type: ignore[union-attr]
        monkeypatch.setenv(variable, samples.get(variable, "a,b"))
    for variable in ("BRIDGE_API_KEYS",):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("BRIDGE_PRINCIPAL_HEADER", "X-Auth-Request-Email")  # the proxies need it
    for folder in ("a", "b"):  # BRIDGE_UPLOAD_ROOTS: folders that exist (relative to the test's cwd)
        Path(folder).mkdir()
    settings = load_settings()
    assert settings.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    assert settings.principal_proxies == ["10.1.2.3", "fd00::/8"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_oauth_needs_issuer_audience_and_public_url_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_OAUTH_ISSUER", "https://auth.example.com")
    with pytest.raises(ConfigError, match="set both or neither"):
        load_settings()
    monkeypatch.setenv("BRIDGE_OAUTH_AUDIENCE", "bridge")
    with pytest.raises(ConfigError, match="BRIDGE_PUBLIC_URL"):
        load_settings()
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "https://bridge.example.com/")
    assert load_settings().public_url == "https://bridge.example.com"


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("on", True), ("off", False), ("true", True)])
def test_access_log_is_off_unless_asked_for(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is not None:
        monkeypatch.setenv("BRIDGE_ACCESS_LOG", value)
    assert load_settings().access_log is expected


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "BRIDGE_DUST_TIMEZONE",
            "Europe/Pari",
            "BRIDGE_DUST_TIMEZONE: must be a timezone name Dust accepts, e.g. UTC or Europe/Paris;"
            " did you mean Europe/Paris",
        ),
        ("BRIDGE_DUST_TIMEZONE", "CEST", "BRIDGE_DUST_TIMEZONE: must be a timezone name Dust accepts"),
        ("BRIDGE_DUST_ORIGIN", "apii", "BRIDGE_DUST_ORIGIN: must be an origin Dust accepts from an API key"),
        ("BRIDGE_DUST_ORIGIN", "slack", "BRIDGE_DUST_ORIGIN: must be an origin Dust accepts from an API key"),
        ("BRIDGE_DUST_USERNAME", "   ", "BRIDGE_DUST_USERNAME:"),
        ("BRIDGE_DUST_USERNAME", "x" * 256, "BRIDGE_DUST_USERNAME: must be at most 255 characters"),
        # Dust counts JavaScript characters: an emoji is two.
        ("BRIDGE_DUST_USERNAME", "\N{GRINNING FACE}" * 128, "BRIDGE_DUST_USERNAME: must be at most 255"),
    ],
)
def test_a_value_dust_would_refuse_is_a_startup_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_values_dust_accepts_pass() -> None:
    settings = load_settings(
        BRIDGE_DUST_TIMEZONE="America/Argentina/Buenos_Aires", BRIDGE_DUST_ORIGIN="zapier"
    )
    assert (settings.dust_timezone, settings.dust_origin) == ("America/Argentina/Buenos_Aires", "zapier")


@pytest.mark.parametrize("url", ["http://dust.example.com", "http://10.0.0.5:3000", "http://[2001:db8::1]"])
def test_plain_http_to_a_remote_dust_is_refused_because_the_key_would_travel_in_clear(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(DUST_BASE_URL=url)
    assert str(caught.value).startswith("DUST_BASE_URL: plain http:// to a host other than this machine")
    assert "BRIDGE_DUST_ALLOW_INSECURE_HTTP=true" in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8787", "http://localhost:8787", "http://[::1]:8787"])
def test_plain_http_to_this_machine_is_fine(url: str) -> None:
    assert load_settings(DUST_BASE_URL=url).dust_base_url == url


def test_plain_http_to_a_remote_dust_when_explicitly_allowed() -> None:
    settings = load_settings(DUST_BASE_URL="http://dust.internal", BRIDGE_DUST_ALLOW_INSECURE_HTTP="true")
    assert settings.dust_base_url == "http://dust.internal"


def test_the_timezone_list_is_the_sdks() -> None:
    from bridge.dust.timezone_names import TIMEZONE_NAMES

    # Spot checks; the whole list is compared with the pinned SDK's in tests/contract.
    assert {"UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"} <= TIMEZONE_NAMES
    assert "CEST" not in TIMEZONE_NAMES


def test_clamd_url_follows_the_packaged_clamds_socket_when_it_exists(tmp_path: Path) -> None:
    import socket

    from bridge.config import FALLBACK_CLAMD_URL, default_clamd_url

    path = tmp_path / "clamd.ctl"
    assert default_clamd_url((str(path),)) == FALLBACK_CLAMD_URL
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert default_clamd_url(("/nonexistent/clamd.ctl", str(path))) == f"unix://{path}"


def test_an_empty_clamd_url_means_the_default() -> None:
    from bridge.config import default_clamd_url

    assert load_settings(CLAMD_URL="").clamd_url == default_clamd_url()


@pytest.mark.parametrize("reference", ["${DUST_API_KEY}", "${env:DUST_API_KEY}", "sk-${KEY}"])
def test_a_key_reference_the_client_did_not_fill_in_is_a_start_up_error(
    monkeypatch: pytest.MonkeyPatch, reference: str
) -> None:
    monkeypatch.setenv("DUST_API_KEY", reference)
    monkeypatch.setenv("DUST_WORKSPACE_ID", "w0rkspace1")
    with pytest.raises(
        ConfigError, match=r"DUST_API_KEY: \$\{\.\.\.\} is a reference the MCP client did not fill in"
    ) as err:
        load_settings()
    assert reference not in str(err.value)


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("dust.tt", "https://dust.tt"),
        (" eu.dust.tt ", "https://eu.dust.tt"),
        ("EU.dust.tt/", "https://eu.dust.tt"),
        ("https://eu.dust.tt/", "https://eu.dust.tt"),
    ],
)
def test_a_region_may_be_given_as_its_host(monkeypatch: pytest.MonkeyPatch, value: str, url: str) -> None:
    monkeypatch.setenv("DUST_BASE_URL", value)
    assert load_settings().dust_base_url == url


@pytest.mark.parametrize("value", ["eu", "europe", "dust", "eu.dust.tt/w/abc"])
def test_another_bare_word_is_no_region(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DUST_BASE_URL", value)
    with pytest.raises(ConfigError, match=r"^DUST_BASE_URL: must be dust.tt or eu.dust.tt"):
        load_settings()


def test_a_placeholder_claude_desktop_left_unsubstituted_counts_as_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge.config import ScanMode, unsubstituted_variables

    placeholders = {
        "DUST_API_KEY": "${user_config.dust_api_key}",
        "DUST_WORKSPACE_ID": " ${user_config.workspace_id}",
        "DUST_BASE_URL": "${user_config.region}",
        "BRIDGE_SCAN_MODE": "${user_config.scan_mode}",
        "BRIDGE_UPLOAD_ROOTS": "${user_config.upload_roots}",
    }
    for name, value in placeholders.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.dust_api_key is None and settings.dust_workspace_id is None and settings.demo_active
    assert settings.dust_base_url == "https://dust.tt" and settings.scan_mode is ScanMode.REQUIRED
    assert settings.upload_roots == []
    assert unsubstituted_variables(placeholders) == sorted(placeholders)
    assert unsubstituted_variables({"A": "${HOME}/x", "B": "${user_config.x} and more"}) == []


def test_a_missing_upload_folder_stops_the_start_unless_the_extension_configures_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bridge.config import ConfiguredIn

    monkeypatch.setenv("BRIDGE_UPLOAD_ROOTS", f"{tmp_path},{tmp_path / 'gone'}")
    with pytest.raises(ConfigError, match=r"BRIDGE_UPLOAD_ROOTS: not a folder: .*gone"):
        load_settings()
    monkeypatch.setenv("BRIDGE_CONFIGURED_IN", "claude-desktop-extension")
    settings = load_settings()
    assert settings.configured_in is ConfiguredIn.CLAUDE_DESKTOP_EXTENSION
    # Kept: skipped when a path upload looks (and named in its refusal), allowed once it exists.
    assert settings.upload_roots == [str(tmp_path), str(tmp_path / "gone")]


def test_an_emptied_region_or_scan_mode_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.config import ScanMode

    monkeypatch.setenv("DUST_BASE_URL", "")
    monkeypatch.setenv("BRIDGE_SCAN_MODE", " ")
    settings = load_settings()
    assert settings.dust_base_url == "https://dust.tt" and settings.scan_mode is ScanMode.REQUIRED


@pytest.mark.parametrize(("typed", "mode"), [("Off", "off"), (" OFF ", "off"), ("REQUIRED", "required")])
def test_the_scan_mode_is_read_whatever_its_case(
    monkeypatch: pytest.MonkeyPatch, typed: str, mode: str
) -> None:
    monkeypatch.setenv("BRIDGE_SCAN_MODE", typed)
    assert load_settings().scan_mode == mode


def test_a_principal_header_comes_with_the_proxies_that_may_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_PRINCIPAL_HEADER", "X-Auth-Request-Email")
    with pytest.raises(ConfigError, match="BRIDGE_PRINCIPAL_HEADER needs BRIDGE_PRINCIPAL_PROXIES"):
        load_settings()
    monkeypatch.setenv("BRIDGE_PRINCIPAL_PROXIES", "10.0.0.7, 10.1.0.0/16")
    settings = load_settings()
    assert settings.principal_header == "X-Auth-Request-Email"
    assert settings.principal_proxies == ["10.0.0.7", "10.1.0.0/16"]
    monkeypatch.setenv("BRIDGE_PRINCIPAL_HEADER", " ")  # emptied: off, and the proxies alone mean nothing
    with pytest.raises(ConfigError, match="BRIDGE_PRINCIPAL_PROXIES has no effect without"):
        load_settings()
    monkeypatch.delenv("BRIDGE_PRINCIPAL_PROXIES")
    assert load_settings().principal_header is None


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("BRIDGE_PRINCIPAL_HEADER", "X Auth", "must be an HTTP header name"),
        ("BRIDGE_PRINCIPAL_HEADER", "X-Auth:", "must be an HTTP header name"),
        ("BRIDGE_PRINCIPAL_HEADER", "Authorization", "already means something else to the bridge"),
        ("BRIDGE_PRINCIPAL_HEADER", "x-api-key", "already means something else to the bridge"),
        ("BRIDGE_PRINCIPAL_PROXIES", "proxy.internal", "'proxy.internal' is not an IP address or network"),
        ("BRIDGE_PRINCIPAL_PROXIES", "0.0.0.0/0", "must not trust every address"),
        ("BRIDGE_PRINCIPAL_PROXIES", "10.0.0.1,::/0", "must not trust every address"),
    ],
)
def test_bad_proxy_identity_settings(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("BRIDGE_PRINCIPAL_HEADER", "X-Forwarded-User")
    monkeypatch.setenv("BRIDGE_PRINCIPAL_PROXIES", "127.0.0.1")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=expected):
        load_settings()


def test_the_redis_pool_settings_default_to_the_pools_own_limits() -> None:
    from bridge.store.pool import PoolLimits

    settings = load_settings()
    assert (
        PoolLimits(
            settings.redis_max_connections, settings.redis_idle_seconds, settings.redis_pool_timeout_seconds
        )
        == PoolLimits()
    )


@pytest.mark.parametrize(
    ("value", "workers"), [("", None), ("auto", None), (" AUTO ", None), ("1", 1), (" 12", 12), ("256", 256)]
)
def test_workers_are_auto_when_empty_or_a_count(
    monkeypatch: pytest.MonkeyPatch, value: str, workers: int | None
) -> None:
    monkeypatch.setenv("BRIDGE_WORKERS", value)
    assert load_settings().workers == workers


# --- which .env ----------------------------------------------------------------------------------


@pytest.fixture
def checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A source checkout with a .env, the bridge's own (`_CHECKOUT`); the command runs elsewhere."""
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'dust-mcp-bridge'\n")
    (root / ".env").write_text("BRIDGE_PORT=9123\n")
    monkeypatch.setattr("bridge.config._CHECKOUT", root)
    for name in ("BRIDGE_ENV_FILE", "BRIDGE_PORT"):
        monkeypatch.delenv(name, raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root


def test_a_command_run_from_another_directory_reads_the_checkouts_env(checkout: Path) -> None:
    found = find_env_file()
    assert found == (checkout / ".env").resolve()
    assert load_settings(found).port == 9123


def test_a_dotenv_in_the_current_directory_comes_before_the_checkouts(checkout: Path) -> None:
    here = Path.cwd() / ".env"
    here.write_text("BRIDGE_PORT=9124\n")
    assert find_env_file() == here.resolve()


def test_an_installed_package_reads_no_env_beside_it(checkout: Path) -> None:
    # site-packages has no pyproject.toml: a .env that happens to sit there is not the user's
    (checkout / "pyproject.toml").unlink()
    assert find_env_file() is None
