"""The arrows between packages run one way: read every import statement with ``ast``.

The gateway and drift read the model repository through ``treeserve.repository`` and never import
the exporter; ``treeserve.repository`` (and the ground modules it imports) import nothing of the
packages built on top of it. Imports inside functions and ``TYPE_CHECKING`` blocks count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
UPPER = ("exporter", "gateway", "drift", "training", "loadtest")


def _imports(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


def _module_file(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@pytest.mark.parametrize("package", ["gateway", "drift"])
def test_gateway_and_drift_import_nothing_from_the_exporter(package: str) -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in _files(package)
        for module in _imports(path)
        if _top(module) == "exporter"
    }
    assert not offenders, "\n".join(sorted(offenders))


def test_the_repository_format_imports_only_the_ground() -> None:
    """``treeserve.repository`` and every project module it reaches, transitively."""
    seen: set[Path] = set()
    todo = _files("treeserve.repository")
    offenders: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            if _top(module) in UPPER:
                offenders.add(f"{path.relative_to(ROOT)}: {module}")
            elif _top(module) == "treeserve":
                target = _module_file(module)
                if target is not None:
                    todo.append(target)
    assert not offenders, "\n".join(sorted(offenders))
    assert ROOT / "treeserve" / "repository" / "store.py" in seen  # the walk did look at the package
