"""Configuration: `config.yaml` plus `SPARTAN_*` environment overrides, validated at start.

The seed's keys (`port`, `users`, `groups`, `max_num_messages_per_user`,
`max_call_per_30_seconds_per_user`) are accepted unchanged at the top level; the
project's own settings live in sections. Every setting can be overridden by an
environment variable named `SPARTAN_` + the dotted path in upper case with `__`
between levels, e.g. `SPARTAN_PORT=3001`, `SPARTAN_REDIS__URL=redis://r:6379/0`,
`SPARTAN_USERS=alice,bob`. Values are parsed as YAML, so lists and maps work too
(`SPARTAN_GROUPS='{team: [alice, bob]}'`). Unknown keys and bad values raise
`ConfigError` naming the key, so a typo fails at start instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from spartan.service_addresses import AddressError, addresses

ENV_PREFIX = "SPARTAN_"
CONFIG_ENV = "SPARTAN_CONFIG"
# Variables with the prefix that are not settings: the config path, and the client's own.
NON_SETTING_ENV = frozenset(
    {CONFIG_ENV, "SPARTAN_KEY_DIR", "SPARTAN_SERVER", "SPARTAN_PASSPHRASE", "SPARTAN_NEW_PASSPHRASE"}
)
DEFAULT_CONFIG_PATH = Path("config.yaml")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
DEPLOYMENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # auth.deployment_id


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names the key."""


@dataclass(frozen=True)
class RedisConfig:
    url: str = ""  # empty: the local launcher starts a private redis-server
    pool_size: int = 64  # bounded BlockingConnectionPool per process
    data_dir: str = ".spartan/redis"  # local launcher only: where the private Redis keeps its AOF
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class ServicesConfig:
    """Where the internal services listen and how gateways reach them: `host:port` (a name may resolve to
    every replica) or a comma-separated list of replicas' `ip:port` (spartan.service_addresses)."""

    presence: str = "127.0.0.1:3101"
    history: str = "127.0.0.1:3102"
    listen_host: str = "127.0.0.1"  # where presence/history bind; 0.0.0.0 in containers
    call_timeout_seconds: float = 3.0
    # 0: unlimited. Else presence and history close each connection after this long (its calls finish first),
    # so gateways resolve the name again and find replicas added since (a headless Service that scaled up).
    max_connection_age_seconds: float = 0


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "0.0.0.0"
    instance_id: str = ""  # empty: hostname + pid
    max_message_bytes: int = 65536
    stream_queue_size: int = 1024  # per-stream delivery queue; a client this far behind is disconnected
    max_streams: int = 20000  # beyond this, new streams get RESOURCE_EXHAUSTED
    max_streams_per_user: int = 16  # open streams of one user on one gateway; more get RESOURCE_EXHAUSTED
    max_resume_cursors: int = 1000  # cursors one ReceiveMsg may name; more get INVALID_ARGUMENT
    max_connections: int = 15000  # TCP connections held at once; more are closed on accept (kept below the fd limit)
    max_streams_per_connection: int = 1000  # concurrent calls on one HTTP/2 connection (grpc.max_concurrent_streams)
    handshake_timeout_seconds: float = 10  # a connection that has not finished its HTTP/2 (and TLS) handshake is closed
    max_inflight_calls: int = 2000  # unary calls in progress at once; beyond it, RESOURCE_EXHAUSTED
    max_concurrent_stream_opens: int = 32  # streams set up at once (a reconnect storm); the others wait their turn
    stream_open_wait_seconds: float = 10  # longest wait for that turn; then RESOURCE_EXHAUSTED with retry-after
    max_connection_age_seconds: float = 0  # 0: unlimited; set so new replicas receive connections
    max_connection_age_grace_seconds: float = 30


@dataclass(frozen=True)
class PresenceConfig:
    lease_seconds: float = 10.0  # a user whose gateway stops renewing shows offline after this
    max_group_members: int = 256  # also bounds one SendSenderKeys batch (a key for each other member)
    pending_ttl_seconds: float = 7 * 24 * 3600


@dataclass(frozen=True)
class HistoryConfig:
    max_conversations: int = 100000  # global LRU capacity (conversations)
    max_read_limit: int = 1000
    cache_size: int = 4096  # in-process read cache entries per history process (0 disables)
    cache_ttl_seconds: float = 0  # 0: no expiry (entries are invalidated on write)


@dataclass(frozen=True)
class DeliveryConfig:
    """The delivery log: every message kept for its recipients until they acknowledge it."""

    retention_days: float = 30  # a conversation's log outlives its last message by this long
    max_per_conversation: int = 10000  # undelivered messages kept per conversation; older ones are dropped (announced)


@dataclass(frozen=True)
class RateConfig:
    """Token bucket per user and API. `rate` tokens per `per_seconds`, bucket size `burst`.

    When `rate` is 0 the seed's `max_call_per_30_seconds_per_user` applies
    (rate = that number per 30 s, burst = the same number).
    """

    rate: float = 0
    per_seconds: float = 1.0
    burst: int = 0  # 0: equal to rate
    enabled: bool = True
    apis: dict[str, dict[str, float]] = field(default_factory=dict)  # per-API overrides


