"""The layers of docs/architecture.md, checked on every import in the package.

Imports run downward only: ground (core) <- storage <- capabilities <- application (app).
A capability imports the ground, storage where it touches PostgreSQL, and no other
capability except the pure metrics core; simulators never import the edge, so a mapping
mistake on one side is caught by the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "robodensity"
CAPABILITIES = ("edge", "collector", "metrics", "dashboards", "simulators")

ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "storage": {"core", "storage", "reference"},
    "metrics": {"core", "metrics"},
    "edge": {"core", "edge"},
    "collector": {"core", "storage", "collector"},
    "dashboards": {"core", "storage", "metrics", "dashboards"},
    "simulators": {"core", "storage", "simulators"},
    "app": {"core", "storage", "app", *CAPABILITIES},
    "reference": {"reference"},
}


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "robodensity":
        return None
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "robodensity":  # from robodensity import core, app ...
                found += [(node.lineno, f"robodensity.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not p.name.endswith("_pb2.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downward_only(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0] if len(rel.parts) > 1 else ""
    if own == "":  # robodensity/__init__.py: the version only
        allowed: set[str] = set()
    else:
        assert own in ALLOWED, f"{rel}: a folder no layer of docs/architecture.md names"
        allowed = ALLOWED[own]
    for line, module in _imports(path):
        layer = _layer_of(module)
        if layer is None:
            assert module.split(".")[0] not in CAPABILITIES + ("collector",), f"{rel}:{line}: bare import {module}"
            continue
        assert layer in allowed, f"{rel}:{line}: {own or 'robodensity'} may not import {module} (layer {layer})"


def test_every_layer_folder_is_documented() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(ALLOWED), "robodensity/ holds exactly the layers this test knows"
    for folder in folders:
        assert f"robodensity/{folder}/" in text, f"docs/architecture.md does not mention robodensity/{folder}/"


def test_the_readme_layout_table_matches_the_tree() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `")}
    actual = {f"robodensity/{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    actual |= {f"{p.name}/" for p in ROOT.iterdir() if p.is_dir() and p.name in ("bench", "tests", "deploy", "docs")}
    assert listed == actual


def test_an_install_puts_only_robodensity_into_site_packages(tmp_path: Path) -> None:
    import subprocess
    import sys

    target = tmp_path / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(ROOT)],
        check=True, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    top = {p.name for p in target.iterdir()} - {"bin"}  # --target puts console scripts in bin/
    assert top == {"robodensity", "robodensity-0.1.0.dist-info"}
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); from robodensity.storage.db import migrations; "
        "import robodensity; print(robodensity.__file__); print(len(migrations()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(target)], check=True, cwd=tmp_path, capture_output=True, text=True
    ).stdout.split()
    assert out[0].startswith(str(target)), "the installed copy, not the checkout, was imported"
    shipped = len(list((PACKAGE / "storage" / "migrations").glob("*.sql")))
    assert int(out[1]) == shipped, "every migration ships as package data"
