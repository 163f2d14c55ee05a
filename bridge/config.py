"""Settings, read once from the environment (and `.env`) and validated at start-up.

The variable names are the public interface (DESIGN.md section 2): Dust's own settings keep the
`DUST_` prefix, `REDIS_URL` is the conventional name, everything else is `BRIDGE_`. Each field
therefore names its variable explicitly instead of relying on one prefix; `.env.example` lists them.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bridge.dust.message_origins import API_KEY_ORIGINS
from bridge.dust.timezone_names import TIMEZONE_NAMES


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is one human line naming the variable."""


class ScanMode(enum.StrEnum):
    """Whether uploads must pass the virus scanner."""

    REQUIRED = "required"  # fail closed: no clamd, no upload
    OFF = "off"  # only by explicit choice; every record then says scan: skipped


class DemoMode(enum.StrEnum):
    """Whether the bridge may fall back to the bundled Dust simulator."""

    AUTO = "auto"  # simulator when no Dust key is configured, loudly
    ON = "on"  # always the simulator
    OFF = "off"  # production: a missing Dust key is a start-up error


class ConfiguredIn(enum.StrEnum):
    """Where the user edits the settings, so that what the bridge says points there."""

    ENVIRONMENT = "environment"  # variables or a .env file: messages name the variables
    # The Claude Desktop extension's settings form (bundle/manifest.json sets this): messages name its
    # fields, a folder that does not exist is skipped (with a word in the refusal of a path upload), a
    # configuration error is the answer of every tool call instead of an exit, and a missing clamd
    # is explained with how to install it or switch scanning off.
    CLAUDE_DESKTOP_EXTENSION = "claude-desktop-extension"


# What Claude Desktop leaves in an extension's variable when a setting has no value and no default:
# the manifest's `${user_config.NAME}` itself. It means "unset", never a value.
_UNSUBSTITUTED = re.compile(r"^\$\{user_config\.[^}]*\}$")


def is_unsubstituted(value: str) -> bool:
    """Whether `value` is a `${user_config.NAME}` placeholder Claude Desktop left as it was."""
    return bool(_UNSUBSTITUTED.match(value.strip()))


def unsubstituted_variables(environ: Mapping[str, str]) -> list[str]:
    """The variables of `environ` that hold such a placeholder (they count as unset)."""
    return sorted(name for name, value in environ.items() if is_unsubstituted(value))


# Where Debian's and Ubuntu's clamav-daemon package puts clamd's socket (/var/run links to /run).
PACKAGED_CLAMD_SOCKETS = ("/var/run/clamav/clamd.ctl", "/run/clamav/clamd.ctl")
FALLBACK_CLAMD_URL = "tcp://127.0.0.1:3310"


def default_clamd_url(candidates: tuple[str, ...] = PACKAGED_CLAMD_SOCKETS) -> str:
    """CLAMD_URL when unset: the packaged clamd's unix socket where it exists, else tcp://127.0.0.1:3310."""
    for path in candidates:
        if Path(path).is_socket():
            return f"unix://{path}"
    return FALLBACK_CLAMD_URL


# More worker processes than this is a typo, not a plan: each one holds its own connections and memory.
MAX_WORKERS = 256

# Dust's regions, by the host of their web app and API.
DUST_REGIONS = ("dust.tt", "eu.dust.tt")


def _env(name: str) -> Any:
    return Field(validation_alias=AliasChoices(name))


