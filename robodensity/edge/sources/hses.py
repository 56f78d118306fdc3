"""Yaskawa controllers (DX100, FS100, DX200, YRC1000) over the High-Speed Ethernet Server.

Facts: ``../shared/reference/protocols/yaskawa-hses.md`` (sections cited as §n). One UDP
request datagram, one reply (§1); a 32-byte header ``YERC`` with a request id the server
echoes (§2); little-endian integers. What this source reads, all with Get_Attribute_All
(service 0x01, attribute 0) on port 10040:

====  ========================================  =========================================
cmd   instance                                  becomes
====  ========================================  =========================================
0x72  1  status data 1 and 2 (§4.1)             the state, every poll
0x70  1..4  current alarms (§4.3)               alarms (code -> name), while bit alarm/error
0x88  1, 10, 110, 210, 300 + application (§4.4) counters power_on_s, servo_on_s, playback_s,
                                                motion_s, operating_s
0x89  10 + robot (§4.5)                         identity: model and system software version
====  ========================================  =========================================

The state (§5 "suggested mapping", our derivation, first matching row wins)::

    FAULT           data 2 bit 4 (alarm) or bit 5 (error)
    OUT_OF_SERVICE  data 1 bit 5 (teach), or data 2 bit 6 (servo on) clear
    EXECUTING       data 1 bit 3 (running) and bit 6 (play)
    IDLE            anything else (play, servo on, not running; hold bits say why)
    OFFLINE         no valid reply after the retries

Unconfirmed facts, handled conservatively: the elapsed-time text of 0x88 is read as
``HHHHHH:MM'SS`` (from one example only; a text that does not fit is skipped, not
guessed); no serial-number command is known, so the serial comes from the settings;
an e-stop shows as servo off (OUT_OF_SERVICE) unless the controller also raises an alarm.

Datagrams are lost, duplicated and reordered: each attempt has a fresh request id (one
byte, cycling), a reply whose id is not one of the current request's attempts, whose
header is malformed, or that is too short is dropped and counted (``stats``), and the
request is sent again after ``timeout_s``, ``retries`` times.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from robodensity.core import clock
from robodensity.core.errors import SourceError
from robodensity.core.settings_native import HsesSourceSettings
from robodensity.core.wire import Counter, State
from robodensity.edge.sources.polled import Identity, PolledSource, Sample

log = logging.getLogger(__name__)

MAGIC = b"YERC"
HEADER_SIZE = 32
RESERVED = b"99999999"
DIVISION_ROBOT = 0x01
GET_ALL = 0x01
GET_SINGLE = 0x0E
CMD_ALARM = 0x70
CMD_STATUS = 0x72
CMD_TIME = 0x88
CMD_SYSTEM = 0x89
MANUFACTURER = "Yaskawa"
STATUS_NO_INSTANCE = 0x28

# 0x72 bits (§4.1)
D1_RUNNING, D1_TEACH, D1_PLAY = 1 << 3, 1 << 5, 1 << 6
D2_ALARM, D2_ERROR, D2_SERVO = 1 << 4, 1 << 5, 1 << 6

TIME_COUNTERS: dict[int, Counter] = {
    1: Counter.POWER_ON_S,
    10: Counter.SERVO_ON_S,
    110: Counter.PLAYBACK_S,
    210: Counter.MOTION_S,
}
"""0x88 instance -> counter; the operating time is instance 300 + ``application``."""
_ELAPSED_RE = re.compile(r"^\s*(\d{1,9}):(\d{1,2})'(\d{1,2})\s*$")


class HsesError(SourceError):
    """A datagram that is not a usable HSES reply, or a reply with an error status."""


def state_of(data1: int, data2: int) -> State:
    """The canonical state from 0x72's two status words (the table in the module doc)."""
    if data2 & (D2_ALARM | D2_ERROR):
        return State.FAULT
    if data1 & D1_TEACH or not data2 & D2_SERVO:
        return State.OUT_OF_SERVICE
    if data1 & D1_RUNNING and data1 & D1_PLAY:
        return State.EXECUTING
    return State.IDLE


_REQUEST = struct.Struct("<4sHHBBBBI8sHHBBH")


