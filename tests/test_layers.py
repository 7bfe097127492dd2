"""The import graph runs downward only (ARCHITECTURE.md): ground < adapters < stages < apps < entry
points. Every import counts, including the ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS: dict[str, int] = {
    "app.contracts": 1,
    "app.config": 1,
    "app.log_format": 2,
    "app.ray_dashboard": 2,
    "app.bus": 2,
    "app.lake": 2,
    "app.metadata": 2,
    "app.tracking": 2,
    "app.orchestration": 2,
    "app.kuberay": 2,
    "app.security": 2,
    "app.ingest": 3,
    "app.preprocess": 3,
    "app.control": 3,
    "app.sim": 3,
    "app.serve": 4,
    "app.train": 4,
    "app.closed_loop": 4,
    "app.rollout_drill": 4,
    "app.lineage": 4,
    "app.observability": 4,
    "app.season": 4,
    "app.cli": 5,
    "app.entrypoints": 5,
    "app.demo": 5,
    "app.demo_summary": 5,
    "jobs": 5,
}


def layer_of(module: str) -> int | None:
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def test_every_product_module_has_a_layer():
    unplaced = [module_name(p) for p in sorted((REPO / "app").rglob("*.py")) if layer_of(module_name(p)) is None and p.name != "__init__.py"]
    assert unplaced == []


def test_no_import_runs_up_the_layers_and_the_library_never_imports_jobs():
    upward = []
    for path in sorted([*(REPO / "app").rglob("*.py"), *(REPO / "jobs").rglob("*.py")]):
        here = layer_of(module_name(path))
        for line, target in imported_modules(path):
            there = layer_of(target)
            if here is None or there is None:
                continue
            if there > here or (target.split(".")[0] == "jobs" and module_name(path).startswith("app")):
                upward.append(f"{path.relative_to(REPO)}:{line} imports {target} (layer {there} > {here})")
    assert upward == []
