"""One typed, frozen settings object for every RoboDensity process.

Sources, highest priority first: keyword arguments, environment variables
(``ROBODENSITY_`` prefix, ``__`` between levels, for example
``ROBODENSITY_DATABASE__URL``), then the TOML file. Every service address is a URL;
leaving it unset means "start an embedded one on 127.0.0.1" where that makes sense
(the demo and the tests). ``deploy/robodensity.example.toml`` documents every key.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from robodensity.core.errors import ConfigError
from robodensity.core.settings_errors import describe_env_parse_error, origins_of
from robodensity.core.settings_errors import describe_validation_error as describe_validation_error  # for the CLI
from robodensity.core.settings_modbus import ModbusSourceSettings, StateRuleSettings
from robodensity.core.settings_native import HsesSourceSettings, RwsSourceSettings, UrDashSourceSettings
from robodensity.core.settings_secrets import refuse_secrets_in_file
from robodensity.core.wire import IDENT_RE, MAX_BATCH_EVENTS, Counter, State

DEFAULT_TIMEZONE = "Asia/Shanghai"
"""The local time that days, months and shifts are counted in: the one default every module uses."""

SecurityPolicy = Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_V = TypeVar("_V")


def mqtt_address(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of mqtt://host[:port] or mqtts://host[:port]; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError("must be mqtt://host:port or mqtts://host:port")
    if parts.username is not None:
        raise ValueError("must not hold a user or password: set username and password_file instead")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("must have a port 1..65535") from None
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


def existing_file(path: Path | None) -> Path | None:
    """``path`` when it names a file; ValueError ("file ... does not exist") otherwise."""
    if path is not None and not path.is_file():
        raise ValueError(f"{path} is not a file" if path.exists() else f"file {path} does not exist")
    return path


def needs_username(value: _V, info: ValidationInfo) -> _V:
    """For a password or password file's validator: useless without a user name, so refused."""
    if value is not None and info.data.get("username") is None:
        raise ValueError("is set but username is not")
    return value