def pack_request(request_id: int, command: int, instance: int, attribute: int = 0, service: int = GET_ALL) -> bytes:
    """A robot-control request datagram (§2), no payload."""
    return _REQUEST.pack(
        MAGIC,
        HEADER_SIZE,
        0,
        3,
        DIVISION_ROBOT,
        0,
        request_id & 0xFF,
        0,
        RESERVED,
        command,
        instance,
        attribute,
        service,
        0,
    )


@dataclass(frozen=True)
class Reply:
    request_id: int
    service: int
    status: int
    added_status: int
    payload: bytes


def parse_reply(data: bytes) -> Reply:
    """A reply datagram (§2, reply sub-header); HsesError saying what is wrong."""
    if len(data) < HEADER_SIZE:
        raise HsesError(f"reply of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    if data[:4] != MAGIC:
        raise HsesError(f"reply does not start with YERC: {data[:4]!r}")
    header_size, size, _, _, ack, req_id, _block = struct.unpack_from("<HHBBBBI", data, 4)
    if header_size != HEADER_SIZE or ack != 1:
        raise HsesError(f"not a reply header (header size {header_size}, ack {ack})")
    if len(data) != HEADER_SIZE + size:
        raise HsesError(f"reply says {size} payload bytes but carries {len(data) - HEADER_SIZE}")
    service, status, added_size, _, added = struct.unpack_from("<BBBBH", data, 24)
    return Reply(req_id, service, status, added if added_size else 0, data[HEADER_SIZE:])


def _text(raw: bytes, encoding: str) -> str:
    return raw.split(b"\0", 1)[0].decode(encoding, "replace").strip()


def parse_alarm(payload: bytes, encoding: str = "utf-8") -> tuple[int, str]:
    """(alarm code, name) of a 0x70 all-attributes reply (§4.3: code 0-3, name 28-59); code 0 = none."""
    if len(payload) < 60:
        raise HsesError(f"alarm reply of {len(payload)} bytes, expected 60")
    (code,) = struct.unpack_from("<I", payload, 0)
    return code, _text(payload[28:60], encoding)


def parse_elapsed_s(payload: bytes) -> float | None:
    """Seconds of a 0x88 all-attributes reply (§4.4: elapsed text at 16-27, ``HHHHHH:MM'SS``).

    None when the text does not fit that reading (the format is unconfirmed: skip, never guess)."""
    if len(payload) < 28:
        raise HsesError(f"management-time reply of {len(payload)} bytes, expected 28")
    match = _ELAPSED_RE.match(_text(payload[16:28], "latin-1"))
    if match is None:
        return None
    h, m, s = (int(g) for g in match.groups())
    return float(h * 3600 + m * 60 + s) if m < 60 and s < 60 else None


def parse_system_info(payload: bytes, encoding: str = "utf-8") -> tuple[str, str]:
    """(software version, model) of a 0x89 all-attributes reply (§4.5: 0-23, 24-39)."""
    if len(payload) < 40:
        raise HsesError(f"system-information reply of {len(payload)} bytes, expected 48")
    return _text(payload[:24], encoding), _text(payload[24:40], encoding)


def _expire(waiter: asyncio.Future[Reply]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes], None], on_error: Callable[[Exception], None]) -> None:
        self.on_datagram, self.on_error = on_datagram, on_error

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.on_datagram(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: nobody listens
        self.on_error(exc)


class HsesClient:
    """Requests and replies on one connected UDP socket; one request at a time."""

    def __init__(self, host: str, port: int, timeout_s: float, retries: int) -> None:
        self.host, self.port, self.timeout_s, self.retries = host, port, timeout_s, retries
        self.stats = {"requests": 0, "resent": 0, "stale_replies": 0, "bad_replies": 0, "unreachable": 0}
        self._transport: asyncio.DatagramTransport | None = None
        self._next_id = 0
        self._ids: set[int] = set()
        self._waiter: asyncio.Future[Reply] | None = None
        self._last_bad = ""

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self._on_datagram, self._on_error), remote_addr=(self.host, self.port)
            )
        except OSError as exc:
            raise SourceError(f"cannot open UDP to {self.host}:{self.port}: {exc.strerror or exc}") from None
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def request(self, command: int, instance: int, attribute: int = 0, service: int = GET_ALL) -> Reply:
        """The reply to one request (status checked by the caller); HsesError after the retries."""
        if self._transport is None:
            raise SourceError("not connected")
        loop = asyncio.get_running_loop()
        self._ids = set()
        self._last_bad = ""
        self.stats["requests"] += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["resent"] += 1
            rid = self._next_id
            self._next_id = (rid + 1) & 0xFF
            self._ids.add(rid)
            self._waiter = waiter = loop.create_future()
            self._transport.sendto(pack_request(rid, command, instance, attribute, service))
            timer = loop.call_later(self.timeout_s, _expire, waiter)  # cheaper than wait_for: one poll, one timer
            try:
                reply = await waiter
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                self.stats["unreachable"] += 1
                raise HsesError(f"port {self.port} unreachable (controller off, or HSES not enabled)") from None
            finally:
                timer.cancel()
                self._waiter = None
            if reply.service != service + 0x80:
                raise HsesError(f"reply to command 0x{command:02X} has service 0x{reply.service:02X}")
            return reply
        why = f"; last bad reply: {self._last_bad}" if self._last_bad else ""
        raise HsesError(f"no reply to command 0x{command:02X} in {self.retries + 1} tries of {self.timeout_s:g} s{why}")

    def _on_datagram(self, data: bytes) -> None:
        try:
            reply = parse_reply(data)
        except HsesError as exc:
            self.stats["bad_replies"] += 1
            self._last_bad = str(exc)
            return
        waiter = self._waiter
        if waiter is None or waiter.done() or reply.request_id not in self._ids:
            self.stats["stale_replies"] += 1  # a duplicate, or the answer to an earlier request
            return
        waiter.set_result(reply)

    def _on_error(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and isinstance(exc, ConnectionRefusedError):
            waiter.set_exception(exc)


class HsesSource(PolledSource):
    """One robot of a Yaskawa controller (see the module doc)."""

    protocol = "hses"
    settings: HsesSourceSettings

    def __init__(self, settings: HsesSourceSettings, now: Callable[[], datetime] = clock.now) -> None:
        super().__init__(settings, now)
        self.client = HsesClient(settings.host, settings.port, settings.timeout_s, settings.retries)

    @property
    def address(self) -> str:
        return f"hses://{self.settings.host}:{self.settings.port}"

    async def _get(self, command: int, instance: int) -> bytes | None:
        """The payload of a Get_Attribute_All; None when the instance does not exist."""
        reply = await self.client.request(command, instance)
        if reply.status == STATUS_NO_INSTANCE:
            return None
        if reply.status != 0:
            raise HsesError(
                f"command 0x{command:02X} instance {instance}: status 0x{reply.status:02X}, "
                f"added status 0x{reply.added_status:04X}"
            )
        return reply.payload

    async def _connect(self) -> Identity:
        await self.client.open()
        info = await self._get(CMD_SYSTEM, 10 + self.settings.robot)
        software, model = parse_system_info(info, self.settings.encoding) if info else ("", "")
        return Identity(MANUFACTURER, self.settings.serial, model, software)

    async def _read(self, counters: bool) -> Sample:
        status = await self._get(CMD_STATUS, 1)
        if status is None or len(status) < 8:
            raise HsesError(f"status reply of {len(status or b'')} bytes, expected 8")
        data1, data2 = struct.unpack_from("<II", status, 0)
        alarms: dict[str, str] = {}
        if data2 & (D2_ALARM | D2_ERROR):
            for instance in range(1, 5):
                payload = await self._get(CMD_ALARM, instance)
                code, name = parse_alarm(payload, self.settings.encoding) if payload else (0, "")
                if code == 0:
                    break
                alarms[str(code)] = name
        values: dict[Counter, float] = {}
        if counters:
            wanted = {**TIME_COUNTERS, 300 + self.settings.application: Counter.OPERATING_S}
            for instance, counter in wanted.items():
                payload = await self._get(CMD_TIME, instance)
                seconds = parse_elapsed_s(payload) if payload else None
                if seconds is not None:
                    values[counter] = seconds
        return Sample(state_of(data1, data2), alarms, values)

    async def _disconnect(self) -> None:
        self.client.close()