@dataclass(frozen=True)
class AuthConfig:
    token_secret: str = ""  # shared by all gateways; empty: a random per-launch secret (local server only)
    token_secret_file: str = ""  # or a file holding it (compose's generated secret, a mounted Secret)
    token_ttl_seconds: float = 3600
    challenge_ttl_seconds: float = 60
    enrolment_codes: dict[str, str] = field(default_factory=dict)  # user -> code fixed by the operator
    # Whether a user's first keys need an enrolment code: "auto" requires one unless every
    # gateway listens on loopback only (the local launcher), "required", or "open" (anyone, first come).
    enrolment: str = "auto"
    enrolment_code_ttl_seconds: float = 7 * 24 * 3600  # codes issued by spartan-admin expire after this
    login_attempts_per_minute_per_address: int = 600  # GetChallenge + Login from one host; 0: unlimited
    login_attempts_per_minute_per_user: int = 60  # GetChallenge + Login for one user name; 0: unlimited
    service_secret: str = ""  # signs every call between services (gateway, admin -> presence, history)
    service_secret_file: str = ""  # or a file holding it (compose's generated secret, a mounted Secret)
    pinned_keys: dict[str, str] = field(default_factory=dict)  # user -> hex Ed25519 identity key
    # What logins sign and tokens carry; empty: generated once and kept in the deployment's Redis.
    deployment_id: str = ""


@dataclass(frozen=True)
class TlsConfig:
    cert: str = ""
    key: str = ""
    ca: str = ""  # clients and gateways verify peers against this CA

    @property
    def enabled(self) -> bool:
        return bool(self.cert and self.key)


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "0.0.0.0"
    port: int = 0  # 0: no metrics endpoint; the launcher assigns ports for its children


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"  # text | json
    level: str = "INFO"


@dataclass(frozen=True)
class ShutdownConfig:
    grace_seconds: float = 10.0


