"""The package's shape: imports flow one way (core → graph / metrics → models → stages → eval → entry points),
no module is over 400 lines, and the search / index paths never load Ray Train."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raywse"
#: Each package's layer; a module may import only from its own layer or lower ones (stages may use each other).
LAYERS = {
    "core": 0, "graph": 1, "metrics": 1, "models": 2,
    "zoo": 3, "data": 3, "train": 3, "tune": 3, "index": 3, "eval": 4, "serve": 4, "cli": 5, "pipeline": 5,
}  # fmt: skip
#: Only the training stage itself and the entry points (the CLI and the main job) may import Ray Train code.
MAY_IMPORT_TRAIN = {"train", "cli", "pipeline"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def package_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def raywse_imports(path: Path) -> set[str]:
    """The raywse packages a module imports (any import statement, at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("raywse.")}
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size_and_import_direction(path):
    assert len(path.read_text().splitlines()) <= 400
    own = package_of(path)
    for imported in raywse_imports(path):
        assert LAYERS[imported] <= LAYERS[own], f"{own} imports {imported} against the flow"
        assert imported != "train" or own in MAY_IMPORT_TRAIN, f"{own} imports raywse.train"


@pytest.mark.parametrize(
    "module", ["raywse.index.search", "raywse.index.embed", "raywse.eval.report", "raywse.serve.app"]
)
def test_search_index_and_eval_do_not_load_ray_train(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith(('ray.train', 'raywse.train'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
