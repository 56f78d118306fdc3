"""ABB controllers over Robot Web Services: RobotWare 6 (IRC5, RWS 1.0) and 7 (OmniCore, RWS 2.0).

Facts: ``../shared/reference/protocols/abb-rws.md`` (sections cited as §n); RW7 facts come
from client code only (lower confidence, §1 note). httpx speaks HTTP, websockets the
subscriptions.

============  ==========================================  =================================
              RobotWare 6                                 RobotWare 7
============  ==========================================  =================================
transport     http://HOST (80)                            https://HOST (443), self-signed
auth          HTTP Digest                                 HTTP Basic
format        ``?json=1``                                 ``Accept: application/hal+json;v=2.0``
ctrl state    /rw/panel/ctrlstate                         /rw/panel/ctrl-state
subscription  ws://, subprotocol robapi2_subscription     wss://, subprotocol rws_subscription
============  ==========================================  =================================

Read: ``ctrlstate``, ``opmode`` (/rw/panel/opmode), ``ctrlexecstate`` (/rw/rapid/execution),
event-log errors (/rw/elog/0, ``msgtype`` 3) as alarms, identity from /rw/system (system
``name``, ``rwversion``) and /rw/system/robottype (single source: skipped when absent). No
serial-number endpoint is known (unconfirmed): the serial is the ``serial`` setting, else
the RobotWare system name. No counters: the energy resource's units are unconfirmed.

The state (§5 suggested mapping, our derivation; first match)::

    FAULT           ctrlstate emergencystop, emergencystopreset, sysfail or guardstop
    OUT_OF_SERVICE  opmode other than AUTO (MANR, MANF, AUTO_CH, ...), or ctrlstate
                    motoroff or init
    EXECUTING       ctrlexecstate running
    IDLE            anything else (AUTO, motors on, RAPID stopped)

Alarms: each new event-log error is an active alarm (code = elog code, text = its title)
until the first read after it in which the controller is not FAULT; the log is read when
a fault begins, when the subscription reports a new entry, and with each counters read.

Sessions are scarce (70 on an IRC5, §1; HTTP 503 when the pool is exhausted): one
httpx client per controller keeps the session cookie across reconnects, so a network
outage does not cost a session; ``GET /logout`` when the source stops. HTTP 503 is
logged as the session limit and retried with backoff; HTTP 401 is :class:`LoginRefused`
(``login_retry_s`` between tries, ``login_attempts`` in a row stop the source).
Subscriptions (POST /subscription, then the WebSocket link the reply names, §3) push
changes; every ``refresh_s`` everything is read once more (a WebSocket can die silently).
A refused subscription falls back to polling every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections import deque
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import httpx
import websockets

from robodensity.core import clock
from robodensity.core.errors import ConfigError, SourceError
from robodensity.core.settings import read_secret_file
from robodensity.core.settings_native import RwsSourceSettings
from robodensity.core.wire import State
from robodensity.edge.sources.polled import Identity, LoginRefused, PolledSource, Sample

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would flood the agent's log

MANUFACTURER = "ABB"
DEFAULT_PASSWORD = "robotics"
"""ABB's factory default for "Default User" (§1)."""
FAULT_CTRLSTATES = frozenset({"emergencystop", "emergencystopreset", "sysfail", "guardstop"})
MEDIA_V2 = "application/hal+json;v=2.0"
ELOG_ERROR = 3
_WS_LINK = re.compile(r"wss?://[^\s\"'<>]+/poll/[^\s\"'<>]+")
_EVENTS = {
    "ctrlstate": re.compile(r'class="pnl-ctrlstate-ev".*?class="ctrlstate">\s*([\w-]+)', re.S),
    "opmode": re.compile(r'class="pnl-opmode-ev".*?class="opmode">\s*([\w-]+)', re.S),
    "ctrlexecstate": re.compile(r'class="rap-ctrlexecstate-ev".*?class="ctrlexecstate">\s*([\w-]+)', re.S),
}
_ELOG_EVENT = re.compile(r'class="elog-message-ev"')


