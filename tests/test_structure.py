"""The package's rooms and the one direction of its arrows (docs/architecture.md).

CLI -> checks, render, export -> pki, credentials -> model -> foundations. A module may
import its own layer and the layers below it, never one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "celery_provision"

#: Top-level module (or subpackage) of celery_provision -> its layer; higher imports lower.
LAYERS = {
    "errors": 0, "files": 0, "layout": 0, "acl": 0, "canary": 0, "runtime": 0,
    "model": 1,
    "pki": 2, "credentials": 2,
    "render": 3, "export": 3, "verify": 3, "audit": 3,
    "cli": 4,
}


def _room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_rooms(path: Path) -> set[str]:
    """The rooms of celery_provision that *path* imports (absolute or relative)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for a top-level module
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            elif node.level == depth + 1:  # relative to the package root
                base = node.module.split(".")[0] if node.module else None
                names = [f"celery_provision.{base}"] if base else [f"celery_provision.{a.name}" for a in node.names]
            else:  # inside its own subpackage
                continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "celery_provision" and len(parts) > 1:
                out.add(parts[1])
    return out - {_room(path)}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_has_a_layer() -> None:
    rooms = {_room(p) for p in MODULES}
    assert rooms - set(LAYERS) == set(), "add new modules to LAYERS (and docs/architecture.md)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    room = _room(path)
    above = {r for r in _imported_rooms(path) if LAYERS.get(r, 0) > LAYERS[room]}
    assert above == set(), f"{room} (layer {LAYERS[room]}) imports {sorted(above)} from above"


def test_render_imports_nothing_from_pki() -> None:
    files = [PACKAGE / "render.py", *(PACKAGE / "render").rglob("*.py")]
    assert all("pki" not in _imported_rooms(p) for p in files if p.exists())


def test_the_controller_layout_is_built_in_the_model_only() -> None:
    builders = [p for p in PACKAGE.rglob("*.py") if p.name != "layout.py"
                and any(s in p.read_text() for s in ("Layout(", "Layout.beside("))]
    assert [p.relative_to(PACKAGE) for p in builders] == [Path("model.py")]
