"""The package's shape: no module takes another module's private names.

The rooms' import order and the absence of import circles are checked by `lint-imports`
(pyproject.toml, run by deploy/test.sh); this is what it cannot see.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "streamsync"


def test_no_module_imports_a_private_name_of_another() -> None:
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("streamsync"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                crossings += [
                    f"{path.relative_to(PACKAGE.parent)}: from {node.module} import {name}" for name in private
                ]
    assert not crossings, "\n".join(crossings)
