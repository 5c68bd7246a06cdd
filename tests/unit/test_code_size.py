"""Size limits that keep `app/` readable: no function over 80 lines, no class over 400 (decorators and
docstrings count; the limits come from the architecture issue, not from a tool's default)."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 400


def _sizes() -> list[tuple[int, str, str]]:
    """``(lines, kind, "path:line name")`` of every function and class in ``app/``."""
    found = []
    for path in sorted(APP.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                where = f"{path.relative_to(APP.parent)}:{node.lineno} {node.name}"
                found.append((int(node.end_lineno or node.lineno) - first + 1, kind, where))
    return found


def test_no_function_over_80_lines() -> None:
    long = [f"{where} ({n} lines)" for n, kind, where in _sizes() if kind == "function" and n > MAX_FUNCTION_LINES]
    assert not long, "split these functions:\n" + "\n".join(long)


def test_no_class_over_400_lines() -> None:
    long = [f"{where} ({n} lines)" for n, kind, where in _sizes() if kind == "class" and n > MAX_CLASS_LINES]
    assert not long, "split these classes:\n" + "\n".join(long)


def test_the_measure_sees_every_module() -> None:
    sizes = _sizes()
    assert len(sizes) > 300
    assert any(where.startswith("app/chat/") for _, _, where in sizes)
