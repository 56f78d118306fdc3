"""Throwaway PostgreSQL and Mosquitto on free 127.0.0.1 ports, for the demo and the tests.

Each is a context manager that yields a URL and removes everything it created on exit.
A missing binary is a ServiceError naming the Debian package (``./dev`` installs it).
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
system user and its folder is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from robodensity.core.errors import ServiceError
from robodensity.storage.backup import postgres_bindir as storage_bindir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL server binaries."""
    bindir = storage_bindir("initdb")
    if not (bindir / "pg_ctl").exists():
        raise ServiceError(f"{bindir} has initdb but no pg_ctl: install the Debian package postgresql (./dev does)")
    return bindir


def timescaledb_installed(bindir: Path | None = None) -> bool:
    """TimescaleDB's library sits beside the server's (Debian's layout; ./dev builds it there)."""
    bindir = bindir or postgres_bindir()
    return (bindir.parent / "lib" / "timescaledb.so").exists()


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        raise ServiceError("running as root needs runuser (Debian package util-linux) to start PostgreSQL")
    return ["runuser", "-u", "postgres", "--", *cmd]


class EmbeddedPostgres:
    """A throwaway cluster that can also be stopped, killed and started again (fault tests).

    fsync is off: this cluster is for demos and tests and dies with them (a killed server
    still recovers from its WAL; only an operating-system crash could lose data).
    ``timescaledb`` preloads TimescaleDB (a ServiceError when it is not installed), so that
    migrations/004 makes events a hypertable. ``logical`` sets wal_level=logical, so the
    cluster can publish to (or subscribe from) another by logical replication (federation).
    """

    def __init__(self, port: int | None = None, timescaledb: bool = False, logical: bool = False) -> None:
        self.bindir = postgres_bindir()
        if timescaledb and not timescaledb_installed(self.bindir):
            raise ServiceError(f"TimescaleDB is not installed beside {self.bindir} (./dev test builds it)")
        self.timescaledb = timescaledb
        self.logical = logical
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="robodensity-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError("running as root needs the postgres system user (package postgresql)") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        _run(_as_postgres([*initdb, "-E", "UTF8", "--locale=C", "--no-sync"]), "initdb")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        if self.timescaledb:
            opts += " -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
        if self.logical:
            opts += " -c wal_level=logical -c wal_retrieve_retry_interval=500ms"
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log")]
        _run(_as_postgres([*pg_ctl, "-w", "-t", "60", "start"]), "pg_ctl start")

    def stop(self) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_postgres(cmd), capture_output=True, check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends die with it."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Orphaned backends exit on their own once the postmaster is gone; wait for the port.
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def embedded_postgres(port: int | None = None, timescaledb: bool = False) -> Iterator[str]:
    """A new PostgreSQL cluster in a temporary folder; yields its URL."""
    with running_postgres(port, timescaledb) as pg:
        yield pg.url


@contextlib.contextmanager
def running_postgres(
    port: int | None = None, timescaledb: bool = False, logical: bool = False
) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(port, timescaledb, logical)
    try:
        pg.init()
        pg.start()
        try:
            yield pg
        finally:
            pg.stop()
    finally:
        pg.remove()


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if not found:
        raise ServiceError("mosquitto not found: install the Debian package mosquitto (./dev does)")
    return found


@contextlib.contextmanager
def embedded_mosquitto(port: int | None = None, extra_conf: str = "", wait_port: int | None = None) -> Iterator[str]:
    """A Mosquitto broker on a free loopback port, anonymous, in memory; yields mqtt://URL.

    ``extra_conf`` adds configuration (another listener, say); ``wait_port`` is waited for too.
    """
    binary = mosquitto_binary()
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="robodensity-mqtt-"))
    conf = root / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 0\nmessage_size_limit 4194304\n"
        f"log_dest file {root}/log\n{extra_conf}"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc=proc)
        if wait_port:
            wait_for_port(wait_port, proc=proc)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise ServiceError(f"{what} failed ({res.returncode}): {' / '.join(tail)}")
