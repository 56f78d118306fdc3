"""Throwaway PostgreSQL and Mosquitto on free 127.0.0.1 ports, for the demo and the tests.

Each is a context manager that yields a URL and removes everything it created on exit.
A missing binary is a ServiceError naming the Debian package (``./dev`` installs it).
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
system user and its folder is handed to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from robodensity.errors import ServiceError


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
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which and shutil.which("pg_ctl"):
        return Path(which).parent
    raise ServiceError("PostgreSQL server binaries not found: install the Debian package postgresql (./dev does)")


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        raise ServiceError("running as root needs runuser (Debian package util-linux) to start PostgreSQL")
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextlib.contextmanager
def embedded_postgres(port: int | None = None) -> Iterator[str]:
    """A new PostgreSQL cluster in a temporary folder; yields its URL.

    fsync is off: this cluster is for demos and tests and dies with them.
    """
    bindir = postgres_bindir()
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="robodensity-pg-"))
    data = root / "data"
    try:
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError("running as root needs the postgres system user (package postgresql)") from None
            os.chown(root, pw.pw_uid, pw.pw_gid)
        _run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            "initdb",
        )
        opts = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        _run(
            _as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    opts,
                    "-l",
                    str(root / "log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            "pg_ctl start",
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
