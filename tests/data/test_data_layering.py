"""The data layer sits low: it never imports the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import lorakit.data

HIGHER_LAYERS = (
    "lorakit.train",
    "lorakit.cli",
    "lorakit.report",
    "lorakit.tasks",
    "lorakit.inference",
    "lorakit.serve",
    "lorakit.export",
    "lorakit.artifacts",
)


def test_data_modules_import_no_higher_layer():
    folder = Path(lorakit.data.__file__).parent
    paths = sorted(folder.rglob("*.py"))
    assert len(paths) > 1
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(HIGHER_LAYERS), f"{path.relative_to(folder)} imports {name}"
