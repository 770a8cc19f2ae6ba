"""Load a config module by importing it, as ``app.config_from_object`` does (``--import``)."""

from __future__ import annotations

import importlib.util
import os
import types
import uuid
from pathlib import Path
from typing import Any

from celery.app.defaults import _TO_NEW_KEY, SETTING_KEYS

from ..errors import ProvisionError

__all__ = ["load_config", "one_line", "python_file"]

SETTING_PREFIXES = (
    "CELERY_",
    "CELERYD_",
    "CELERYBEAT_",
    "BROKER_",
    "CASSANDRA_",
    "REDIS_",
    "EMAIL_",
)


def load_config(target: str) -> dict[str, Any]:
    """Load TARGET (module path or ``.py`` file) through ``Celery.config_from_object``.

    Returns the settings the module sets, under the names it uses (old uppercase
    names included), with values read back from ``app.conf``, plus ``__file__``
    so that ``audit_config`` can tell literal passwords from ones read at import.
    """
    module = _import_target(target)
    from celery import Celery  # imported late: keeps ``import celery_provision.audit`` cheap

    app = Celery("celery-provision-audit", set_as_current=False)
    app.config_from_object(module)
    try:
        len(app.conf)  # the configuration is lazy: this is where Celery checks the names
        conf = app.conf  # now the finalized Settings (defaults + aliases)
    except Exception as exc:  # ImproperlyConfigured: mixes old and new setting names
        raise ProvisionError(
            one_line(f"Celery refuses these settings: {exc}"), where=target
        ) from exc
    settings: dict[str, Any] = {}
    for name, value in vars(module).items():
        if not _is_setting_like(name, value):
            continue
        settings[name] = conf.get(name, value)
    module_file = getattr(module, "__file__", None)
    if module_file:
        settings["__file__"] = module_file
    return settings


def python_file(target: str) -> Path | None:
    """The file a target names (checked: it exists and is a .py file), or None when the
    target is a dotted module path."""
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    if not (target.endswith(".py") or any(sep in target for sep in separators)):
        return None
    path = Path(target)
    if not path.is_file():
        raise ProvisionError("no such file", where=target)
    if path.suffix != ".py":
        raise ProvisionError(
            "not a Python file (expected a .py file or a module path)", where=target
        )
    return path


def _import_target(target: str) -> types.ModuleType:
    """Import a config module by dotted path or by file path; errors become ProvisionError."""
    try:
        path = python_file(target)
        if path is not None:
            name = f"_celery_provision_audit_{uuid.uuid4().hex}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ProvisionError("cannot load this file as a Python module", where=target)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        from celery.utils.imports import import_from_cwd

        module = import_from_cwd(target)  # celery is untyped: narrow its Any to the module it is
        if not isinstance(module, types.ModuleType):
            raise ProvisionError("does not name a module", where=target)
        return module
    except ProvisionError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise ProvisionError(
                "no such module (looked in the current directory and sys.path)", where=target
            ) from None
        raise ProvisionError(one_line(f"importing it failed: {exc}"), where=target) from exc
    except SyntaxError as exc:
        raise ProvisionError(
            one_line(f"syntax error at line {exc.lineno}: {exc.msg}"), where=target
        ) from None
    except (Exception, SystemExit) as exc:
        raise ProvisionError(
            one_line(f"importing it raised {type(exc).__name__}: {exc}"), where=target
        ) from exc


def _is_setting_like(name: str, value: Any) -> bool:
    """Tell settings from imports, helpers and dunders in a config module."""
    if name.startswith("_") or isinstance(
        value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)
    ):
        return False
    if name in SETTING_KEYS or name in _TO_NEW_KEY:
        return True
    if name.isupper():  # constants are fine unless they look like old-style settings
        return name.startswith(SETTING_PREFIXES)
    return True


def one_line(text: str) -> str:
    """TEXT with its whitespace runs (newlines too) folded into single spaces."""
    return " ".join(str(text).split())
