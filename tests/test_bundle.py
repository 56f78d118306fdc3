"""Air-gapped factory install: a bundle installs with --no-index and discovers a simulated controller."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from robodensity.app.bundle import bundle
from robodensity.core.errors import ConfigError
from robodensity.simulators.opcua_controller import OpcUaController, SimRobot

pytestmark = pytest.mark.slow


def test_a_bundle_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        bundle(tmp_path)


async def test_the_bundle_installs_without_an_index_and_discovers_robots(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    wheels = await asyncio.to_thread(bundle, out)
    names = {w.name.split("-")[0].lower() for w in wheels}
    assert {"robodensity", "asyncua", "paho_mqtt", "pydantic"} <= names
    assert not names & {"numpy", "psycopg", "psycopg_binary"}, "the edge extra stays light"
    assert {p.name for p in out.iterdir()} == {"wheels", "edge.example.toml", "robodensity-edge.service", "install.sh"}

    prefix = tmp_path / "gateway"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "PIP_NO_INDEX": "1", "HOME": str(tmp_path)}
    done = await asyncio.to_thread(
        subprocess.run, ["sh", str(out / "install.sh"), str(prefix)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    robot = SimRobot("ESTUN", "ER-0001", "ER20")
    async with OpcUaController([robot], name="air-gap") as ctl:
        proc = await asyncio.create_subprocess_exec(
            str(prefix / "bin" / "robodensity"), "edge", "discover", ctl.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert "ER-0001" in stdout.decode()
