"""The arrows between packages run one way: ground <- packages <- composition root.

Every import statement of every module (lazy ones inside functions and ``TYPE_CHECKING`` blocks
included) is read with ``ast`` and checked against the table of allowed package -> package edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

GROUND = "treeserve"
APP = "treeserve_app"
PACKAGES = (GROUND, "training", "exporter", "gateway", "drift", "loadtest", APP, "feature_repo")

ALLOWED: dict[str, set[str]] = {
    GROUND: set(),  # settings primitives, contract, errors, registry, logs, repository format, features
    "feature_repo": set(),  # Feast definitions only
    "training": {GROUND},
    "exporter": {GROUND},
    "gateway": {GROUND},  # never the exporter: the repository format is the ground's
    "drift": {GROUND},  # never the exporter or the gateway: what it reads of them is a settings protocol
    "loadtest": {GROUND, "training", "exporter", "gateway"},  # drives the whole stack from outside
    APP: {GROUND, "training", "exporter", "gateway", "drift", "loadtest"},
}

ENTRY_MODULES = {
    # Process entry points of the load tests and benchmarks build the root settings themselves:
    # Locust loads the locustfile, uvicorn the baseline app, ``python -m`` the bench suite.
    "loadtest.locustfile",
    "loadtest.baseline_app",
    "loadtest.bench",
    "loadtest.bench_export",
    "loadtest.bench_gateway",
    "loadtest.bench_triton",
    "loadtest.bench_world",
}
"""Modules outside the composition root that may import it (and that it must never import)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            out.append((node.lineno, base))
            # ``from treeserve_app import commands`` names a module too
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def _edges() -> list[tuple[str, str, str]]:
    """(importing module, imported module, where) for every import between project packages."""
    edges: list[tuple[str, str, str]] = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            src = _module_name(path)
            for line, target in _imports(path):
                top = target.split(".")[0]
                if top in PACKAGES and top != src.split(".")[0]:
                    edges.append((src, target, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def test_every_import_follows_an_allowed_arrow() -> None:
    wrong = [
        f"{where}: {src} imports {target}"
        for src, target, where in _edges()
        if target.split(".")[0] not in ALLOWED[src.split(".")[0]]
        and not (target.split(".")[0] == APP and src in ENTRY_MODULES)
    ]
    assert wrong == [], "\n".join(wrong)


def test_the_composition_root_never_imports_an_entry_module() -> None:
    wrong = [
        f"{where}: {src} imports {target}"
        for src, target, where in _edges()
        if src.split(".")[0] == APP and any(target == m or target.startswith(f"{m}.") for m in ENTRY_MODULES)
    ]
    assert wrong == [], "\n".join(wrong)


def test_the_table_has_no_cycle() -> None:
    def reaches(a: str, b: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in ALLOWED[a])

    assert [p for p in ALLOWED if reaches(p, p)] == []


def test_the_walker_sees_lazy_and_type_checking_imports() -> None:
    """The check would be blind if function-level imports were missed: the CLI has many."""
    targets = {t for src, t, _ in _edges() if src == "treeserve_app.commands.sync"}
    assert "exporter.sync.reconcile" in targets  # imported inside a command function