def _default_upload_dir() -> str:
    return str(Path(tempfile.gettempdir()) / "dust-mcp-bridge")


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of the bridge. Build it with `load_settings()` to get one-line errors."""

    # No `.env` unless `load_settings` names one (see `find_env_file`).
    model_config = SettingsConfigDict(
        env_file=None,
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=False,
        case_sensitive=False,
    )

    # Dust
    dust_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("DUST_API_KEY"))
    dust_workspace_id: str | None = Field(default=None, validation_alias=AliasChoices("DUST_WORKSPACE_ID"))
    dust_base_url: str = Field(default="https://dust.tt", validation_alias=AliasChoices("DUST_BASE_URL"))
    dust_allow_insecure_http: bool = Field(
        default=False, validation_alias=AliasChoices("BRIDGE_DUST_ALLOW_INSECURE_HTTP")
    )
    dust_username: str = Field(default="mcp-bridge", validation_alias=AliasChoices("BRIDGE_DUST_USERNAME"))
    dust_timezone: str = Field(default="UTC", validation_alias=AliasChoices("BRIDGE_DUST_TIMEZONE"))
    dust_origin: str = Field(default="api", validation_alias=AliasChoices("BRIDGE_DUST_ORIGIN"))
    dust_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, validation_alias=AliasChoices("BRIDGE_DUST_TIMEOUT_SECONDS")
    )
    answer_timeout_seconds: float = Field(
        default=900.0, gt=0, le=86400, validation_alias=AliasChoices("BRIDGE_ANSWER_TIMEOUT_SECONDS")
    )
    # Claude Desktop (local servers) and claude.ai give up on a tool call after about 60 s.
    answer_deadline_seconds: float = Field(
        default=45.0, ge=0, le=86400, validation_alias=AliasChoices("BRIDGE_ANSWER_DEADLINE_SECONDS")
    )
    stream_max_reconnects: int = Field(
        default=10, ge=0, le=1000, validation_alias=AliasChoices("BRIDGE_STREAM_MAX_RECONNECTS")
    )
    # Each streaming answer holds one connection to Dust for its whole duration.
    dust_max_connections: int = Field(
        default=1000, ge=10, le=100_000, validation_alias=AliasChoices("BRIDGE_DUST_MAX_CONNECTIONS")
    )
    # Below the idle timeout of the server on the other end (uvicorn's and Node's are 5 s), so a POST
    # rarely meets a connection the server is closing (it is then sent again on a new one).
    dust_keepalive_seconds: float = Field(
        default=4.0, gt=0, le=300, validation_alias=AliasChoices("BRIDGE_DUST_KEEPALIVE_SECONDS")
    )
    dust_max_retries: int = Field(
        default=3, ge=0, le=10, validation_alias=AliasChoices("BRIDGE_DUST_MAX_RETRIES")
    )
    breaker_failures: int = Field(
        default=5, ge=1, le=1000, validation_alias=AliasChoices("BRIDGE_BREAKER_FAILURES")
    )
    breaker_reset_seconds: float = Field(
        default=30.0, gt=0, le=3600, validation_alias=AliasChoices("BRIDGE_BREAKER_RESET_SECONDS")
    )
    demo: DemoMode = Field(default=DemoMode.AUTO, validation_alias=AliasChoices("BRIDGE_DEMO"))

    # Context store
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))
    store_encryption_keys: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BRIDGE_STORE_ENCRYPTION_KEY")
    )
    context_ttl_seconds: int = Field(
        default=3600, ge=1, le=30 * 86400, validation_alias=AliasChoices("BRIDGE_CONTEXT_TTL_SECONDS")
    )
    # A handshake-era MCP session unused for this long ends (404; the client initializes again).
    # Its record sits in the context store, so any worker or replica serves it and a restart keeps it;
    # 1800 is the MCP SDK's own idle timeout, which clients already live with.
    session_ttl_seconds: int = Field(
        default=1800, ge=60, le=30 * 86400, validation_alias=AliasChoices("BRIDGE_SESSION_TTL_SECONDS")
    )
    # The process's one pool of Redis connections, shared by the store, the request counter and the
    # answer slots (bridge/store/pool.py; the same defaults as its PoolLimits). A connection is held
    # for one round trip, never for a whole answer, so the pool is sized for round trips in flight at
    # once. Request counts cost little (a busy principal pays up to 64 hits per round trip) and a
    # streaming answer one lease renewal every 10 s; what comes at once is answers starting: each
    # leases a slot and reads its context first. 128 lets 16 principals start all 8 of their answers
    # (the default BRIDGE_MAX_CONCURRENT_ANSWERS) in the same instant without waiting; on a saturated
    # core a round trip holds its connection much longer, and the 500-client load run needs more
    # than 64 there (docs/performance.md, "Redis connections"). 78 replicas at 128 stay under
    # Redis's default maxclients (10,000).
    redis_max_connections: int = Field(
        default=128, ge=1, le=10_000, validation_alias=AliasChoices("BRIDGE_REDIS_MAX_CONNECTIONS")
    )
    # A connection unused this long is closed: a burst's extra connections go within a minute, while
    # a conversation's next turn usually finds one open. Below the idle cut-off of the usual proxies
    # and load balancers in front of Redis, so a reused connection has rarely been dropped under it.
    redis_idle_seconds: float = Field(
        default=60.0, gt=0, le=86400, validation_alias=AliasChoices("BRIDGE_REDIS_IDLE_SECONDS")
    )
    # How long a command waits for a free connection before the store answers that Redis is busy
    # (and the limiter takes its Redis-is-down path); as long as a command may take itself.
    redis_pool_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, validation_alias=AliasChoices("BRIDGE_REDIS_POOL_TIMEOUT_SECONDS")
    )

    configured_in: ConfiguredIn = Field(
        default=ConfiguredIn.ENVIRONMENT, validation_alias=AliasChoices("BRIDGE_CONFIGURED_IN")
    )

    # Uploads
    # Folders whose files `upload_file(path=...)` may read, on the user's own machine (stdio only).
    upload_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_UPLOAD_ROOTS")
    )
    clamd_url: str = Field(
        default_factory=lambda: default_clamd_url(), validation_alias=AliasChoices("CLAMD_URL")
    )
    scan_mode: ScanMode = Field(default=ScanMode.REQUIRED, validation_alias=AliasChoices("BRIDGE_SCAN_MODE"))
    scan_timeout_seconds: float = Field(
        default=120.0, gt=0, le=3600, validation_alias=AliasChoices("BRIDGE_SCAN_TIMEOUT_SECONDS")
    )
    upload_max_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1,
        le=100 * 1024 * 1024,
        validation_alias=AliasChoices("BRIDGE_UPLOAD_MAX_BYTES"),
    )
    upload_allowed_types: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_UPLOAD_ALLOWED_TYPES")
    )
    # Largest file an agent made that resources/read returns (the whole file goes into the answer).
    file_read_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        le=100 * 1024 * 1024,
        validation_alias=AliasChoices("BRIDGE_FILE_READ_MAX_BYTES"),
    )
    upload_ttl_seconds: int = Field(
        default=86400, ge=60, le=30 * 86400, validation_alias=AliasChoices("BRIDGE_UPLOAD_TTL_SECONDS")
    )
    upload_dir: str = Field(
        default_factory=lambda: _default_upload_dir(), validation_alias=AliasChoices("BRIDGE_UPLOAD_DIR")
    )
    # Uploads fetched from a URL (bridge/uploads/url_fetch.py): https only, public addresses only, the
    # vetted address pinned for the connection, every redirect re-checked, the size and time bounded.
    url_fetch_allow_http: bool = Field(
        default=False, validation_alias=AliasChoices("BRIDGE_URL_FETCH_ALLOW_HTTP")
    )
    url_fetch_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, validation_alias=AliasChoices("BRIDGE_URL_FETCH_TIMEOUT_SECONDS")
    )
    # DANGEROUS: addresses in these networks may be fetched although they are private (tests, private
    # deployments); every service listening there becomes reachable by whoever can call upload_file.
    url_fetch_allow_networks: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = Field(default=(), validation_alias=AliasChoices("BRIDGE_URL_FETCH_ALLOW_NETWORKS"))

    @model_validator(mode="before")
    @classmethod
    def _drop_unsubstituted(cls, data: Any) -> Any:
        """A `${user_config.NAME}` left by Claude Desktop is no value, and neither is an emptied field of
        the extension's form: the setting keeps its default."""
        if isinstance(data, dict):
            kept = {
                key: value
                for key, value in data.items()
                if not _is_placeholder(value)
                and not (
                    str(key).upper() in _EMPTY_MEANS_DEFAULT and isinstance(value, str) and not value.strip()
                )
            }
            return _without_demo_workspace(kept)
        return data

    @field_validator("url_fetch_allow_http", mode="before")
    @classmethod
    def _url_fetch_allow_http(cls, value: Any) -> Any:
        words = {"true", "false", "1", "0", "yes", "no", "on", "off", "t", "f", "y", "n"}
        if isinstance(value, str) and value.strip().lower() not in words:
            raise ValueError("must be true or false")
        return value.strip() if isinstance(value, str) else value

    @field_validator("url_fetch_timeout_seconds", mode="before")
    @classmethod
    def _url_fetch_timeout(cls, value: Any) -> Any:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = float("nan")
        if not 0 < seconds <= 3600:  # also refuses nan
            raise ValueError("must be a number of seconds above 0 and at most 3600, e.g. 60")
        return seconds

    @field_validator("url_fetch_allow_networks", mode="before")
    @classmethod
    def _url_fetch_networks(cls, value: Any) -> Any:
        entries = _split_csv(value) if isinstance(value, str) else value
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{str(entry)!r} is not an IP network in CIDR form (e.g. 127.0.0.1/32 or fd12:3456::/48)"
                ) from None
        return tuple(networks)

    # MCP behaviour
    heartbeat_seconds: float = Field(
        default=15.0, gt=0, le=300, validation_alias=AliasChoices("BRIDGE_HEARTBEAT_SECONDS")
    )
    coalesce_ms: int = Field(default=100, ge=0, le=5000, validation_alias=AliasChoices("BRIDGE_COALESCE_MS"))
    coalesce_chars: int = Field(
        default=200, ge=1, le=100_000, validation_alias=AliasChoices("BRIDGE_COALESCE_CHARS")
    )
    show_chain_of_thought: bool = Field(
        default=False, validation_alias=AliasChoices("BRIDGE_SHOW_CHAIN_OF_THOUGHT")
    )
    max_message_chars: int = Field(
        default=100_000, ge=1, le=512 * 1024, validation_alias=AliasChoices("BRIDGE_MAX_MESSAGE_CHARS")
    )
    agent_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_AGENT_TOOLS")
    )
    agents_cache_seconds: float = Field(
        default=60.0, ge=0, le=86400, validation_alias=AliasChoices("BRIDGE_AGENTS_CACHE_SECONDS")
    )

    # Access control
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_API_KEYS")
    )

    # Behind an authenticating proxy (docs/security.md): the header it names its user in, believed only
    # on connections from these addresses (bridge/security/proxy_identity.py). Both or neither.
    principal_header: str | None = Field(
        default=None, validation_alias=AliasChoices("BRIDGE_PRINCIPAL_HEADER")
    )
    principal_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_PRINCIPAL_PROXIES")
    )

    metrics_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("BRIDGE_METRICS_KEY"))
    oauth_issuer: str | None = Field(default=None, validation_alias=AliasChoices("BRIDGE_OAUTH_ISSUER"))
    oauth_audience: str | None = Field(default=None, validation_alias=AliasChoices("BRIDGE_OAUTH_AUDIENCE"))
    oauth_jwks_url: str | None = Field(default=None, validation_alias=AliasChoices("BRIDGE_OAUTH_JWKS_URL"))
    public_url: str | None = Field(default=None, validation_alias=AliasChoices("BRIDGE_PUBLIC_URL"))
    rate_limit: str = Field(default="300/minute", validation_alias=AliasChoices("BRIDGE_RATE_LIMIT"))
    max_concurrent_answers: int = Field(
        default=8, ge=1, le=10_000, validation_alias=AliasChoices("BRIDGE_MAX_CONCURRENT_ANSWERS")
    )
    # With REDIS_URL, answer slots are leases in Redis shared by every replica; a replica that dies
    # holding some frees them after this long (they are renewed every third of it while answering).
    concurrency_lease_seconds: float = Field(
        default=30.0, ge=1, le=3600, validation_alias=AliasChoices("BRIDGE_CONCURRENCY_LEASE_SECONDS")
    )
    # Read only encrypted context records: a plain one (written before encryption, or planted in
    # Redis by someone without the key) reads as absent. Needs BRIDGE_STORE_ENCRYPTION_KEY.
    store_require_encryption: bool = Field(
        default=False, validation_alias=AliasChoices("BRIDGE_STORE_REQUIRE_ENCRYPTION")
    )

    # HTTP server
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("BRIDGE_HOST"))
    port: int = Field(default=8080, ge=0, le=65535, validation_alias=AliasChoices("BRIDGE_PORT"))
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_ALLOWED_HOSTS")
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_ALLOWED_ORIGINS")
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_TRUSTED_PROXIES")
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("BRIDGE_CORS_ORIGINS")
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("BRIDGE_LOG_LEVEL"))
    log_format: Literal["text", "json"] = Field(
        default="text", validation_alias=AliasChoices("BRIDGE_LOG_FORMAT")
    )
    # uvicorn's per-request access log line. Off by default: it cost about 0.3 ms of CPU per request
    # (10% of a tools/list; docs/performance.md), and bridge_http_requests_total plus the audit log
    # already count every request and tool call.
    access_log: bool = Field(default=False, validation_alias=AliasChoices("BRIDGE_ACCESS_LOG"))
    shutdown_grace_seconds: int = Field(
        default=30, ge=0, le=3600, validation_alias=AliasChoices("BRIDGE_SHUTDOWN_GRACE_SECONDS")
    )
    # Worker processes of `serve` (bridge/workers.py); None is automatic: one per core the process may
    # use with REDIS_URL, else one (what workers must share lives in Redis).
    workers: int | None = Field(default=None, validation_alias=AliasChoices("BRIDGE_WORKERS"))

    @field_validator(
        "agent_tools",
        "allowed_hosts",
        "allowed_origins",
        "upload_allowed_types",
        "upload_roots",
        "api_keys",
        "principal_proxies",
        "trusted_proxies",
        "cors_origins",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        return parse_workers(value)

    @field_validator("dust_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip()
        # A region as its host (the extension's "Region" field): dust.tt or eu.dust.tt.
        if value.lower().rstrip("/") in DUST_REGIONS:
            return f"https://{value.lower().rstrip('/')}"
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "must be dust.tt or eu.dust.tt (the host of your Dust URL), or an http(s) URL such as"
                " https://dust.tt or https://eu.dust.tt"
            )
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.rstrip("/")

    @field_validator("dust_username")
    @classmethod
    def _username(cls, value: str) -> str:
        # Dust refuses an empty username and one over 255 JavaScript characters (UTF-16 code units;
        # isUserMessageContextValid in front/lib/api/assistant/conversation.ts).
        value = value.strip()
        if not value:
            raise ValueError("must not be empty: it is the name Dust shows for the bridge's messages")
        if len(value.encode("utf-16-le")) // 2 > 255:
            raise ValueError("must be at most 255 characters, as Dust counts them (UTF-16)")
        return value

    @field_validator("dust_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        # Dust refuses (400) any name outside its SDK's list, on the first message a user sends.
        return _one_of(value, TIMEZONE_NAMES, "a timezone name Dust accepts, e.g. UTC or Europe/Paris")

    @field_validator("dust_origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        # Dust refuses other origins to an API key (400 on the first message) and silently turns
        # one it does not know at all into "api": either way a typo should stop the start.
        return _one_of(value, API_KEY_ORIGINS, "an origin Dust accepts from an API key, normally api")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        from bridge.store.connection import parse_redis_url

        parse_redis_url(value)  # its messages never quote the URL, which may hold a password
        return value

    @field_validator("clamd_url", mode="before")
    @classmethod
    def _clamd_default(cls, value: Any) -> Any:
        # Empty (as in .env.example) means the default: the packaged clamd's socket, or TCP 3310.
        return default_clamd_url() if isinstance(value, str) and not value.strip() else value

    @field_validator("clamd_url")
    @classmethod
    def _clamd_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "unix" and parts.path:
            return value
        if parts.scheme == "tcp" and parts.hostname and parts.port:
            return value
        raise ValueError("must be unix:///path/to/clamd.sock or tcp://host:port")

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: list[str]) -> list[str]:
        from bridge.security.auth import parse_keys

        try:
            parse_keys(value)
        except OSError as exc:
            raise ValueError(f"cannot read the key file ({exc.strerror})") from None
        return value

    @field_validator("store_encryption_keys")
    @classmethod
    def _store_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from bridge.store.sealing import Sealer

        Sealer(_split_csv(value.get_secret_value()))  # raises a message that holds no key material
        return value

    @field_validator("store_require_encryption")
    @classmethod
    def _require_encryption(cls, value: bool, info: ValidationInfo) -> bool:
        # Declared after the keys, so their (validated) value is known here; a bad key is its own error.
        if value and "store_encryption_keys" in info.data and info.data["store_encryption_keys"] is None:
            raise ValueError("needs BRIDGE_STORE_ENCRYPTION_KEY: without a key no record could be read")
        return value

    @property
    def store_keys(self) -> list[str]:
        """The context-store encryption keys, newest first (empty: no encryption)."""
        if self.store_encryption_keys is None:
            return []
        return list(_split_csv(self.store_encryption_keys.get_secret_value()))

    @field_validator("oauth_issuer", "oauth_jwks_url", "public_url")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("oauth_audience")
    @classmethod
    def _audience(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("trusted_proxies", "principal_proxies")
    @classmethod
    def _proxies(cls, value: list[str], info: ValidationInfo) -> list[str]:
        from bridge.security.proxy_identity import parse_networks

        networks = parse_networks(value)
        if info.field_name == "principal_proxies" and any(net.prefixlen == 0 for net in networks):
            raise ValueError(
                "must not trust every address: anyone who reaches the bridge could then name any user;"
                " list the authenticating proxy's own addresses"
            )
        return value

    @field_validator("principal_header")
    @classmethod
    def _principal_header(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError("must be an HTTP header name, e.g. X-Auth-Request-Email or X-Forwarded-User")
        if value.lower() in _HEADERS_READ_OTHERWISE:
            raise ValueError(
                f"{value} already means something else to the bridge; name the header the proxy sets"
            )
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
        return [origin.rstrip("/") for origin in value]

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError("must look like 300/minute, 20/second or 5000/hour") from None
        return value

    @field_validator("upload_dir")
    @classmethod
    def _upload_dir(cls, value: str) -> str:
        # An empty value (as in .env.example) means the default, never the working directory.
        return str(Path(value).resolve()) if value.strip() else _default_upload_dir()

    @field_validator("upload_roots")
    @classmethod
    def _upload_roots(cls, value: list[str], info: ValidationInfo) -> list[str]:
        roots = [root for root in value if not is_unsubstituted(root)]
        missing = [root for root in roots if not Path(root).expanduser().is_dir()]
        # A settings form cannot be checked before the bridge starts: there a folder that does not
        # exist is skipped, and a path upload's refusal says so (bridge/uploads/local_files.py).
        in_form = info.data.get("configured_in") is ConfiguredIn.CLAUDE_DESKTOP_EXTENSION
        if missing and not in_form:
            raise ValueError(f"not a folder: {', '.join(missing)}")
        return [str(Path(root).expanduser()) for root in roots]

    @field_validator("scan_mode", mode="before")
    @classmethod
    def _scan_mode(cls, value: Any) -> Any:
        # Typed by hand in the extension's form, where "Off" is as likely as "off".
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("upload_allowed_types")
    @classmethod
    def _upload_types(cls, value: list[str]) -> list[str]:
        from bridge.uploads.mime import unknown_types

        unknown = unknown_types(value)
        if unknown:
            raise ValueError(f"not a type Dust accepts: {', '.join(unknown)}")
        return [v.lower() for v in value]

    @field_validator("dust_api_key")
    @classmethod
    def _api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        if "${" in value.get_secret_value():
            # `${DUST_API_KEY}` from a client config (client-config) that the client did not fill in.
            # Worded so that a client masking "KEY: <value>" in its log (Claude Code does) masks the
            # reference, not the sentence.
            raise ValueError(
                "${...} is a reference the MCP client did not fill in: set the variable where the client"
                " runs, or keep the key in a .env file named by BRIDGE_ENV_FILE"
            )
        return value

    @field_validator("dust_workspace_id")
    @classmethod
    def _workspace(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.isalnum():
            raise ValueError(
                "must be the workspace sId (letters and digits only, from the Dust URL /w/<sId>)"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _dust_credentials(self) -> Settings:
        if self.demo is DemoMode.OFF and (self.dust_api_key is None or self.dust_workspace_id is None):
            missing = "DUST_API_KEY" if self.dust_api_key is None else "DUST_WORKSPACE_ID"
            raise ValueError(f"{missing} is required when BRIDGE_DEMO=off")
        if (self.dust_api_key is None) == (self.dust_workspace_id is None) or self.demo is DemoMode.ON:
            return self
        if self.configured_in is ConfiguredIn.CLAUDE_DESKTOP_EXTENSION:
            # Only a key without a workspace gets here (an empty key in the form means demo mode), and
            # the message leads with the variable so that bridge.desktop puts the form's field there.
            raise ValueError(
                "DUST_WORKSPACE_ID: must be filled in with the Dust API key (the part after /w/ in your"
                " Dust URL), or leave the key empty to try the demo"
            )
        missing = "DUST_API_KEY" if self.dust_api_key is None else "DUST_WORKSPACE_ID"
        raise ValueError(f"{missing} must be set together with the other Dust credential")

    @model_validator(mode="after")
    def _dust_over_tls(self) -> Settings:
        parts = urlsplit(self.dust_base_url)
        in_clear = parts.scheme == "http" and not _is_loopback(parts.hostname or "")
        if in_clear and not self.dust_allow_insecure_http:
            raise ValueError(
                "DUST_BASE_URL: plain http:// to a host other than this machine would send the Dust API key"
                " in clear; use https://, or set BRIDGE_DUST_ALLOW_INSECURE_HTTP=true if a trusted network"
                " makes that acceptable"
            )
        return self

    @model_validator(mode="after")
    def _oauth_complete(self) -> Settings:
        if (self.oauth_issuer is None) != (self.oauth_audience is None):
            raise ValueError(
                "BRIDGE_OAUTH_ISSUER and BRIDGE_OAUTH_AUDIENCE turn OAuth on together: set both or neither"
            )
        if self.oauth_issuer is not None and self.public_url is None:
            raise ValueError("BRIDGE_PUBLIC_URL (how clients reach this bridge) is required with OAuth")
        return self

    @model_validator(mode="after")
    def _principal_header_and_proxies(self) -> Settings:
        if self.principal_header is not None and not self.principal_proxies:
            raise ValueError(
                "BRIDGE_PRINCIPAL_HEADER needs BRIDGE_PRINCIPAL_PROXIES: the addresses of the authenticating"
                " proxy, the only peers whose header is believed"
            )
        if self.principal_proxies and self.principal_header is None:
            raise ValueError(
                "BRIDGE_PRINCIPAL_PROXIES has no effect without BRIDGE_PRINCIPAL_HEADER (the header in"
                " which the proxy names the user)"
            )
        return self

    @property
    def demo_active(self) -> bool:
        """True when the bridge talks to the bundled simulator instead of Dust."""
        return self.demo is DemoMode.ON or (self.demo is DemoMode.AUTO and self.dust_api_key is None)

    @property
    def request_state_keys(self) -> list[str]:
        """Secrets that seal the MCP request state a 2026-07-28 client echoes back, the same on
        every replica: from the store's encryption keys if set, else from the Dust API key (every
        replica has it); empty (a key of this process only) in demo mode. Derived, so the sealing
        key is never the secret itself."""
        if self.store_encryption_keys is not None:
            secrets = _split_csv(self.store_encryption_keys.get_secret_value())
        elif self.dust_api_key is not None and not self.demo_active:
            secrets = [self.dust_api_key.get_secret_value()]
        else:
            return []
        return [
            hashlib.sha256(b"dust-mcp-bridge/request-state\0" + secret.encode()).hexdigest()
            for secret in secrets
        ]


# RFC 9110 field names (tokens), and the ones the bridge reads for something else.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_HEADERS_READ_OTHERWISE = frozenset(
    {
        "authorization",
        "x-api-key",
        "cookie",
        "host",
        "origin",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-request-id",
        "mcp-session-id",
        "mcp-protocol-version",
        "content-type",
        "content-length",
    }
)

# Form fields whose empty value would otherwise be an error (the others already read empty as unset).
_EMPTY_MEANS_DEFAULT = frozenset({"DUST_BASE_URL", "BRIDGE_SCAN_MODE"})


def parse_workers(value: Any) -> int | None:
    """BRIDGE_WORKERS (and `--workers`): a count of worker processes, or None for auto (or empty).

    Raises:
        ValueError: anything else, with the sentence that says what is accepted.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(
            f"must be auto (one per core the bridge may use) or a number of worker processes from 1"
            f" to {MAX_WORKERS}"
        )
    return count


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and is_unsubstituted(value)


def _without_demo_workspace(data: dict[str, Any]) -> dict[str, Any]:
    """The extension's form promises demo mode for an empty key, whatever else is filled in: its
    workspace then serves nothing and is not checked (a half-typed one must not stop the demo)."""
    upper = {str(name).upper(): value for name, value in data.items()}
    where = str(upper.get("BRIDGE_CONFIGURED_IN", "")).strip().lower()
    key = upper.get("DUST_API_KEY")
    empty_key = key is None or (isinstance(key, str) and not key.strip())
    if where != ConfiguredIn.CLAUDE_DESKTOP_EXTENSION or not empty_key:
        return data
    return {name: value for name, value in data.items() if str(name).upper() != "DUST_WORKSPACE_ID"}


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _one_of(value: str, allowed: frozenset[str], what: str) -> str:
    if value in allowed:
        return value
    close = difflib.get_close_matches(value, sorted(allowed), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(f"must be {what}{hint}")


_FIELD_TO_ENV = {
    name: str(field.validation_alias.choices[0])  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items()
}


# Values never echoed in an error: secrets, and URLs or key lists that may carry one.
_SECRET_VARIABLES = {
    "DUST_API_KEY",
    "BRIDGE_STORE_ENCRYPTION_KEY",
    "BRIDGE_METRICS_KEY",
    "REDIS_URL",
    "BRIDGE_API_KEYS",
}


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else ""
    variable = _FIELD_TO_ENV.get(field, field)
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    shown = ""
    # Never echo what could be a secret back into an error line.
    if (
        variable
        and variable not in _SECRET_VARIABLES
        and isinstance(value, str | int | float)
        and len(str(value)) < 200
    ):
        shown = f" (got {value!r})"
    if not variable:
        return message
    return f"{variable}: {message}{shown}"


ENV_FILE_VARIABLE = "BRIDGE_ENV_FILE"
_CHECKOUT = Path(__file__).resolve().parent.parent


def find_env_file() -> Path | None:
    """The `.env` every command reads: `BRIDGE_ENV_FILE` when set (`none` reads no file), else
    `./.env`, else the `.env` of the source checkout the bridge runs from (so a command started
    from another directory, as Claude Desktop does, reads the same settings as `make run`).

    Raises:
        ConfigError: `BRIDGE_ENV_FILE` names a file that does not exist.
    """
    explicit = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    if explicit.lower() == "none":
        return None
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{ENV_FILE_VARIABLE}: no such file (got {explicit!r})")
        return path
    candidates = [Path.cwd() / ".env"]
    if (_CHECKOUT / "pyproject.toml").is_file():
        candidates.append(_CHECKOUT / ".env")
    return next((path.resolve() for path in candidates if path.is_file()), None)


def describe_env_file(path: Path | None) -> str:
    """Where the settings came from, for the line every command prints."""
    return f"the environment and {path}" if path else "the environment only (no .env file found)"


def load_settings(env_file: Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings from the environment and `env_file`; raise `ConfigError` with
    one line per problem.

    Raises:
        ConfigError: a variable is missing or invalid.
    """
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        lines = [_describe(dict(err)) for err in exc.errors()]
        raise ConfigError("; ".join(lines)) from None
