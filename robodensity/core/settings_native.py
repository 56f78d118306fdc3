"""Settings of the polled native-protocol sources: Yaskawa HSES, ABB RWS, UR Dashboard Server.

One section per robot controller (``[[edge.hses]]``, ``[[edge.rws]]``, ``[[edge.urdash]]``);
every key is documented in ``deploy/robodensity.example.toml``. Checked before any I/O;
facts about each protocol are in ``../shared/reference/protocols/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from robodensity.core.wire import MAX_TEXT_CHARS


def _ident_text(v: str | None) -> str | None:
    if v is not None and (not v.strip() or len(v) > MAX_TEXT_CHARS or "/" in v):
        raise ValueError(f"must be 1..{MAX_TEXT_CHARS} characters without '/'")
    return v


def _host(v: str) -> str:
    if not v or any(c in v for c in "/?#@ "):
        raise ValueError("must be a host name or IP address, without scheme or path (the port is its own key)")
    return v


class PolledSettings(BaseModel):
    """Keys every polled controller has: how often to ask, how long to wait, when to give up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    poll_s: float = Field(1.0, ge=0.001, le=3600)
    """Seconds between two status reads of one robot."""
    jitter: float = Field(0.1, ge=0, le=1)
    """Each pause is poll_s times a random factor in [1 - jitter, 1 + jitter]: many robots never poll in step."""
    counters_every_s: float = Field(60.0, ge=0.001)
    """Seconds between two reads of the counters (they change slowly)."""
    timeout_s: float = Field(2.0, gt=0, le=120)
    """A reply not in this time is a timeout; the robot is OFFLINE after the retries."""
    reconnect_max_s: float = Field(30.0, gt=0)
    """Reconnection waits double from 0.5 s up to this."""
    serial: str | None = None
    """The robot's serial number (its identity with the manufacturer): the nameplate's."""

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: str | None) -> str | None:
        return _ident_text(v)


class HsesSourceSettings(PolledSettings):
    """One Yaskawa controller (DX100/FS100/DX200/YRC1000) over the High-Speed Ethernet Server."""

    host: str
    """IP address or name of the controller."""
    port: int = Field(10040, ge=1, le=65535)
    """UDP port of robot-control commands (division 0x01)."""
    serial: str  # type: ignore[assignment]  # required here: HSES has no serial-number command
    """The robot's serial number from its nameplate: HSES cannot read one."""
    timeout_s: float = Field(0.8, gt=0, le=120)
    """Per request; 0.8 s is what known clients use."""
    retries: int = Field(2, ge=0, le=10)
    """A request unanswered within timeout_s is sent again this many times (UDP loses datagrams)."""
    robot: int = Field(1, ge=1, le=8)
    """Which robot of the controller (R1..R8): selects the 0x89 identity instance (10 + robot)."""
    application: int = Field(1, ge=1, le=8)
    """Application whose operation time (0x88 instance 300 + application) is the operating_s counter."""
    encoding: Literal["utf-8", "shift_jis", "latin-1"] = "utf-8"
    """Text encoding of the pendant's language (alarm names, model): shift_jis on Japanese systems."""

    @field_validator("host")
    @classmethod
    def _h(cls, v: str) -> str:
        return _host(v)


class RwsSourceSettings(PolledSettings):
    """One ABB controller over Robot Web Services: RobotWare 6 (IRC5) or 7 (OmniCore)."""

    url: str
    """http://HOST (RobotWare 6, port 80) or https://HOST (RobotWare 7, port 443); a port may follow."""
    robotware: Literal[6, 7] = 6
    """6: RWS 1.0, HTTP Digest, XHTML/?json=1. 7: RWS 2.0, HTTP Basic, application/hal+json;v=2.0."""
    username: str = "Default User"
    """A controller user with read access; ABB's factory default is "Default User"."""
    password_file: Path | None = None
    """A file whose first line is the password; unset: ABB's factory default password "robotics"."""
    ca_file: Path | None = None
    """CA or the controller's own certificate (PEM) to verify https:// against; unset: not verified
    (OmniCore ships a self-signed certificate), and the agent logs a warning."""
    subscribe: bool = True
    """Controller state, mode and RAPID execution pushed over WebSocket; off (or refused): polled."""
    refresh_s: float = Field(10.0, ge=0.001)
    """With subscriptions: every so often read everything once (a WebSocket can die silently)."""
    timeout_s: float = Field(5.0, gt=0, le=120)
    login_retry_s: float = Field(60.0, ge=0.001)
    """After a refused login, wait at least this long before the next try (accounts can lock)."""
    login_attempts: int = Field(3, ge=1, le=100)
    """Refused logins in a row after which the source stops (health shows it) until the settings are fixed."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("must be http://HOST[:PORT] (RobotWare 6) or https://HOST[:PORT] (RobotWare 7)")
        try:
            parts.port  # noqa: B018  # raises on a bad port
        except ValueError:
            raise ValueError("must have a port 1..65535") from None
        return v.rstrip("/")

    @field_validator("password_file", "ca_file")
    @classmethod
    def _file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file {v} does not exist")
        return v


class UrDashSourceSettings(PolledSettings):
    """One Universal Robots controller (CB3, e-Series) over the Dashboard Server text protocol."""

    host: str
    """IP address or name of the robot."""
    port: int = Field(29999, ge=1, le=65535)
    banner_timeout_s: float = Field(10.0, gt=0, le=120)
    """How long to wait for the welcome line after connecting."""

    @field_validator("host")
    @classmethod
    def _h(cls, v: str) -> str:
        return _host(v)
