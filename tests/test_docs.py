"""Every test that docs/reliability.md cites exists in the suite."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_test_cited_in_the_reliability_doc_exists() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    cited = set(re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text))
    assert cited
    for path, name in cited:
        assert (ROOT / path).is_file(), path
        if name:
            tree = ast.parse((ROOT / path).read_text())
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            assert name in names, f"{path}::{name} is cited but does not exist"
