"""A simulated ABB controller serving Robot Web Services: RobotWare 6 (RWS 1.0) or 7 (RWS 2.0).

Written from ``../shared/reference/protocols/abb-rws.md`` (never from the edge): Digest
auth (RW6) or Basic auth (RW7) answered with the session cookies ``-http-session-`` and
``ABBCX`` (reused on every request), a session pool (HTTP 503 when full), ``GET /logout``,
JSON in the ``_embedded._state`` shape (RW6 ``?json=1``, RW7 ``application/hal+json;v=2.0``),
the panel, RAPID, event-log and system resources, and subscriptions: ``POST /subscription``
answers 201 with the WebSocket link ``ws(s)://.../poll/<group>``, whose events are XHTML
fragments (``pnl-ctrlstate-ev`` ...). How each canonical state looks::

    state           ctrlstate       opmode  ctrlexecstate   event log
    EXECUTING       motoron         AUTO    running         10011 Motors ON state (info)
    IDLE            motoron         AUTO    stopped
    FAULT           emergencystop   AUTO    stopped         20010 Emergency stop state (error)
    OUT_OF_SERVICE  motoroff        MANR    stopped
    OFFLINE         the controller does not answer (powered off)

HTTP is the standard library's server in a thread (a test double, not a product); the
WebSocket side is the ``websockets`` server on the caller's event loop. Fault injection:
``delay_s`` (a slow controller), ``garbage`` (replies that are not JSON), ``max_sessions``,
``power_off()`` / ``power_on()`` (sessions are lost, as in a restart).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from robodensity.core.wire import State
from robodensity.simulators.behaviour import Schedule, SimClock, due_changes
from robodensity.simulators.device import SwitchedDevice

REALM = "validusers@robapi.abb"
WIRE: dict[State, tuple[str, str, str]] = {
    State.EXECUTING: ("motoron", "AUTO", "running"),
    State.IDLE: ("motoron", "AUTO", "stopped"),
    State.FAULT: ("emergencystop", "AUTO", "stopped"),
    State.OUT_OF_SERVICE: ("motoroff", "MANR", "stopped"),
}
"""State -> (ctrlstate, opmode, ctrlexecstate)."""
_DIGEST_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]+))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # HTTP Digest (RFC 2617) is MD5


class RwsController(SwitchedDevice):
    """One controller on 127.0.0.1; ``robotware`` 6 or 7; ``tls`` makes it https/wss."""

    def __init__(
        self,
        system_name: str,
        robotware: int = 6,
        robot_type: str = "IRB 6700-200/2.60",
        users: Mapping[str, str] | None = None,
        max_sessions: int = 70,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.system_name, self.robotware, self.robot_type = system_name, robotware, robot_type
        self.users = dict(users or {"Default User": "robotics"})
        self.max_sessions = max_sessions
        self.tls = tls
        self.state = State.IDLE
        self.elog: list[tuple[int, int, int, str]] = [(1, 1, 10002, "Program pointer has been reset")]
        self.sessions: dict[str, float] = {}
        self.logins = 0
        self.refused = 0
        self.logouts = 0
        self.requests = 0
        self.subscriptions = 0
        self.login_paths: list[str] = []
        self.delay_s = 0.0
        self.garbage = False
        self.http_port = 0
        self.ws_port = 0
        self._groups: dict[str, set[ServerConnection]] = {}
        self._nonce = secrets.token_hex(16)
        self._http: ThreadingHTTPServer | None = None
        self._ws: Server | None = None
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def powered(self) -> bool:
        return self._http is not None

    async def power_on(self) -> None:
        with self._lock:
            self.sessions.clear()  # a controller boots with none (a request caught in the power-off made one)
        self._ws = await serve(
            self._ws_handler,
            "127.0.0.1",
            self.ws_port,
            subprotocols=["rws_subscription" if self.robotware == 7 else "robapi2_subscription"],  # type: ignore[list-item]
            process_request=self._ws_check,
            ssl=self.tls,
        )
        self.ws_port = next(iter(self._ws.sockets)).getsockname()[1]
        handler = type("Handler", (_Handler,), {"controller": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), handler)
        self._http.daemon_threads = True
        if self.tls is not None:
            self._http.socket = self.tls.wrap_socket(self._http.socket, server_side=True)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, args=(0.02,), name="rws-sim", daemon=True).start()

    async def power_off(self) -> None:
        """Stop answering; sessions and subscriptions are lost, as when a controller restarts."""
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        http, self._http = self._http, None
        if http is not None:
            http.socket.close()  # refuse new connections at once
        with self._lock:
            live, self._conns = self._conns, set()
            self.sessions.clear()
            self._groups.clear()
        for sock in live:  # keep-alive connections die with the controller too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if http is not None:
            await asyncio.to_thread(http.shutdown)
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ws.wait_closed()

    def set_state(self, state: State) -> None:
        """Change state and push the events to every subscription (call on the event loop)."""
        before = WIRE.get(self.state, WIRE[State.IDLE])
        self.state = state
        after = WIRE.get(state, WIRE[State.IDLE])
        events = []
        classes = (
            ("pnl-ctrlstate-ev", "ctrlstate"),
            ("pnl-opmode-ev", "opmode"),
            ("rap-ctrlexecstate-ev", "ctrlexecstate"),
        )
        for (cls, name), old, new in zip(classes, before, after):
            if old != new:
                events.append(f'<li class="{cls}" title="{name}"><span class="{name}">{new}</span></li>')
        if state is State.FAULT:
            seq = self._log(3, 20010, "Emergency stop state")
            events.append(f'<li class="elog-message-ev"><span class="seqnum">{seq}</span></li>')
        elif state is State.EXECUTING:
            seq = self._log(1, 10011, "Motors ON state")
            events.append(f'<li class="elog-message-ev"><span class="seqnum">{seq}</span></li>')
        if not events:
            return
        message = '<html><body><div class="state"><ul>' + "".join(events) + "</ul></div></body></html>"
        with self._lock:
            connections = [c for group in self._groups.values() for c in group]
        for conn in connections:
            task = asyncio.ensure_future(conn.send(message))
            task.add_done_callback(lambda t: t.exception())  # a closed connection is no news

    def _log(self, msgtype: int, code: int, title: str) -> int:
        with self._lock:
            seq = self.elog[-1][0] + 1 if self.elog else 1
            self.elog.append((seq, msgtype, code, title))
            del self.elog[:-50]  # a controller keeps a bounded log too
            return seq

    # -- sessions and auth (called from the HTTP thread)
    def session_of(self, cookie: str | None) -> str | None:
        with self._lock:
            valid = [c for c in re.findall(r"-http-session-=([^;\s]+)", cookie or "") if c in self.sessions]
        return valid[0] if valid else None

    def login(self, method: str, header: str | None, path: str = "") -> tuple[int, str | None]:
        """(HTTP status, new session id) for a request without a valid session."""
        if not header:
            return 401, None
        user = self._check(method, header)
        if user is None:
            self.refused += 1
            return 401, None
        with self._lock:
            if len(self.sessions) >= self.max_sessions:
                return 503, None
            session = secrets.token_hex(12)
            self.sessions[session] = time.monotonic()
            self.logins += 1
            self.login_paths.append(f"{method} {path}")
        return 200, session

    def _check(self, method: str, header: str) -> str | None:
        scheme, _, rest = header.partition(" ")
        if self.robotware == 7:
            if scheme != "Basic":
                return None
            user, _, password = base64.b64decode(rest).decode("utf-8", "replace").partition(":")
            return user if self.users.get(user) == password else None
        if scheme != "Digest":
            return None
        f = {m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _DIGEST_FIELD.finditer(rest)}
        user = f.get("username", "")
        if user not in self.users or f.get("nonce") != self._nonce:
            return None
        ha1 = _md5(f"{user}:{REALM}:{self.users[user]}")
        ha2 = _md5(f"{method}:{f.get('uri', '')}")
        want = _md5(f"{ha1}:{self._nonce}:{f.get('nc')}:{f.get('cnonce')}:{f.get('qop')}:{ha2}")
        return user if f.get("response") == want else None

    def challenge(self) -> str:
        if self.robotware == 7:
            return f'Basic realm="{REALM}"'
        return f'Digest realm="{REALM}", qop="auth", nonce="{self._nonce}", algorithm=MD5'

    def logout(self, session: str) -> None:
        with self._lock:
            self.sessions.pop(session, None)
            self.logouts += 1

    # -- resources
    def resource(self, path: str) -> Any:
        ctrl, opmode, execstate = WIRE.get(self.state, WIRE[State.IDLE])
        ctrl_path = "/rw/panel/ctrl-state" if self.robotware == 7 else "/rw/panel/ctrlstate"
        items: list[dict[str, Any]]
        if path == ctrl_path:
            items = [{"_type": "pnl-ctrlstate", "_title": "ctrlstate", "ctrlstate": ctrl}]
        elif path == "/rw/panel/opmode":
            items = [{"_type": "pnl-opmode", "_title": "opmode", "opmode": opmode}]
        elif path == "/rw/rapid/execution":
            items = [{"_type": "rap-execution", "_title": "execution", "ctrlexecstate": execstate, "cycle": "forever"}]
        elif path == "/rw/system":
            version = "7.10.0" if self.robotware == 7 else "6.15.01"
            items = [
                {
                    "_type": "sys-system-li",
                    "_title": "system",
                    "name": self.system_name,
                    "rwversion": version,
                    "rwversionname": f"{version}.00",
                    "sysid": "{6A1B3C4D}",
                    "starttm": "2026-03-01 T 06:00:00",
                }
            ]
        elif path == "/rw/system/robottype":
            items = [{"_type": "sys-robottype", "_title": "robottype", "robot-type": self.robot_type}]
        elif path == "/rw/elog/0":
            with self._lock:
                log = list(reversed(self.elog))
            items = [
                {
                    "_type": "elog-message-li",
                    "_title": f"/rw/elog/0/{seq}",
                    "msgtype": str(msgtype),
                    "code": str(code),
                    "tstamp": "2026-03-02 T 08:00:00",
                    "title": title,
                }
                for seq, msgtype, code, title in log
            ]
        else:
            return None
        return {"_links": {"base": {"href": "/"}}, "_embedded": {"_state": items}}

    def subscribe(self, form: dict[str, list[str]]) -> str:
        group = secrets.token_hex(4)
        with self._lock:
            self._groups[group] = set()
            self.subscriptions += 1
        return group

    def ws_link(self, group: str) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.ws_port}/poll/{group}"

    def unsubscribe(self, group: str) -> None:
        with self._lock:
            self._groups.pop(group, None)

    # -- WebSocket
    def _ws_check(self, connection: ServerConnection, request: Request) -> Response | None:
        group = request.path.rsplit("/", 1)[-1]
        if not request.path.startswith("/poll/") or group not in self._groups:
            return connection.respond(404, "no such subscription group\n")
        if self.session_of(request.headers.get("Cookie")) is None:
            return connection.respond(401, "no session\n")
        return None

    async def _ws_handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        group = connection.request.path.rsplit("/", 1)[-1]
        with self._lock:
            members = self._groups.get(group)
            if members is None:
                return
            members.add(connection)
        try:
            await connection.wait_closed()
        finally:
            with self._lock:
                self._groups.get(group, set()).discard(connection)


class _Handler(BaseHTTPRequestHandler):
    controller: RwsController
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: a test double
        return

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stalls
        with self.controller._lock:
            self.controller._conns.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.controller._lock:
            self.controller._conns.discard(self.connection)

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _session(self) -> str | None:
        c = self.controller
        if self.server is not c._http:  # a connection of the controller before it was switched off
            self.close_connection = True
            return None
        c.requests += 1
        if c.delay_s:
            time.sleep(c.delay_s)
        session = c.session_of(self.headers.get("Cookie"))
        if session is not None:
            return session
        status, session = c.login(self.command, self.headers.get("Authorization"), self.path)
        if status == 401:
            self._send(401, b"", {"WWW-Authenticate": c.challenge()})
            return None
        if status == 503:
            self._send(503, b"too many sessions\n")
            return None
        self._new_session = session
        return session

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        new = getattr(self, "_new_session", None)
        if new is not None:
            headers["Set-Cookie"] = f"-http-session-={new}; Path=/"
            self.send_response(status)
            self.send_header("Set-Cookie", f"ABBCX={secrets.randbelow(10_000)}; Path=/")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._send(status, body, headers)

    def do_GET(self) -> None:
        session = self._session()
        if session is None:
            return
        c = self.controller
        parts = urlsplit(self.path)
        if parts.path == "/logout":
            c.logout(session)
            self._reply(200, b"")
            return
        json_wanted = parse_qs(parts.query).get("json") == ["1"] or "json" in self.headers.get("Accept", "")
        data = c.resource(parts.path)
        if data is None:
            self._reply(404, b"")
        elif c.garbage:
            self._reply(200, b"<html>\x00\x17 not what you asked", {"Content-Type": "application/json"})
        elif not json_wanted:
            self._reply(200, b"<html><body>xhtml</body></html>", {"Content-Type": "application/xhtml+xml"})
        else:
            self._reply(200, json.dumps(data).encode(), {"Content-Type": "application/hal+json;v=2.0"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        if self._session() is None:
            return
        c = self.controller
        if urlsplit(self.path).path != "/subscription":
            self._reply(404, b"")
            return
        group = c.subscribe(form)
        link = c.ws_link(group)
        body = f'<html><body><a href="{link}" rel="self"></a><a href="subscription/{group}"></a></body></html>'
        self._reply(201, body.encode(), {"Location": link, "Content-Type": "application/xhtml+xml"})

    def do_DELETE(self) -> None:
        if self._session() is None:
            return
        path = urlsplit(self.path).path
        if path.startswith("/subscription/"):
            self.controller.unsubscribe(path.rsplit("/", 1)[-1])
        self._reply(200, b"")


async def replay(robots: Mapping[str, RwsController], schedules: Mapping[str, Schedule], clock_: SimClock) -> None:
    """Set each controller's state when its change is due (OFFLINE powers it off, anything else on)."""
    async for _, key, state in due_changes(schedules, clock_):
        ctl = robots[key]
        if state is State.OFFLINE:
            await ctl.power_off()
            continue
        if not ctl.powered:
            await ctl.power_on()
        ctl.set_state(state)
