"""Layers run one way: ``adaptive_tts`` imports neither ``controllers`` nor ``experiments``, and
``controllers`` does not import ``experiments`` (checked on every module's imports, lazy ones
inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"adaptive_tts": ("controllers", "experiments"), "controllers": ("experiments",)}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                pkg = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
                out.append((node.lineno, ".".join([*pkg, node.module or ""]).rstrip(".")))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def upward_imports(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, mod in imported_modules(path):
            top = mod.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package: str) -> None:
    assert upward_imports(package) == []


def test_the_walk_sees_lazy_imports(tmp_path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from experiments.run import main\n    import controllers.io\n")
    assert [m for _, m in imported_modules(src)] == ["experiments.run", "controllers.io"]


def test_core_needs_no_source_tree_for_the_demo_config() -> None:
    """The demo config is package data of ``experiments`` read through importlib.resources."""
    from experiments.demo import demo_config_text

    assert "name: demo" in demo_config_text()
    assert "Path(__file__)" not in (ROOT / "experiments" / "demo.py").read_text()
