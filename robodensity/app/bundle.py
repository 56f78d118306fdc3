"""``robodensity edge bundle``: everything a factory gateway without internet needs, in one folder.

The folder holds a wheelhouse (robodensity and every package of the ``edge`` extra, as
wheels for the target platform), the example settings, the systemd unit and ``install.sh``,
which installs with ``pip --no-index`` from the wheelhouse alone. Carry it on a USB stick
into an OT network that reaches nothing outside.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from robodensity.core.errors import ConfigError, ServiceError

ROOT = Path(__file__).resolve().parents[2]
"""The source checkout this module runs from (the bundle builds robodensity's wheel from it)."""

INSTALL_SH = """#!/bin/sh
# Install the RoboDensity edge agent from this folder alone: no index, no internet.
#   sudo ./install.sh [PREFIX]          (default PREFIX: /opt/robodensity)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${1:-/opt/robodensity}
python=${PYTHON:-python3}
"$python" -m venv "$prefix"
"$prefix/bin/python" -m pip install --no-index --find-links "$here/wheels" 'robodensity[edge]'
if [ "$(id -u)" -eq 0 ] && [ -d /etc/systemd/system ]; then
  install -d -m 0755 /etc/robodensity
  [ -e /etc/robodensity/edge.toml ] || install -m 0640 "$here/edge.example.toml" /etc/robodensity/edge.toml
  install -m 0644 "$here/robodensity-edge.service" /etc/systemd/system/robodensity-edge.service
  echo "edit /etc/robodensity/edge.toml, then: systemctl enable --now robodensity-edge"
fi
"$prefix/bin/robodensity" edge --help >/dev/null && echo "installed into $prefix"
"""


def bundle(out: Path, platform: str | None = None, python_version: str | None = None) -> list[Path]:
    """Write the air-gapped install folder ``out``; returns the wheels in it.

    ``platform`` (a pip platform tag such as ``manylinux2014_aarch64``) and ``python_version``
    (``3.11``) build for another gateway than this machine; binary wheels only, then.
    """
    if not (ROOT / "pyproject.toml").is_file():
        raise ConfigError("edge bundle runs from a source checkout of robodensity (pyproject.toml not found)")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: choose a new folder for the bundle")
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _pip([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)], "building the robodensity wheel")
    built = next(wheels.glob("robodensity-*.whl"))
    target = ["--only-binary=:all:", "--platform", platform] if platform else []
    if python_version:
        target += ["--python-version", python_version, "--only-binary=:all:"]
    _pip([*pip, "download", "--dest", str(wheels), *dict.fromkeys(target), f"{built}[edge]"],
         "downloading the edge extra's wheels")  # fmt: skip
    for sdist in [p for p in wheels.iterdir() if not p.name.endswith(".whl")]:
        _pip([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(sdist)], f"building {sdist.name}")
        sdist.unlink()
    shutil.copy(ROOT / "deploy" / "robodensity.example.toml", out / "edge.example.toml")
    shutil.copy(ROOT / "deploy" / "systemd" / "robodensity-edge.service", out / "robodensity-edge.service")
    script = out / "install.sh"
    script.write_text(INSTALL_SH, encoding="utf-8")
    script.chmod(0o755)
    return sorted(wheels.glob("*.whl"))


def _pip(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.splitlines()
        lines = [line for line in lines if line.strip().startswith("ERROR")] or lines
        raise ServiceError(f"{what} failed: {lines[0] if lines else f'pip exit code {done.returncode}'}")