def state_of(ctrlstate: str, opmode: str, execstate: str) -> State:
    """The canonical state from the three RWS values (the table in the module doc)."""
    ctrl, mode = ctrlstate.strip().lower(), opmode.strip().upper()
    if ctrl in FAULT_CTRLSTATES:
        return State.FAULT
    if mode != "AUTO" or ctrl in ("motoroff", "init"):
        return State.OUT_OF_SERVICE
    if execstate.strip().lower() == "running":
        return State.EXECUTING
    return State.IDLE


def first_state(body: Any, path: str) -> dict[str, Any]:
    """The first ``_embedded._state`` item of a JSON reply (§1 JSON shape); SourceError otherwise."""
    try:
        items = body["_embedded"]["_state"]
        item = items[0] if isinstance(items, list) else items
    except (KeyError, IndexError, TypeError):
        raise SourceError(f"GET {path}: no _embedded._state in the reply") from None
    if not isinstance(item, dict):
        raise SourceError(f"GET {path}: _embedded._state is not an object")
    return item


def field(item: dict[str, Any], name: str, path: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise SourceError(f"GET {path}: no text field {name!r} in the reply")
    return value


def elog_errors(body: Any, after: int) -> tuple[dict[str, str], int]:
    """Errors (msgtype 3) with a sequence number above ``after``, and the highest number seen."""
    try:
        items = body["_embedded"]["_state"]
    except (KeyError, TypeError):
        raise SourceError("GET /rw/elog/0: no _embedded._state in the reply") from None
    errors: dict[str, str] = {}
    top = after
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            seq = int(str(item.get("_title", "")).rstrip("/").rsplit("/", 1)[-1])
        except ValueError:
            continue
        top = max(top, seq)
        if seq > after and str(item.get("msgtype")) == str(ELOG_ERROR):
            errors[str(item.get("code", "?"))] = str(item.get("title") or item.get("_title"))
    return errors, top


class RwsSource(PolledSource):
    """One ABB controller (see the module doc)."""

    protocol = "rws"
    settings: RwsSourceSettings

    def __init__(
        self, settings: RwsSourceSettings, now: Callable[[], datetime] = clock.now, password: str | None = None
    ) -> None:
        """``password`` (for ``edge discover``) overrides ``password_file`` and the default."""
        super().__init__(settings, now)
        self.login_retry_s = settings.login_retry_s
        self.login_attempts = settings.login_attempts
        self.v7 = settings.robotware == 7
        self.ctrl_path = "/rw/panel/ctrl-state" if self.v7 else "/rw/panel/ctrlstate"
        self.signals: dict[str, str] = {}
        self.subscribed = False
        self._http: httpx.AsyncClient | None = None
        self._ws: Any = None
        self._ws_task: asyncio.Task[None] | None = None
        self._ws_error: str | None = None
        self._group: str | None = None
        self._pushed = asyncio.Event()
        self._elog_pushed = False
        self._refresh_due = 0.0
        self._elog_seq = -1
        self._errors: dict[str, str] = {}
        self._was_fault = False
        self._elog_due = False
        self._events: deque[tuple[datetime, dict[str, str]]] = deque(maxlen=10_000)
        """Pushed changes not yet read: (when it arrived, every signal after it)."""
        self._pushes: dict[str, int] = {}
        """Events received per signal: a refresh that overlaps one keeps the pushed value."""
        self._password = password or DEFAULT_PASSWORD
        if password is None and settings.password_file is not None:
            try:
                self._password = read_secret_file(settings.password_file)
            except ValueError as exc:
                raise ConfigError(f"edge.rws {settings.url} password_file: {exc}") from None

    @property
    def address(self) -> str:
        return f"rws{'7' if self.v7 else ''}://{self.settings.url.split('://', 1)[1]}"

    # -- HTTP
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            s = self.settings
            auth: httpx.Auth = (
                httpx.BasicAuth(s.username, self._password) if self.v7 else httpx.DigestAuth(s.username, self._password)
            )
            verify: ssl.SSLContext | bool = False
            if s.url.startswith("https://"):
                verify = self._tls()
                if s.ca_file is None:
                    log.warning("%s: the controller's certificate is not verified (set ca_file)", self.address)
            headers = {"Accept": MEDIA_V2} if self.v7 else {}
            self._http = httpx.AsyncClient(
                base_url=s.url, auth=auth, verify=verify, timeout=s.timeout_s, headers=headers
            )
        return self._http

    def _tls(self) -> ssl.SSLContext:
        """Verified against ``ca_file``; without one, not verified (OmniCore's certificate is self-signed)."""
        if self.settings.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.settings.ca_file))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        client = self._client()
        if not self.v7 and method == "GET":
            kw.setdefault("params", {})["json"] = "1"
        try:
            response = await client.request(method, path, **kw)
        except httpx.TimeoutException:
            raise SourceError(f"{method} {path}: no answer in {self.settings.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 401:
            # the session is gone and the credentials failed: the next try starts afresh, one login
            self._http = None
            await client.aclose()
            raise LoginRefused(f"HTTP 401 for user {self.settings.username!r}")
        if response.status_code == 503:
            raise SourceError(f"{method} {path}: HTTP 503: the controller's session limit is reached, or it is busy")
        return response

    async def _get(self, path: str, required: bool = True) -> Any:
        response = await self._request("GET", path)
        if response.status_code != 200:
            if not required:
                return None
            raise SourceError(f"GET {path}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise SourceError(f"GET {path}: the reply is not JSON: {response.text[:60]!r}") from None

    # -- the PolledSource protocol
    async def _connect(self) -> Identity:
        system = first_state(await self._get("/rw/system"), "/rw/system")
        name = field(system, "name", "/rw/system")
        known = self.identity
        model = known.model if known is not None and known.serial == (self.settings.serial or name) else ""
        robottype = None if model else await self._get("/rw/system/robottype", required=False)
        if robottype is not None:
            with contextlib.suppress(SourceError):
                model = str(first_state(robottype, "/rw/system/robottype").get("robot-type", ""))
        _, self._elog_seq = elog_errors(await self._get("/rw/elog/0"), -1)  # older entries are history
        if self.settings.subscribe:
            await self._subscribe()
        self._refresh_due = 0.0
        serial = self.settings.serial or name
        return Identity(MANUFACTURER, serial, model, str(system.get("rwversion", "")))

    async def _read(self, counters: bool) -> Sample:
        loop = asyncio.get_running_loop()
        if self._ws_error is not None:
            raise SourceError(f"subscription lost: {self._ws_error}")
        at: datetime | None = None
        if self._events:  # every pushed change in turn, stamped when it arrived: none is lost
            at, signals = self._events.popleft()
        elif not self.subscribed or loop.time() >= self._refresh_due or len(self.signals) < 3:
            pushed = dict(self._pushes)
            read = {}
            for name, path in (("ctrlstate", self.ctrl_path), ("opmode", "/rw/panel/opmode")):
                read[name] = field(first_state(await self._get(path), path), name, path)
            path = "/rw/rapid/execution"
            read["ctrlexecstate"] = field(first_state(await self._get(path), path), "ctrlexecstate", path)
            for name, value in read.items():
                if self._pushes.get(name) == pushed.get(name):  # an event pushed meanwhile is newer
                    self.signals[name] = value
            self._refresh_due = loop.time() + self.settings.refresh_s
            signals = self.signals
            if self._events:  # changes pushed during the refresh: theirs are the earlier times
                at, signals = self._events.popleft()
        else:
            signals = self.signals
        state = state_of(signals["ctrlstate"], signals["opmode"], signals["ctrlexecstate"])
        fault = state is State.FAULT
        alarms: dict[str, str] | None = None
        if self._elog_due:  # after the state went out: a change is never held up by the log
            new, self._elog_seq = elog_errors(await self._get("/rw/elog/0"), self._elog_seq)
            self._errors.update(new)
            alarms = dict(self._errors)
            if not fault:
                self._errors.clear()  # reported once at least; the next read says they are gone
        again = bool(alarms) and not fault
        self._elog_due = counters or self._elog_pushed or fault is not self._was_fault or again
        self._elog_pushed = False
        self._was_fault = fault
        return Sample(state, alarms, at=at)

    async def _pause(self) -> None:
        if self._elog_due or self._events:
            return  # the event log, or pushed changes waiting, are read right away
        if not self.subscribed:
            await super()._pause()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.refresh_s):
                await self._pushed.wait()
        self._pushed.clear()

    async def _disconnect(self) -> None:
        """Close the subscription; the HTTP client and its session cookie stay for the next connect."""
        self.subscribed = False
        self._events.clear()
        task, self._ws_task = self._ws_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # its end, whatever it raised; a cancel of ours still propagates
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.warning("%s: the subscription's listener had failed: %r", self.address, exc)
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close()
        group, self._group = self._group, None
        if group is not None and self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.delete(f"/subscription/{group}", timeout=1.0)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        http, self._http = self._http, None
        if http is not None:
            with contextlib.suppress(Exception):
                await http.get("/logout", timeout=2.0)  # give the session back to the controller
            await http.aclose()

    # -- subscriptions (§3)
    async def _subscribe(self) -> None:
        resources = {
            "1": "/rw/panel/ctrlstate",  # RW7 keeps the unhyphenated name here (§3)
            "2": "/rw/panel/opmode",
            "3": "/rw/rapid/execution;ctrlexecstate",
            "4": "/rw/elog/0",
        }
        form: list[tuple[str, str]] = []
        for key, uri in resources.items():
            form += [("resources", key), (key, uri), (f"{key}-p", "1")]
        headers = {"Content-Type": "application/x-www-form-urlencoded;v=2.0"} if self.v7 else {}
        body = urlencode(form)
        response = await self._request("POST", "/subscription", content=body, headers=headers)
        link = _WS_LINK.search(response.headers.get("location", "") + " " + response.text)
        if response.status_code not in (200, 201) or link is None:
            log.info("%s: no subscription (HTTP %s); polling instead", self.address, response.status_code)
            return
        url = link.group(0)
        self._group = url.rstrip("/").rsplit("/", 1)[-1]
        cookies = "; ".join(f"{c.name}={c.value}" for c in self._client().cookies.jar)
        ssl_ctx = self._tls() if url.startswith("wss://") else None
        try:
            self._ws = await websockets.connect(
                url,
                subprotocols=[websockets.Subprotocol("rws_subscription" if self.v7 else "robapi2_subscription")],
                additional_headers={"Cookie": cookies},
                ssl=ssl_ctx,
                open_timeout=self.settings.timeout_s,
            )
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            log.info("%s: subscription WebSocket refused (%s); polling instead", self.address, exc)
            self._group = None
            return
        self._ws_error = None
        self.subscribed = True
        self._ws_task = asyncio.create_task(self._listen(self._ws), name=f"rws events {self.address}")

    async def _listen(self, ws: Any) -> None:
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                for name, rx in _EVENTS.items():
                    match = rx.search(text)
                    if match:
                        self.signals[name] = match.group(1)
                        self._pushes[name] = self._pushes.get(name, 0) + 1
                if any(rx.search(text) for rx in _EVENTS.values()) and len(self.signals) == 3:
                    self._events.append((self.now(), dict(self.signals)))
                if _ELOG_EVENT.search(text):
                    self._elog_pushed = True
                self._pushed.set()
            self._ws_error = "the controller closed the WebSocket"
        except websockets.WebSocketException as exc:
            self._ws_error = f"WebSocket: {exc}"
        except OSError as exc:
            self._ws_error = f"WebSocket: {exc.strerror or exc}"
        self._pushed.set()  # wake the reader so it notices