def read_secret_file(path: Path) -> str:
    """The first line of a file holding a password; ValueError when it is missing, unreadable or empty."""
    existing_file(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if not lines or not lines[0]:
        raise ValueError(f"file {path} is empty: the password must be on its first line")
    return lines[0]


def read_password_file(path: Path | None) -> str | None:
    """The password in ``path`` (None when unset); ConfigError naming the key when it cannot be read."""
    if path is None:
        return None
    try:
        return read_secret_file(path)
    except ValueError as exc:
        raise ConfigError(f"password_file: {exc}") from None


class DatabaseSettings(_Section):
    url: SecretStr | None = None
    """postgresql://user@host:port/db. Unset: the demo starts a throwaway cluster."""

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and urlsplit(v.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return v


class MqttClientSettings(_Section):
    """How to reach one MQTT broker: its URL, TLS files and credentials. The central broker
    ([broker]) and the factory brokers ([[edge.mqtt_json]], [[edge.sparkplug]]) share these
    keys, so every client is built by one function, ``core.mqtt.make_client``."""

    url: str | None = None
    """mqtt://host:port, or mqtts://host:port for TLS."""
    ca_file: Path | None = None
    """CA certificate(s) (PEM) that signed the broker's certificate; unset: the system's CAs. mqtts only."""
    cert_file: Path | None = None
    """This client's certificate (PEM), for brokers that identify clients by certificate. mqtts only."""
    key_file: Path | None = None
    """The private key (PEM) of cert_file; unset: the key is inside cert_file."""
    username: str | None = None
    password_file: Path | None = None
    """A file whose first line is the password, readable only by the service: never a password in TOML."""
    keepalive_s: int = Field(30, ge=5, le=3600)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, v: str | None) -> str | None:
        if v is not None:
            mqtt_address(v)
        return v

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _tls_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        url = info.data.get("url")
        if v is not None and url is not None and not mqtt_address(url)[2]:
            raise ValueError(f"is set but url {url} has no TLS: use mqtts://")
        if v is not None and info.field_name == "key_file" and info.data.get("cert_file") is None:
            raise ValueError("is set but cert_file is not")
        return existing_file(v)

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None:
            read_secret_file(needs_username(v, info))
        return v

    def read_password(self) -> str | None:
        """The password to log in with, read each time a client is made (a rotated file counts from then)."""
        return read_password_file(self.password_file)


class BrokerSettings(MqttClientSettings):
    """The central broker the edge agents publish to and the collectors read from."""

    url: str | None = None
    """mqtt://host:1883 or mqtts://host:8883. Unset: the demo starts Mosquitto."""
    password: SecretStr | None = None
    """Prefer ROBODENSITY_BROKER__PASSWORD or password_file to writing it here."""
    session_expiry_s: int = Field(86_400, ge=0)

    @field_validator("password")
    @classmethod
    def _password_needs_user(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        return needs_username(v, info)

    def read_password(self) -> str | None:
        """``password`` (usually from the environment, which overrides the file) wins over ``password_file``."""
        return self.password.get_secret_value() if self.password is not None else super().read_password()


_CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpcUaSourceSettings(_Section):
    """One OPC UA server. Checked here, before any I/O: security on a non-loopback address,
    the certificate, key and trust list files, a password only with a user name, the mapping
    file readable (its content is checked by ``edge.sources.opcua.load_mapping``)."""

    url: str
    """opc.tcp://host:port of one robot controller or cell server."""
    security_policy: SecurityPolicy | None = Field(None, validate_default=True)
    """None connects without security: allowed only on a loopback address."""
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = Field(None, validate_default=True)
    """This client's certificate (DER or PEM); required with a policy."""
    private_key: Path | None = Field(None, validate_default=True)
    """Its private key (PEM, named *.pem); required with a policy."""
    trust_dir: Path | None = Field(None, validate_default=True)
    """Folder of trusted server certificates (DER or PEM); required with a policy."""
    username: str | None = None
    password: SecretStr | None = None
    """Only from the environment (a settings file with a password is refused); prefer password_file."""
    password_file: Path | None = None
    """A file whose first line is the password, readable only by the service."""
    mapping_file: Path | None = None
    """TOML mapping for controllers that expose vendor nodes instead of OPC 40010."""
    publishing_interval_ms: int = Field(250, ge=10, le=60_000)
    watchdog_s: float = Field(10.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _opc_url(cls, v: str) -> str:
        if urlsplit(v).scheme != "opc.tcp":
            raise ValueError("must be an opc.tcp://host:port URL")
        return v

    @field_validator("security_policy")
    @classmethod
    def _secure_off_loopback(cls, v: str | None, info: ValidationInfo) -> str | None:
        url = info.data.get("url")  # absent when the url itself is bad
        if v is None and url is not None and not _is_loopback(urlsplit(url).hostname or ""):
            allowed = ", ".join(typing.get_args(SecurityPolicy))
            raise ValueError(f"must be one of {allowed} for the non-loopback url {url}")
        return v

    @field_validator("certificate", "private_key", "trust_dir")
    @classmethod
    def _security_files(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        policy = info.data.get("security_policy")
        if v is None:
            if policy is not None:
                raise ValueError(f"is required with security_policy {policy}")
            return v
        if info.field_name != "trust_dir":
            existing_file(v)
        elif not v.is_dir():
            raise ValueError(f"{v} is not a folder" if v.exists() else f"folder {v} does not exist")
        elif not any(p.suffix.lower() in _CERTIFICATE_SUFFIXES for p in v.iterdir()):
            raise ValueError(f"folder {v} holds no certificate (*{', *'.join(_CERTIFICATE_SUFFIXES)})")
        # asyncua reads a key as PEM only when the file name ends in .pem, otherwise as DER.
        if info.field_name == "private_key" and v.suffix != ".pem" and v.read_bytes()[:11] == b"-----BEGIN ":
            raise ValueError(f"{v} holds a PEM key: name it *.pem (the OPC UA library reads other names as DER)")
        return v

    @field_validator("password")
    @classmethod
    def _password_needs_user(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is not None and info.data.get("username") is None:
            raise ValueError("is set but username is not")
        return v

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return MqttClientSettings._password_file(v, info)

    def read_password(self) -> str | None:
        """``password`` (from the environment) wins over ``password_file``, read at each connect."""
        if self.password is not None:
            return self.password.get_secret_value()
        return read_password_file(self.password_file)

    @field_validator("mapping_file")
    @classmethod
    def _mapping_readable(cls, v: Path | None) -> Path | None:
        if v is not None:
            existing_file(v)
            try:
                with v.open("rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"file {v} cannot be read: {exc.strerror}") from None
        return v


class MqttJsonSourceSettings(MqttClientSettings):
    """Robots that publish plain JSON on the factory's own broker."""

    url: str
    """mqtt://host:port or mqtts://host:port of the factory's broker."""
    topic: str = "robots/+/state"
    client_id: str | None = None
    """Set it for a persistent session: what robots publish while the agent is down waits on the
    factory broker, and each message is acknowledged only once it is durable in the outbox."""
    session_expiry_s: int = Field(7 * 86_400, ge=0)
    manufacturer_field: str = "manufacturer"
    serial_field: str = "serial"
    state_field: str = "state"
    ts_field: str = "ts"
    state_map: dict[str, State] = Field(default_factory=lambda: {s.value: s for s in State})
    """Source state text -> canonical state."""
    state_rules: tuple[StateRuleSettings, ...] = ()
    """When set: the state from several fields (JSON paths) by these rules, first match wins,
    instead of state_field and state_map. Example: { when = { "alarm.code" = { not = 0 } }, state = "FAULT" }."""
    state_default: State = State.IDLE
    """With state_rules: the state when no rule matches."""
    manufacturer: str | None = None
    """The manufacturer of every robot on this topic, for payloads that do not carry it."""
    manufacturer_topic_level: int | None = Field(None, ge=0)
    """0-based topic level that holds the manufacturer (wins over manufacturer_field)."""
    serial_topic_level: int | None = Field(None, ge=0)
    """0-based topic level that holds the serial number (wins over serial_field)."""


_ID_BAD = re.compile(r"[/+#]")


def _check_sparkplug_id(value: str) -> str:
    if not value or _ID_BAD.search(value):
        raise ValueError("must be non-empty and contain none of / + #")
    return value


class SparkplugSourceSettings(MqttClientSettings):
    """Sparkplug B edge nodes of one group on the factory's own broker."""

    url: str
    """mqtt://host:port or mqtts://host:port of the factory's broker."""
    group_id: str
    """The Sparkplug group: the second topic level."""
    edge_node: str = "+"
    """One edge node id, or + for every node of the group."""
    state_metric: str = "Robot/State"
    """The metric that carries a robot's state; a device or node with it is a robot."""
    state_map: dict[str, State] = Field(default_factory=lambda: {s.value: s for s in State})
    """The node's state value -> canonical state. Keys are text: integers as "3",
    booleans as "true"/"false"."""
    manufacturer_metric: str | None = "Identification/Manufacturer"
    """BIRTH metric with the robot's manufacturer (OPC 40010 naming), or None."""
    serial_metric: str | None = "Identification/SerialNumber"
    """BIRTH metric with the robot's serial number, or None."""
    device_id_pattern: str | None = None
    """When a BIRTH lacks the identity metrics: a regex over the device id (node id for a
    node that is itself a robot) with a named group ``serial`` and, unless
    ``manufacturer`` is set, a group ``manufacturer``. Example: (?P<manufacturer>[^_]+)_(?P<serial>.+)"""
    manufacturer: str | None = None
    """The manufacturer for ``device_id_pattern`` matches that have no manufacturer group."""
    counter_metrics: dict[str, Counter] = Field(default_factory=dict)
    """Metric name -> canonical counter, for example {"Robot/Cycles" = "cycles"}."""
    rebirth_min_interval_s: float = Field(default=5.0, ge=0)
    """At most one rebirth request per node in this time, so a confused node is not flooded."""
    queue_max: int = Field(default=10_000, ge=10)
    """Messages received but not yet decoded; when full, new ones are counted and dropped."""

    @field_validator("group_id")
    @classmethod
    def _group(cls, v: str) -> str:
        return _check_sparkplug_id(v)

    @field_validator("edge_node")
    @classmethod
    def _node(cls, v: str) -> str:
        return v if v == "+" else _check_sparkplug_id(v)

    @field_validator("device_id_pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                rx = re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
            if "serial" not in rx.groupindex:
                raise ValueError("needs a named group (?P<serial>...)")
        return v

    @model_validator(mode="after")
    def _identity_rule(self) -> SparkplugSourceSettings:
        by_metrics = self.manufacturer_metric is not None and self.serial_metric is not None
        if not by_metrics and self.device_id_pattern is None:
            raise ValueError("needs manufacturer_metric and serial_metric, or device_id_pattern")
        pattern = self.device_id_pattern
        if pattern is not None and self.manufacturer is None and "manufacturer" not in re.compile(pattern).groupindex:
            raise ValueError("device_id_pattern needs a group (?P<manufacturer>...) or set manufacturer")
        return self


class EdgeSettings(_Section):
    agent_id: str = "edge-1"
    factory_id: str = "factory-1"
    outbox_path: Path = Path("var/edge/outbox.sqlite")
    outbox_max_bytes: int = Field(1 << 30, ge=1 << 20)
    """Disk bound of the outbox; at 90 % it warns, when full counters go first."""
    batch_max_events: int = Field(500, ge=1, le=MAX_BATCH_EVENTS)
    batch_linger_ms: int = Field(200, ge=0, le=60_000)
    ack_timeout_s: float = Field(15.0, gt=0)
    max_inflight_batches: int = Field(32, ge=1, le=10_000)
    health_port: int | None = Field(None, ge=1, le=65535)
    clock_threshold_s: float = Field(2.0, ge=0.5, le=300)
    """A robot whose clock is estimated this far off the edge's gets its timestamps corrected and
    flagged (docs/clocks-and-shifts.md): above sources' delivery delay, far below a state's length."""
    opcua: tuple[OpcUaSourceSettings, ...] = ()
    mqtt_json: tuple[MqttJsonSourceSettings, ...] = ()
    sparkplug: tuple[SparkplugSourceSettings, ...] = ()
    hses: tuple[HsesSourceSettings, ...] = ()
    rws: tuple[RwsSourceSettings, ...] = ()
    urdash: tuple[UrDashSourceSettings, ...] = ()
    modbus: tuple[ModbusSourceSettings, ...] = ()

    @field_validator("agent_id", "factory_id")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not IDENT_RE.match(v):
            raise ValueError(f"must match {IDENT_RE.pattern}")
        return v


class CollectorSettings(_Section):
    share_group: str = "collectors"
    batch_max_events: int = Field(20_000, ge=1)
    flush_ms: int = Field(100, ge=1, le=60_000)
    intervals_every_ms: int = Field(1000, ge=10, le=600_000)
    """How often the interval stage turns newly stored state events into state intervals: the
    longer, the more flushes it handles at once (less database work) and the staler the intervals."""
    queue_max_messages: int = Field(10_000, ge=10)
    client_id: str | None = None
    raw_events_days: int = Field(400, ge=31, le=36_600)
    """Raw events are kept this many days (whole months of them on plain PostgreSQL), then dropped;
    state intervals and the rollups are kept forever. Applied by the collector at start and hourly."""
    compress_after_days: int = Field(30, ge=1, le=36_600)
    """TimescaleDB compresses raw events this many days old (no effect on plain PostgreSQL)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROBODENSITY_", env_nested_delimiter="__", frozen=True, extra="forbid")
    timezone: str = DEFAULT_TIMEZONE
    """IANA name of the local time in which days, months and shifts are counted (metrics, dashboards,
    the bulletin and the simulators). Top level because it is one fact about the deployment."""
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    edge: EdgeSettings = EdgeSettings()
    collector: CollectorSettings = CollectorSettings()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name such as Asia/Shanghai") from None
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (TOML), the environment and ``overrides``.

    Raises ConfigError naming every bad key as ``path: problem``, with where the value came
    from in front: the settings file, or the environment variable.
    """
    if path is not None and not path.is_file():
        raise ConfigError(f"settings file {path} does not exist")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            toml = (TomlConfigSettingsSource(settings_cls),) if path else ()
            return (init_settings, env_settings, *toml)

    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, origins_of(Settings, path, overrides))) from None
    except SettingsError as exc:  # an environment variable that is not JSON where JSON is needed
        raise ConfigError(describe_env_parse_error(Settings, exc)) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"{path}: {exc}") from None
    if path is not None:
        refuse_secrets_in_file(path)  # valid, but a password in a settings file is a password leaked
    return Settings.model_validate(loaded.model_dump())
