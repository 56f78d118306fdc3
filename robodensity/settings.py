"""One typed, frozen settings object for every RoboDensity process.

Sources, highest priority first: keyword arguments, environment variables
(``ROBODENSITY_`` prefix, ``__`` between levels, for example
``ROBODENSITY_DATABASE__URL``), then the TOML file. Every service address is a URL;
leaving it unset means "start an embedded one on 127.0.0.1" where that makes sense
(the demo and the tests). ``deploy/robodensity.example.toml`` documents every key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from robodensity.errors import ConfigError
from robodensity.wire import IDENT_RE, Counter, State

SecurityPolicy = Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseSettings(_Section):
    url: SecretStr | None = None
    """postgresql://user@host:port/db. Unset: the demo starts a throwaway cluster."""

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and urlsplit(v.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return v


class BrokerSettings(_Section):
    url: str | None = None
    """mqtt://host:1883 or mqtts://host:8883. Unset: the demo starts Mosquitto."""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    session_expiry_s: int = Field(86_400, ge=0)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError("must be mqtt://host:port or mqtts://host:port")
        return v


class OpcUaSourceSettings(_Section):
    url: str
    """opc.tcp://host:port of one robot controller or cell server."""
    security_policy: SecurityPolicy | None = None
    """None connects without security: allowed only on a loopback address."""
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = None
    private_key: Path | None = None
    trust_dir: Path | None = None
    """Folder of trusted server certificates (DER or PEM); required with a policy."""
    username: str | None = None
    password: SecretStr | None = None
    mapping_file: Path | None = None
    """TOML mapping for controllers that expose vendor nodes instead of OPC 40010."""
    publishing_interval_ms: int = Field(250, ge=10, le=60_000)
    watchdog_s: float = Field(10.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @field_validator("private_key")
    @classmethod
    def _pem_key_named_pem(cls, v: Path | None) -> Path | None:
        # asyncua reads a key as PEM only when the file name ends in .pem, otherwise as DER.
        if v is not None and v.suffix != ".pem" and v.is_file() and v.read_bytes()[:11] == b"-----BEGIN ":
            raise ValueError(f"{v} holds a PEM key: name it *.pem (the OPC UA library reads other names as DER)")
        return v

    @field_validator("url")
    @classmethod
    def _opc_url(cls, v: str) -> str:
        if urlsplit(v).scheme != "opc.tcp":
            raise ValueError("must be an opc.tcp://host:port URL")
        return v


class MqttJsonSourceSettings(_Section):
    """Robots that publish plain JSON on the factory's own broker."""

    url: str
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


_ID_BAD = re.compile(r"[/+#]")


def _check_sparkplug_id(name: str, value: str) -> str:
    if not value or _ID_BAD.search(value):
        raise ValueError(f"{name} must be non-empty and contain none of / + #")
    return value


class SparkplugSourceSettings(_Section):
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

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be mqtt://host:port or mqtts://host:port")
        return v

    @field_validator("group_id")
    @classmethod
    def _group(cls, v: str) -> str:
        return _check_sparkplug_id("group_id", v)

    @field_validator("edge_node")
    @classmethod
    def _node(cls, v: str) -> str:
        return v if v == "+" else _check_sparkplug_id("edge_node", v)

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
    batch_max_events: int = Field(500, ge=1, le=10_000)
    batch_linger_ms: int = Field(200, ge=0, le=60_000)
    ack_timeout_s: float = Field(15.0, gt=0)
    max_inflight_batches: int = Field(32, ge=1, le=10_000)
    health_port: int | None = Field(None, ge=1, le=65535)
    opcua: tuple[OpcUaSourceSettings, ...] = ()
    mqtt_json: tuple[MqttJsonSourceSettings, ...] = ()
    sparkplug: tuple[SparkplugSourceSettings, ...] = ()

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROBODENSITY_", env_nested_delimiter="__", frozen=True, extra="forbid")
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    edge: EdgeSettings = EdgeSettings()
    collector: CollectorSettings = CollectorSettings()


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (TOML), the environment and ``overrides``.

    Raises ConfigError naming every bad key, its problem and the value given.
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
        raise ConfigError(describe_validation_error(exc, path)) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"{path}: {exc}") from None
    return Settings.model_validate(loaded.model_dump())


def describe_validation_error(exc: ValidationError, path: Path | None = None) -> str:
    """``edge.opcua[0].security_policy must be one of ...; got 'None'`` for each error."""
    lines = []
    for err in exc.errors():
        key = ""
        for part in err["loc"]:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        msg = err["msg"]
        if err["type"] == "literal_error":
            msg = "must be one of " + msg.removeprefix("Input should be ").replace("'", "")
        got = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(got, dict) else f"; got {got!r}"
        if "password" in key or ("url" in key and "database" in key):
            shown = ""  # never echo a secret
        lines.append(f"{key or '(root)'} {msg[0].lower()}{msg[1:]}{shown}")
    where = f"{path}: " if path else ""
    return where + "; ".join(lines)