@dataclass(frozen=True)
class Config:
    # The seed's keys, unchanged.
    port: int = 3000
    users: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    max_num_messages_per_user: int = 5
    max_call_per_30_seconds_per_user: int = 3
    # The project's sections.
    redis: RedisConfig = field(default_factory=RedisConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    rate: RateConfig = field(default_factory=RateConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)

    def with_overrides(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply environment overrides, validate."""
    env = os.environ if env is None else env
    chosen = path or env.get(CONFIG_ENV)
    raw: dict[str, Any] = {}
    if chosen is not None or DEFAULT_CONFIG_PATH.exists():
        file_path = Path(chosen) if chosen is not None else DEFAULT_CONFIG_PATH
        try:
            loaded = yaml.safe_load(file_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file_path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file_path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file_path} must hold a mapping of settings")
        raw = loaded
    raw = _apply_env(raw, env)
    config = _build(Config, raw, "")
    _validate(config)
    return config


def env_names(cls: type = Config, prefix: str = ENV_PREFIX) -> set[str]:
    """Every environment variable the program accepts (used by the deployment checks)."""
    names: set[str] = set(NON_SETTING_ENV) if cls is Config else set()
    hints = get_type_hints(cls)
    for f in fields(cls):
        name = prefix + f.name.upper()
        if dataclasses.is_dataclass(hints[f.name]):
            names |= env_names(hints[f.name], name + "__")
        else:
            names.add(name)
    return names


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    known = env_names()
    merged = dict(raw)
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in NON_SETTING_ENV:
            continue
        if name not in known:
            raise ConfigError(f"unknown setting in environment: {name}")
        path = name[len(ENV_PREFIX) :].lower().split("__")
        value = _parse_env_value(name, text)
        target = merged
        for part in path[:-1]:
            section = target.get(part)
            section = dict(section) if isinstance(section, dict) else {}
            target[part] = section
            target = section
        target[path[-1]] = value
    return merged


def _parse_env_value(name: str, text: str) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"{name}: cannot parse value {text!r}") from None
    return "" if value is None else value


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown setting: {where}{key}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        key = f"{where}{f.name}"
        values[f.name] = _coerce(hints[f.name], raw[f.name], key)
    return cls(**values)


def _coerce(kind: Any, value: Any, key: str) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _build(kind, value if value is not None else {}, key + ".")
    origin = get_origin(kind)
    if origin is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list")
        (item,) = get_args(kind)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping")
        _, item = get_args(kind)
        return {str(k): _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected text, got {type(value).__name__}")
        return str(value)
    return value


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
REDIS_CLUSTER_SCHEME = "redis+cluster://"


def _check_redis_url(url: str) -> None:
    if url.startswith(REDIS_CLUSTER_SCHEME):
        for address in url[len(REDIS_CLUSTER_SCHEME) :].split(","):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"redis.url: a cluster node is host:port, got {address!r} in {url!r}")
        return
    if url and not url.startswith(REDIS_SCHEMES):
        raise ConfigError(
            f"redis.url: expected a redis://, rediss://, unix:// or redis+cluster://host:port,… address, got {url!r}"
        )


def _validate(config: Config) -> None:
    def positive(key: str, value: float, allow_zero: bool = False) -> None:
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"{key}: must be {'zero or more' if allow_zero else 'greater than zero'}, got {value}")

    if not 1 <= config.port <= 65535:
        raise ConfigError(f"port: must be between 1 and 65535, got {config.port}")
    if not config.users:
        raise ConfigError("users: at least one user is required")
    for i, user in enumerate(config.users):
        if not NAME_PATTERN.match(user):
            raise ConfigError(f"users[{i}]: {user!r} is not a valid name (lower-case letters, digits, _ . -; up to 32)")
    if len(set(config.users)) != len(config.users):
        raise ConfigError("users: contains duplicates")
    for group, members in config.groups.items():
        if not NAME_PATTERN.match(group):
            raise ConfigError(f"groups.{group}: not a valid group name")
        if group in config.users:
            raise ConfigError(f"groups.{group}: a group cannot share a name with a user")
        for member in members:
            if member not in config.users:
                raise ConfigError(f"groups.{group}: {member!r} is not in users")
        if len(set(members)) > config.presence.max_group_members:
            raise ConfigError(
                f"groups.{group}: {len(set(members))} members; "
                f"presence.max_group_members allows {config.presence.max_group_members}"
            )
    positive("max_num_messages_per_user", config.max_num_messages_per_user)
    positive("max_call_per_30_seconds_per_user", config.max_call_per_30_seconds_per_user)
    positive("redis.pool_size", config.redis.pool_size)
    _check_redis_url(config.redis.url)
    positive("gateway.max_message_bytes", config.gateway.max_message_bytes)
    positive("gateway.stream_queue_size", config.gateway.stream_queue_size)
    positive("gateway.max_streams", config.gateway.max_streams)
    positive("gateway.max_inflight_calls", config.gateway.max_inflight_calls)
    positive("services.max_connection_age_seconds", config.services.max_connection_age_seconds, True)
    positive("gateway.max_concurrent_stream_opens", config.gateway.max_concurrent_stream_opens)
    positive("gateway.stream_open_wait_seconds", config.gateway.stream_open_wait_seconds)
    positive("gateway.max_streams_per_user", config.gateway.max_streams_per_user)
    positive("gateway.max_resume_cursors", config.gateway.max_resume_cursors)
    positive("gateway.max_connections", config.gateway.max_connections)
    positive("gateway.max_streams_per_connection", config.gateway.max_streams_per_connection)
    positive("gateway.handshake_timeout_seconds", config.gateway.handshake_timeout_seconds)
    if config.presence.max_group_members < 2:
        raise ConfigError(f"presence.max_group_members: must be at least 2, got {config.presence.max_group_members}")
    positive("presence.lease_seconds", config.presence.lease_seconds)
    positive("history.max_conversations", config.history.max_conversations)
    positive("history.max_read_limit", config.history.max_read_limit)
    positive("history.cache_size", config.history.cache_size, allow_zero=True)
    positive("delivery.retention_days", config.delivery.retention_days)
    positive("delivery.max_per_conversation", config.delivery.max_per_conversation)
    positive("rate.rate", config.rate.rate, allow_zero=True)
    positive("rate.per_seconds", config.rate.per_seconds)
    positive("rate.burst", config.rate.burst, allow_zero=True)
    positive("shutdown.grace_seconds", config.shutdown.grace_seconds, allow_zero=True)
    if config.auth.enrolment not in ("auto", "required", "open"):
        raise ConfigError(f"auth.enrolment: must be 'auto', 'required' or 'open', got {config.auth.enrolment!r}")
    positive("auth.enrolment_code_ttl_seconds", config.auth.enrolment_code_ttl_seconds)
    if config.auth.deployment_id and not DEPLOYMENT_ID_PATTERN.match(config.auth.deployment_id):
        raise ConfigError(
            f"auth.deployment_id: {config.auth.deployment_id!r} is not valid "
            "(1 to 64 letters, digits and . _ : - starting with a letter or digit)"
        )
    positive("auth.login_attempts_per_minute_per_address", config.auth.login_attempts_per_minute_per_address, True)
    positive("auth.login_attempts_per_minute_per_user", config.auth.login_attempts_per_minute_per_user, True)
    if config.log.format not in ("text", "json"):
        raise ConfigError(f"log.format: must be 'text' or 'json', got {config.log.format!r}")
    if config.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log.level: must be DEBUG, INFO, WARNING or ERROR, got {config.log.level!r}")
    if bool(config.tls.cert) != bool(config.tls.key):
        raise ConfigError("tls: cert and key must be given together")
    for address_key in ("presence", "history"):
        try:
            addresses(getattr(config.services, address_key))
        except AddressError as exc:
            raise ConfigError(f"services.{address_key}: {exc}") from None
