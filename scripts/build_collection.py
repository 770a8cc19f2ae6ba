#!/usr/bin/env python3
"""Assemble and build the Ansible collection ``celery_provision.secure`` from the checkout.

The repository keeps one copy of the Ansible content, laid out for a clone
(``roles/<role>/filter_plugins/``, ``playbooks/`` importing siblings by file name,
roles depending on each other by short name). A collection wants another layout, so
this script generates it in a scratch tree instead of the repository carrying both:

- ``roles/``: copied, without ``filter_plugins/`` (roles inside a collection cannot
  carry plugins); every filter the roles call by short name is rewritten to its
  FQCN, and the role dependencies (``meta/main.yml``) too;
- ``plugins/filter/``: the roles' filter plugin files, unchanged;
- ``playbooks/``: copied; ``import_playbook: x.yml`` becomes
  ``import_playbook: celery_provision.secure.x`` and ``role: x`` the role's FQCN, so
  ``ansible-playbook celery_provision.secure.site -i INVENTORY`` runs them;
- ``galaxy.yml`` (``collection/galaxy.yml`` plus the version of the Python package,
  ``celery_provision.__version__``: one version), ``meta/runtime.yml``, ``README.md``,
  ``changelogs/``, ``tests/sanity/`` and ``docs/`` from ``collection/``.

Then ``ansible-galaxy collection build`` writes
``celery_provision-secure-VERSION.tar.gz``. Usage::

    python scripts/build_collection.py [--output-dir dist] [--tree DIR] [--no-build]

``--tree DIR`` keeps the assembled tree (``DIR/ansible_collections/celery_provision/secure``,
the layout ``ansible-test`` needs); ``--no-build`` stops after assembling it.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "celery_provision"
NAME = "secure"
FQ = f"{NAMESPACE}.{NAME}"


def version() -> str:
    """The Python package's version, read without importing it (``__version__ = "..."``)."""
    tree = ast.parse((REPO / "celery_provision" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, str):
                return value
    raise SystemExit("celery_provision/__init__.py: no __version__")


def filter_names(plugin: Path) -> list[str]:
    """The names a filter plugin file's ``FilterModule.filters()`` returns (read, not run)."""
    tree = ast.parse(plugin.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "filters":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return) and isinstance(sub.value, ast.Dict):
                    return [ast.literal_eval(k) for k in sub.value.keys if k is not None]
    raise SystemExit(f"{plugin}: no FilterModule.filters() returning a dict literal")


def _texts(root: Path, suffixes: Iterable[str]) -> Iterable[Path]:
    wanted = tuple(suffixes)
    return (p for p in sorted(root.rglob("*")) if p.is_file() and p.name.endswith(wanted))


def _qualify_filters(text: str, names: Iterable[str]) -> str:
    for name in names:
        text = re.sub(rf"(\|\s*){re.escape(name)}\b", rf"\g<1>{FQ}.{name}", text)
    return text


def _qualify_role_refs(text: str, roles: Iterable[str]) -> str:
    """``role: x`` / ``- x`` under ``roles:``/``dependencies:`` and ``name: x`` of
    include_role/import_role, for the collection's own roles."""
    alt = "|".join(re.escape(r) for r in roles)
    text = re.sub(rf"(^[ \t]*-?[ \t]*role:[ \t]*)({alt})[ \t]*$", rf"\g<1>{FQ}.\g<2>", text, flags=re.M)
    return text


def _qualify_playbook_imports(text: str, playbooks: Iterable[str]) -> str:
    alt = "|".join(re.escape(p) for p in playbooks)
    return re.sub(
        rf"(import_playbook:[ \t]*)(?:\./)?({alt})\.ya?ml[ \t]*$", rf"\g<1>{FQ}.\g<2>", text, flags=re.M
    )


def assemble(tree: Path) -> Path:
    """Write the collection under ``tree/ansible_collections/NS/NAME`` and return that path."""
    dest = tree / "ansible_collections" / NAMESPACE / NAME
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    # Collection-only files: galaxy.yml (plus the version), meta/, README, changelogs, ...
    source = REPO / "collection"
    shutil.copytree(source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    text = (source / "galaxy.yml").read_text()
    if re.search(r"^version:", text, flags=re.M):
        raise SystemExit("collection/galaxy.yml: no version here, it is the Python package's")
    text, n = re.subn(r"^(name:.*\n)", rf"\g<1>version: {version()}\n", text, count=1, flags=re.M)
    if n != 1 or yaml.safe_load(text)["version"] != version():
        raise SystemExit("collection/galaxy.yml: no top-level `name:` line to put the version after")
    (dest / "galaxy.yml").write_text(text)

    # Roles, their filter plugins moved to plugins/filter/.
    roles = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "main.yml").is_file())
    filters: list[str] = []
    plugin_dir = dest / "plugins" / "filter"
    plugin_dir.mkdir(parents=True)
    for role in roles:
        shutil.copytree(
            REPO / "roles" / role,
            dest / "roles" / role,
            ignore=shutil.ignore_patterns("filter_plugins", "__pycache__", "*.pyc"),
        )
        for plugin in sorted((REPO / "roles" / role / "filter_plugins").glob("*.py")):
            target = plugin_dir / plugin.name
            if target.exists():
                raise SystemExit(f"two roles ship a filter plugin file named {plugin.name}")
            shutil.copy2(plugin, target)
            filters += filter_names(plugin)
    for path in _texts(dest / "roles", (".yml", ".yaml", ".j2")):
        text = path.read_text()
        new = _qualify_role_refs(_qualify_filters(text, filters), roles)
        if new != text:
            path.write_text(new)

    # Playbooks, importing each other and calling the roles by FQCN.
    books_src = REPO / "playbooks"
    books = sorted(p.stem for p in books_src.glob("*.yml"))
    (dest / "playbooks").mkdir()
    for stem in books:
        text = (books_src / f"{stem}.yml").read_text()
        text = _qualify_playbook_imports(_qualify_role_refs(_qualify_filters(text, filters), roles), books)
        (dest / "playbooks" / f"{stem}.yml").write_text(text)

    # The repository's licence, when there is one.
    for name in ("LICENSE", "COPYING"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    return dest


def build(collection: Path, output_dir: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    galaxy = shutil.which("ansible-galaxy", path=str(Path(sys.executable).parent)) or shutil.which(
        "ansible-galaxy"
    )
    if not galaxy:
        raise SystemExit("ansible-galaxy not found (pip install ansible-core)")
    subprocess.run(
        [galaxy, "collection", "build", "--force", "--output-path", str(output_dir.resolve()), str(collection)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tarball = output_dir / f"{NAMESPACE}-{NAME}-{version()}.tar.gz"
    if not tarball.is_file():
        raise SystemExit(f"ansible-galaxy did not write {tarball}")
    return tarball


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--output-dir", type=Path, default=REPO / "dist", help="where the tarball goes")
    parser.add_argument("--tree", type=Path, help="assemble here and keep it (default: a temp dir)")
    parser.add_argument("--no-build", action="store_true", help="assemble the tree only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="celery-provision-collection-") as scratch:
        tree = args.tree or Path(scratch)
        collection = assemble(tree)
        if args.no_build:
            print(collection)
            return 0
        print(build(collection, args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
