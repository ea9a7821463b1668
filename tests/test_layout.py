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
