"""The house rules that a reader of src/ relies on, checked on the source itself.

- Arrows point down: each package imports only the layers below it (the table is the
  architecture; README "Layout" draws it).
- No function longer than 80 lines; every public function, class and method has a docstring.
- One word, one meaning: no package or constant reuses the names that once meant several
  things (`tasks`, `TASKS`), and one module owns the lorakit.json file format.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import lorakit

SRC = Path(lorakit.__file__).parent
# Layer of each top-level module or package of lorakit; imports go to strictly lower layers only.
LAYERS = {
    "errors": 0,
    "task_kind": 1,
    "packages": 1,
    "folders": 1,
    "jsontext": 1,
    "_third_party_logs": 1,
    "heap": 1,
    "lora": 2,
    "data": 2,
    "models": 2,
    "report": 2,
    "quant": 3,
    "artifacts": 4,
    "inference": 5,
    "export": 6,
    "train": 6,
    "serve": 6,
    "cli": 7,
}
MAX_FUNCTION_LINES = 80


def python_files() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text())


def unit(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def lorakit_imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def definitions(tree: ast.AST, inside_function: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """(node, nested in a function) for every function and class."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield child, inside_function
            yield from definitions(child, inside_function or not isinstance(child, ast.ClassDef))
        else:
            yield from definitions(child, inside_function)


def test_every_package_has_a_layer():
    units = {unit(path) for path, _ in python_files()} - {"__init__"}
    assert units == set(LAYERS)


def test_imports_point_down_only():
    wrong = []
    for path, tree in python_files():
        here = unit(path)
        for name in lorakit_imports(tree):
            parts = name.split(".")
            if parts[0] != "lorakit" or len(parts) < 2 or parts[1] == here or here == "__init__":
                continue
            if LAYERS[parts[1]] >= LAYERS[here]:
                wrong.append(f"{path.relative_to(SRC)} imports {name}")
    assert not wrong, wrong


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in python_files()
        for node, _ in definitions(tree)
        if not isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_every_public_function_class_and_method_has_a_docstring():
    missing = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.name}"
        for path, tree in python_files()
        for node, nested in definitions(tree)
        if not nested and not node.name.startswith("_") and ast.get_docstring(node) is None
    ]
    assert not missing, missing


def test_retired_names_stay_retired():
    assert not (SRC / "tasks").exists(), "lorakit/tasks/ became lorakit/inference/"
    constants = [
        f"{path.relative_to(SRC)}: {target.id}"
        for path, tree in python_files()
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id in ("TASKS", "TASK_TYPES", "GENERATIVE_TASKS", "MODEL_INFO")
    ]
    assert not constants, constants


def test_one_module_owns_the_lorakit_json_format():
    owners = set()
    for path, tree in python_files():
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "lorakit.json" and id(node) not in docstrings:
                owners.add(path.relative_to(SRC).as_posix())
    assert owners == {"artifacts.py"}
