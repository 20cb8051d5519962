"""The serving folders are layered: kernels ← engine ← http; a lower folder never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lorakit.serve

SERVE = Path(lorakit.serve.__file__).parent
HIGHER = {  # folder → the serve packages it must not import
    "kernels": ("lorakit.serve.engine", "lorakit.serve.http"),
    "engine": ("lorakit.serve.http",),
}


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports (absolute names; serve uses no relative imports)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path} uses a relative import"
            names.append(node.module or "")
    return names


@pytest.mark.parametrize("folder", sorted(HIGHER))
def test_lower_folders_import_no_higher_one(folder: str) -> None:
    paths = sorted((SERVE / folder).rglob("*.py"))
    assert len(paths) > 1
    for path in paths:
        for name in imported_modules(path):
            assert not name.startswith(HIGHER[folder]), f"{path.relative_to(SERVE)} imports {name}"
