"""The import rule between resc's packages (docs/architecture.md): a module imports only
from its own package, from a lower layer, or the version in `resc/__init__.py`. Packages
that share a layer are peers and never import each other. Every import counts, including
those inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "resc"

# Highest first. Packages in one tuple are peers.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("resc.__main__",),
    ("resc.cli",),
    ("resc.commands",),
    ("resc.dev",),
    ("resc.dashboard",),
    ("resc.server",),
    ("resc.ops",),
    ("resc.engine", "resc.worker"),
    ("resc.fetch", "resc.connection"),
    ("resc.config",),
    ("resc.core",),
)


def unit_of(module: str) -> str | None:
    """The layered unit (package or top module) a module of resc belongs to."""
    for layer in LAYERS:
        for unit in layer:
            if module == unit or module.startswith(unit + "."):
                return unit
    return None


def level_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every resc import in the tree."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            # `from resc import x` and `from resc.pkg import mod` name modules too.
            for alias in node.names:
                yield node.lineno, f"{name}.{alias.name}"


def violation(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported`, or None when it may."""
    if not imported.startswith("resc.") and imported != "resc":
        return None
    if imported in ("resc", "resc.__version__"):
        return None
    here, there = unit_of(importer), unit_of(imported)
    if here is None:
        return f"{importer} is in no layer: add its package to LAYERS"
    if there is None:
        return f"{imported} is in no layer: add its package to LAYERS"
    if here == there:
        return None
    if level_of(there) < level_of(here):
        return f"{here} is below {there}"
    if level_of(there) == level_of(here):
        return f"{here} and {there} are peers"
    return None


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        if module == "resc":
            continue
        tree = ast.parse(path.read_text("utf-8"), str(path))
        for line, imported in imported_modules(tree, module, is_package):
            why = violation(module, imported)
            if why is not None:
                found.append(f"{path.relative_to(root.parent)}:{line}: imports {imported}: {why}")
    return found


def test_no_package_imports_a_higher_layer_or_a_peer():
    assert violations() == []


def test_every_package_is_in_a_layer():
    packages = {
        f"resc.{p.parent.name}" for p in ROOT.glob("*/__init__.py") if p.parent.name != "resc"
    }
    modules = {f"resc.{p.stem}" for p in ROOT.glob("*.py") if p.stem != "__init__"}
    layered = {unit for layer in LAYERS for unit in layer}
    assert packages | modules == layered


def test_no_product_module_is_named_like_a_test():
    assert [p for p in ROOT.rglob("*.py") if p.name.startswith("test_")] == []


def test_the_rule_catches_upward_peer_and_unlayered_imports(tmp_path: Path):
    tree = tmp_path / "resc"
    for package in ("core", "config", "engine", "worker"):
        (tree / package).mkdir(parents=True)
        (tree / package / "__init__.py").write_text('"""x"""\n')
    (tree / "__init__.py").write_text('__version__ = "0"\n')
    (tree / "config" / "models.py").write_text(
        "from resc.core import errors\nfrom resc import __version__\n"
        "def f():\n    from resc.engine import daemon\n"
    )
    (tree / "worker" / "store.py").write_text("from resc.engine.store import Store\n")
    (tree / "engine" / "store.py").write_text("from .rules import x\nfrom resc.nowhere import y\n")
    found = violations(tree)
    assert found == [
        "resc/config/models.py:4: imports resc.engine.daemon: resc.config is below resc.engine",
        "resc/engine/store.py:2: imports resc.nowhere.y: resc.nowhere.y is in no layer: "
        "add its package to LAYERS",
        "resc/worker/store.py:1: imports resc.engine.store.Store: "
        "resc.worker and resc.engine are peers",
    ]
