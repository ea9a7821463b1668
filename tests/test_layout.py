"""The layout rules of docs/architecture.md, checked on the code itself.

Small modules and short functions are what let a newcomer find the one place
for each job; one atomic writer is what makes "no half-written output" hold
everywhere at once.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mrisr"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 120


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} is over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, (
                f"{path}:{node.lineno} {node.name}() is {length} lines (limit {MAX_FUNCTION_LINES})"
            )


def test_outputs_are_renamed_into_place_in_one_module():
    """Every output goes through mrisr.io.files' atomic writer: one os.replace in the package."""
    sites = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if _renames(node):
                    sites.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert len(sites) == 1 and sites[0].startswith("io/files.py"), sites


def _renames(call: ast.Call) -> bool:
    """os.replace/os.rename, or Path.replace/Path.rename (one argument; str.replace takes two)."""
    name = call.func.attr
    if isinstance(call.func.value, ast.Name) and call.func.value.id == "os":
        return name in ("replace", "rename")
    return name in ("replace", "rename") and len(call.args) == 1 and not call.keywords


def _raises_directly(function: ast.AST) -> bool:
    """Whether ``function``'s own body (not a nested function's) raises an exception."""
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Raise) and node.exc is not None and not _is_exit(node.exc):
            return True
        stack.extend(ast.iter_child_nodes(node))
    return False


def _is_exit(exc: ast.AST) -> bool:
    """``typer.Exit(...)`` / ``SystemExit(...)``: how a command ends, not an error to document."""
    target = exc.func if isinstance(exc, ast.Call) else exc
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name in ("Exit", "SystemExit")


def _public_functions(tree: ast.AST, public: bool = True):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if public and not node.name.startswith("_"):
                yield node
        elif isinstance(node, ast.ClassDef):
            yield from _public_functions(node, public and not node.name.startswith("_"))


def test_every_public_function_that_raises_says_what_in_its_docstring():
    missing = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
        for path in SOURCES
        for node in _public_functions(ast.parse(path.read_text(encoding="utf-8")))
        if _raises_directly(node) and "Raises:" not in (ast.get_docstring(node) or "")
    ]
    assert not missing, "public functions that raise without a Raises: section: " + ", ".join(
        missing
    )
