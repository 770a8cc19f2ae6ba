"""Read a configuration the way Celery would end up with it, from the source, without running it.

A target is a config module (``celeryconfig.py``), an app module (``Celery(...)``,
``app.conf.X = ...``, ``app.conf.update(...)``, ``config_from_object`` chains) or a
Django settings module (``CELERY_`` names). The reader evaluates literals, names
assigned earlier, ``os.environ``/``os.getenv`` (django-environ and decouple too),
f-strings, concatenation, ``ssl.CERT_*`` and dict/list literals; anything else
becomes an ``Unresolved`` value with one line saying what and where.
"""

from __future__ import annotations

import ast
import operator
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from celery.app.defaults import _TO_NEW_KEY, SETTING_KEYS

from ..errors import ProvisionError
from .checks import canonical_name
from .config import Config, Partial, Unresolved
from .loader import SETTING_PREFIXES, one_line, python_file

__all__ = ["ENV_OVERRIDES", "read_config"]

#: Environment variables Celery itself reads in preference to the setting (celery/app/utils.py).
ENV_OVERRIDES = {
    "broker_url": "CELERY_BROKER_URL",
    "result_backend": "CELERY_RESULT_BACKEND",
    "broker_read_url": "CELERY_BROKER_READ_URL",
    "broker_write_url": "CELERY_BROKER_WRITE_URL",
}
_CELERY_PARAMS = {  # Celery.__init__ arguments that are not settings, or are renamed
    "main", "loader", "amqp", "events", "log", "control", "set_as_current", "tasks",
    "fixups", "task_cls", "autofinalize", "strict_typing", "config_source_silent",
}
_CELERY_RENAMED = {"broker": "broker_url", "backend": "result_backend", "include": "include"}
_OLD_PREFIXES = ("CELERY_", "CELERYD_", "CELERYBEAT_", "BROKER_")
_OPAQUE_MODULES = ("kombu", "celery.schedules", "datetime")  # Queue(...), crontab(...): values
_DJANGO_MARKERS = ("INSTALLED_APPS", "ROOT_URLCONF", "MIDDLEWARE")
_MAX_DEPTH = 8
_MAX_MODULES = 40


def read_config(
    target: str, *, namespace: str | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read TARGET (a ``.py`` file or a module path) without importing it.

    NAMESPACE reads Django-style names (``CELERY_BROKER_URL``) as Celery does with
    ``config_from_object(..., namespace=NAMESPACE)``; ENV (default ``os.environ``)
    gives the environment variables the configuration reads.
    """
    path = _find_target(target)
    reader = _Reader(dict(os.environ if env is None else env), path)
    module = reader.module(path)
    if module.apps:
        app = module.apps[0]
        if len(module.apps) > 1:
            reader.notes.append(
                f"{_rel(path)}: {len(module.apps)} Celery apps; audited the first, "
                f"{app.label} at line {app.line}"
            )
        return reader.assemble(app.layers(reader), app.namespace or namespace)
    conf_layer = reader.settings_of(module, namespace=namespace)
    return reader.assemble([conf_layer], conf_layer.namespace)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class _Unknown:
    """A value the reader cannot know: why, and where the expression is."""

    why: str
    where: str


@dataclass(frozen=True)
class _EnvUnset:
    """``os.environ.get("X")`` with X unset here: None to Python, unknown to an auditor."""

    var: str
    where: str


@dataclass(frozen=True)
class _Opaque:
    """An object whose details do not matter to the audit (a kombu Queue, a crontab)."""

    text: str


@dataclass
class _Namespace:
    """A module, or an imported name the reader knows about (``os``, ``ssl``, ``settings``)."""

    name: str


@dataclass
class _Class:
    """A class body's attributes (``config_from_object(Config)``)."""

    name: str
    attrs: dict[str, Any]


@dataclass
class _Env:
    """A django-environ ``Env()`` or decouple's ``config``: reads environment variables."""

    kind: str


@dataclass
class _Layer:
    """Settings as written, from one place, with origins; later layers override earlier ones."""

    settings: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    lines: dict[str, str] = field(default_factory=dict)  # name -> file:line
    namespace: str | None = None
    django: bool = False


@dataclass
class _App:
    """A ``Celery(...)`` app: its constructor settings, ``app.conf`` changes and config source."""

    label: str
    line: int
    preconf: _Layer = field(default_factory=_Layer)
    source: Any = None  # what config_from_object was given, evaluated
    source_where: str = ""
    source_namespace: str | None = None
    namespace: str | None = None

    def layers(self, reader: _Reader) -> list[_Layer]:
        layers = []
        if self.source is not None:
            layers.append(reader.source_layer(self))
        layers.append(self.preconf)
        return layers


@dataclass
class _AppConf:
    """``app.conf`` of one app."""

    app: _App


@dataclass
class _Module:
    """What running a module's top level would leave: names, their lines and origins, apps."""

    path: Path
    scope: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    referenced: set[str] = field(default_factory=set)
    apps: list[_App] = field(default_factory=list)
    line_files: dict[str, Path] = field(default_factory=dict)  # names from `import *`


class _Stop(Exception):
    """Raised to abandon evaluating an expression; carries the unknown value."""

    def __init__(self, value: _Unknown) -> None:
        super().__init__(value.why)
        self.value = value


# --------------------------------------------------------------------------- the reader


class _Reader:
    """Evaluates modules statement by statement, following config_from_object and imports."""

    def __init__(self, env: dict[str, str], target: Path) -> None:
        self.env = env
        self.target = target
        self.notes: list[str] = []
        self.files: list[str] = []
        self._modules: dict[Path, _Module] = {}
        self._seen: list[str] = []  # origins met while evaluating the current statement
        self._conditions: list[str] = []
        self._item_origins: dict[tuple[int, Any], str] = {}  # origins of dict[key] = value
        self._mod: _Module | None = None
        self._depth = 0

    # -- modules ----------------------------------------------------------------

    def module(self, path: Path) -> _Module:
        """Read the module at PATH (once)."""
        path = path.resolve()
        if path in self._modules:
            return self._modules[path]
        if len(self._modules) >= _MAX_MODULES:
            self.notes.append(f"{_rel(path)}: not read, more than {_MAX_MODULES} modules imported")
            return _Module(path)
        if self._depth > _MAX_DEPTH:
            self.notes.append(f"{_rel(path)}: not read, imports nest too deeply to follow")
            return _Module(path)
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProvisionError(one_line(f"cannot read it: {exc}"), where=str(path)) from None
        try:
            tree = ast.parse(source, filename=str(path))
        except SyntaxError as exc:
            raise ProvisionError(
                one_line(f"syntax error at line {exc.lineno}: {exc.msg}"), where=str(path)
            ) from None
        mod = _Module(path)
        mod.scope["__name__"] = path.stem
        mod.scope["__file__"] = str(path)
        mod.referenced = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        self._modules[path] = mod
        self.files.append(str(path))
        outer, self._mod = self._mod, mod
        self._depth += 1
        try:
            self.run(tree.body, mod.scope)
        finally:
            self._mod = outer
            self._depth -= 1
        return mod

    def where(self, node: ast.AST) -> str:
        assert self._mod is not None
        return f"{_rel(self._mod.path)}:{getattr(node, 'lineno', '?')}"

    # -- statements -------------------------------------------------------------

    def run(self, body: list[ast.stmt], scope: dict[str, Any]) -> None:
        for stmt in body:
            self._seen = list(self._conditions)
            try:
                self.statement(stmt, scope)
            except _Stop:
                pass  # a statement that could not be followed; its values say why
            except (Exception, RecursionError):  # noqa: BLE001, S110 - user code is arbitrary
                pass  # a construct the reader does not model: never a crash

    def statement(self, stmt: ast.stmt, scope: dict[str, Any]) -> None:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            self.imports(stmt, scope)
        elif isinstance(stmt, ast.Assign):
            value = self.value(stmt.value, scope)
            for target in stmt.targets:
                self.assign(target, value, scope, stmt)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self.assign(stmt.target, self.value(stmt.value, scope), scope, stmt)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            current = scope.get(stmt.target.id, _Unknown("not set before", self.where(stmt)))
            value = self.value(ast.BinOp(ast.Constant(None), stmt.op, stmt.value), scope,
                               left=current)
            self.assign(stmt.target, value, scope, stmt)
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            self.value(stmt.value, scope)
        elif isinstance(stmt, ast.If):
            self.branch(stmt, scope)
        elif isinstance(stmt, ast.Try):
            self.run(stmt.body, scope)
            self.run(stmt.orelse, scope)
            self.run(stmt.finalbody, scope)
        elif isinstance(stmt, ast.With):
            self.run(stmt.body, scope)
        elif isinstance(stmt, ast.ClassDef):
            attrs: dict[str, Any] = {}
            self.run(stmt.body, _Child(scope, attrs))
            scope[stmt.name] = _Class(stmt.name, dict(attrs))
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope[stmt.name] = _Opaque(f"function {stmt.name}")
            if _makes_an_app(stmt):
                self.function(stmt, scope)

    def function(self, stmt: ast.FunctionDef | ast.AsyncFunctionDef, scope: dict[str, Any]) -> None:
        """Read a function's body once, its arguments unknown, for apps made inside it."""
        local: dict[str, Any] = {}
        args = stmt.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                local[arg.arg] = _Unknown(f"argument {arg.arg} of {stmt.name}()", self.where(stmt))
        conditions = self._conditions
        self._conditions = [*conditions, f"inside {stmt.name}()"]
        try:
            self.run(stmt.body, _Child(scope, local))
        finally:
            self._conditions = conditions

    def branch(self, stmt: ast.If, scope: dict[str, Any]) -> None:
        try:
            test = self.value(stmt.test, scope, strict=True)
        except _Stop:
            test = None
        else:
            if not _is_unknown(test):
                self.run(stmt.body if test else stmt.orelse, scope)
                return
        # A condition not known here: read both branches, and say so in the origin.
        condition = _source(stmt.test)
        conditions = self._conditions
        try:
            self._conditions = [*conditions, f"if {condition} at {self.where(stmt)}"]
            self.run(stmt.body, scope)
            if stmt.orelse:
                self._conditions = [*conditions, f"if not {condition} at {self.where(stmt)}"]
                self.run(stmt.orelse, scope)
        finally:
            self._conditions = conditions

    def imports(self, stmt: ast.Import | ast.ImportFrom, scope: dict[str, Any]) -> None:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    scope[alias.asname] = self.import_module(alias.name, stmt)
                else:
                    top = alias.name.split(".")[0]
                    scope[top] = self.import_module(top, stmt)
            return
        base = "." * stmt.level + (stmt.module or "")
        for alias in stmt.names:
            if alias.name == "*":
                found = self.find_module(base, stmt)
                mod = self.imported(found) if found is not None else None
                if mod is not None:
                    for name, value in mod.scope.items():
                        if not name.startswith("_"):
                            scope[name] = value
                            self._copy_meta(mod, name)
                continue
            scope[alias.asname or alias.name] = self.import_name(base, alias.name, stmt)

    def _copy_meta(self, mod: _Module, name: str) -> None:
        assert self._mod is not None
        if name in mod.lines:
            self._mod.lines[name] = mod.lines[name]
            self._mod.line_files[name] = mod.line_files.get(name, mod.path)
        if name in mod.origins:
            self._mod.origins[name] = mod.origins[name]

    def imported(self, path: Path) -> _Module | None:
        """Read an imported module; one note instead of an error when it cannot be read."""
        try:
            return self.module(path)
        except ProvisionError as exc:
            self.notes.append(f"imported module not read: {exc}")
            return None

    def import_module(self, name: str, stmt: ast.stmt) -> Any:
        if name in ("os", "ssl", "celery", "environ", "decouple"):
            return _Namespace(name)
        assert self._mod is not None
        return _Lazy(self, self._mod.path, name, None)

    def import_name(self, base: str, name: str, stmt: ast.stmt) -> Any:
        full = f"{base}.{name}" if not base.endswith(".") else base + name
        if base == "ssl" and hasattr(ssl, name):
            return getattr(ssl, name)
        if base in ("os", "os.path", "pathlib", "celery", "decouple", "environ", "django.conf"):
            return _Namespace(full if base != "decouple" or name != "config" else "decouple.config")
        if base.startswith(_OPAQUE_MODULES):
            return _Namespace(full)
        assert self._mod is not None
        return _Lazy(self, self._mod.path, base, name)

    def resolve(self, lazy: _Lazy) -> Any:
        """Read the module an import names, when a value from it is first needed."""
        base, name = lazy.module, lazy.name
        if name is not None:
            full = f"{base}.{name}" if not base.endswith(".") else base + name
            found = self.find_module(full, near=lazy.near)  # from . import celeryconfig
            mod = self.imported(found) if found is not None else None
            if mod is not None:
                return mod
        found = self.find_module(base, near=lazy.near)  # from .base import REDIS_URL
        mod = self.imported(found) if found is not None else None
        if mod is None:
            return _Namespace(base if name is None else f"{base}.{name}")
        if name is None:
            return mod
        if name in mod.scope:
            return mod.scope[name]
        return _Unknown(f"{name} is not set in {_rel(mod.path)}", _rel(lazy.near))

    def find_module(
        self, name: str, node: ast.AST | None = None, *, near: Path | None = None
    ) -> Path | None:
        """The file of module NAME in the target's project (relative to NEAR's package), or None.

        Absolute names are looked up beside NEAR, one level up (where manage.py lives),
        at the root of NEAR's package and in the current directory, as sys.path would
        hold them for the project; installed libraries are never read.
        """
        near = near or (self._mod.path if self._mod else self.target)
        level = len(name) - len(name.lstrip("."))
        parts = [p for p in name.lstrip(".").split(".") if p]
        if level:
            here = near.parent
            if level - 2 >= len(here.parents):
                return None
            bases = [here.parents[level - 2] if level > 1 else here]
        else:
            start = near.parent
            top = start
            while (top / "__init__.py").is_file() and top.parent != top:
                top = top.parent
            bases = list(dict.fromkeys([start, start.parent, top, Path.cwd()]))
        for root in bases:
            stem = root.joinpath(*parts) if parts else root
            for candidate in (stem.with_suffix(".py") if parts else None, stem / "__init__.py"):
                if candidate is not None and candidate.is_file():
                    return candidate
        return None

    def assign(self, target: ast.expr, value: Any, scope: dict[str, Any], stmt: ast.stmt) -> None:
        origin = "; ".join(dict.fromkeys(self._seen))
        if isinstance(target, ast.Name):
            scope[target.id] = value
            if self._mod is not None and not isinstance(scope, _Child):
                self._mod.lines[target.id] = getattr(stmt, "lineno", 0)
                self._mod.line_files.pop(target.id, None)
                if origin:
                    self._mod.origins[target.id] = origin
                else:
                    self._mod.origins.pop(target.id, None)
            return
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self.assign(elt, _Unknown("tuple unpacking", self.where(stmt)), scope, stmt)
            return
        if isinstance(target, ast.Attribute):
            obj = self.value(target.value, scope)
            if isinstance(obj, _AppConf):
                self.set_conf(obj.app, target.attr, value, origin, stmt)
            return
        if isinstance(target, ast.Subscript):
            obj = self.value(target.value, scope)
            key = self.value(target.slice, scope)
            if isinstance(obj, _AppConf) and isinstance(key, str):
                self.set_conf(obj.app, key, value, origin, stmt)
            elif isinstance(obj, dict) and not _is_unknown(key):
                obj[key] = value
                if origin:
                    self._item_origins[(id(obj), key)] = origin

    def set_conf(self, app: _App, name: str, value: Any, origin: str, node: ast.AST) -> None:
        layer = app.preconf
        layer.settings[name] = value
        layer.lines[name] = self.where(node)
        if origin:
            layer.origins[name] = origin
        else:
            layer.origins.pop(name, None)

    # -- expressions --------------------------------------------------------------

    def value(
        self, node: ast.expr, scope: Mapping[str, Any], *, strict: bool = False, left: Any = None
    ) -> Any:
        """Evaluate NODE; an unknown part gives an ``_Unknown`` (raised as _Stop if STRICT)."""
        try:
            return self._eval(node, scope, left)
        except _Stop as stop:
            if strict:
                raise
            return stop.value

    def _unknown(self, node: ast.AST, why: str) -> _Stop:
        return _Stop(_Unknown(why, self.where(node)))

    def _known(self, node: ast.expr, scope: Mapping[str, Any]) -> Any:
        value = self._eval(node, scope, None)
        if isinstance(value, _Unknown):
            raise _Stop(value)
        if isinstance(value, _EnvUnset):
            raise _Stop(_Unknown(_env_unset_why(value.var), value.where))
        return value

    def _eval(self, node: ast.expr, scope: Mapping[str, Any], left: Any) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in scope:
                assert self._mod is not None
                origin = self._mod.origins.get(node.id)
                if origin:
                    self._seen.append(origin)
                value = scope[node.id]
                if isinstance(value, _Lazy):
                    value = value.value()
                return value
            builtin = _BUILTINS.get(node.id)
            if builtin is not None:
                return builtin
            raise self._unknown(node, f"{node.id} is not defined in this module")
        if isinstance(node, ast.JoinedStr):
            return self._fstring(node, scope)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.value(e, scope) for e in node.elts if not isinstance(e, ast.Starred)]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict):
            out: dict[Any, Any] = {}
            for k, v in zip(node.keys, node.values, strict=True):
                if k is None:
                    merged = self.value(v, scope)
                    if isinstance(merged, Mapping):
                        out.update(merged)
                    continue
                out[self._known(k, scope)] = self.value(v, scope)
            return out
        if isinstance(node, ast.Attribute):
            return self._attribute(node, scope)
        if isinstance(node, ast.Subscript):
            return self._subscript(node, scope)
        if isinstance(node, ast.Call):
            return self._call(node, scope)
        if isinstance(node, ast.BinOp):
            return self._binop(node, scope, left)
        if isinstance(node, ast.BoolOp):
            return self._boolop(node, scope)
        if isinstance(node, ast.IfExp):
            try:
                test = self._known(node.test, scope)
            except _Stop:
                self._seen.append(f"if {_source(node.test)} ({self.where(node)})")
                return self.value(node.body, scope)
            return self.value(node.body if test else node.orelse, scope)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            operand = self._known(node.operand, scope)
            return (not operand) if isinstance(node.op, ast.Not) else -operand
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            a, b = self._known(node.left, scope), self._known(node.comparators[0], scope)
            op = _COMPARE.get(type(node.ops[0]))
            if op is not None:
                try:
                    return op(a, b)
                except TypeError:
                    pass
        raise self._unknown(node, f"{_source(node)} is computed at run time")

    def _fstring(self, node: ast.JoinedStr, scope: Mapping[str, Any]) -> str:
        parts: list[str] = []
        partial = False
        for piece in node.values:
            if isinstance(piece, ast.Constant):
                parts.append(str(piece.value))
                continue
            assert isinstance(piece, ast.FormattedValue)
            value = self.value(piece.value, scope)
            if _is_unknown(value) or isinstance(value, Partial):
                partial = True
                parts.append(value if isinstance(value, Partial) else _placeholder(piece.value,
                                                                                   value))
            else:
                parts.append(str(value))
        text = "".join(parts)
        return Partial(text) if partial else text

    def _attribute(self, node: ast.Attribute, scope: Mapping[str, Any]) -> Any:
        obj = self._known(node.value, scope)
        if isinstance(obj, _Namespace):
            full = f"{obj.name}.{node.attr}"
            if obj.name == "ssl" and hasattr(ssl, node.attr):
                return getattr(ssl, node.attr)
            if obj.name == "django.conf.settings":
                raise self._unknown(
                    node, f"{_source(node)} is read from Django settings at run time"
                )
            return _Namespace(full)
        if isinstance(obj, _App):
            return _AppConf(obj) if node.attr == "conf" else _Method(obj, node.attr)
        if isinstance(obj, _AppConf) and node.attr not in ("update", "setdefault"):
            if node.attr in obj.app.preconf.settings:
                return obj.app.preconf.settings[node.attr]
            raise self._unknown(node, f"{_source(node)} is read from the app at run time")
        if isinstance(obj, _Module):
            if node.attr in obj.scope:
                return obj.scope[node.attr]
            raise self._unknown(node, f"{_source(node)} is not set in {_rel(obj.path)}")
        if isinstance(obj, _Class) and node.attr in obj.attrs:
            return obj.attrs[node.attr]
        if isinstance(obj, (str, list, dict, PurePath, _AppConf, _Env)):
            return _Method(obj, node.attr)
        raise self._unknown(node, f"{_source(node)} is computed at run time")

    def _subscript(self, node: ast.Subscript, scope: Mapping[str, Any]) -> Any:
        obj = self._known(node.value, scope)
        key = self._known(node.slice, scope)
        if isinstance(obj, _Namespace) and obj.name == "os.environ" and isinstance(key, str):
            return self.getenv(key, node, default=_NO_DEFAULT)
        if isinstance(obj, _AppConf) and key in obj.app.preconf.settings:
            return obj.app.preconf.settings[key]
        try:
            return obj[key]
        except (KeyError, IndexError, TypeError):
            raise self._unknown(node, f"{_source(node)} is not known here") from None

    def _binop(self, node: ast.BinOp, scope: Mapping[str, Any], left: Any) -> Any:
        a = left if left is not None else self.value(node.left, scope)
        b = self.value(node.right, scope)
        partial = any(_is_unknown(v) or isinstance(v, Partial) for v in (a, b))
        if isinstance(node.op, ast.Add) and partial and any(isinstance(v, str) for v in (a, b)):
            pa = _placeholder(node.left, a) if _is_unknown(a) else str(a)
            pb = _placeholder(node.right, b) if _is_unknown(b) else str(b)
            return Partial(pa + pb)
        for v in (a, b):
            if isinstance(v, _Unknown):
                raise _Stop(v)
            if isinstance(v, _EnvUnset):
                raise _Stop(_Unknown(_env_unset_why(v.var), v.where))
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self._unknown(node, f"{_source(node)} is computed at run time")
        try:
            return op(a, b)
        except Exception:  # noqa: BLE001 - any failure of an operator means "not known here"
            raise self._unknown(node, f"{_source(node)} is computed at run time") from None

    def _boolop(self, node: ast.BoolOp, scope: Mapping[str, Any]) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.value(operand, scope)
            if isinstance(value, _Unknown):
                raise _Stop(value)
            truthy = bool(value) and not isinstance(value, _EnvUnset)
            if isinstance(node.op, ast.Or) and truthy:
                return value
            if isinstance(node.op, ast.And) and not truthy:
                return value
        return value

    # -- calls ----------------------------------------------------------------

    def _call(self, node: ast.Call, scope: Mapping[str, Any]) -> Any:
        func = self._known(node.func, scope)
        name = func.name if isinstance(func, _Namespace) else None
        if name in ("os.environ.get", "os.getenv"):
            key = self._known(node.args[0], scope) if node.args else None
            default = self.value(node.args[1], scope) if len(node.args) > 1 else _NO_DEFAULT
            for kw in node.keywords:
                if kw.arg == "default":
                    default = self.value(kw.value, scope)
            if not isinstance(key, str):
                raise self._unknown(node, "an environment variable named at run time")
            return self.getenv(key, node, default=default, none_default=True)
        if name == "os.environ.setdefault" and len(node.args) == 2:
            key, default = self._known(node.args[0], scope), self._known(node.args[1], scope)
            self.env.setdefault(str(key), str(default))
            return self.env[str(key)]
        if isinstance(func, _Env) or name == "decouple.config" or (
            isinstance(func, _Method) and isinstance(func.obj, _Env)
        ):
            return self._env_call(node, scope, func)
        if name in ("environ.Env", "environ.FileAwareEnv"):
            return _Env("django-environ")
        if name in ("celery.Celery",):
            return self._celery(node, scope)
        if name in ("pathlib.Path", "pathlib.PurePosixPath", "os.path.join"):
            args = [self._known(a, scope) for a in node.args]
            return str(Path(*map(str, args))) if name == "os.path.join" else Path(*args)
        if name and name.startswith(_OPAQUE_MODULES):
            return _Opaque(_source(node))
        if isinstance(func, _Method):
            return self._method(node, scope, func)
        if isinstance(func, _Builtin):
            args = [self._known(a, scope) for a in node.args]
            kwargs = {kw.arg: self._known(kw.value, scope) for kw in node.keywords if kw.arg}
            try:
                return func.fn(*args, **kwargs)
            except Exception:  # noqa: BLE001
                why = f"{_short(node)} fails or is computed at run time"
                raise self._unknown(node, why) from None
        raise self._unknown(node, f"{_short(node)} is called at import time")

    def _env_call(self, node: ast.Call, scope: Mapping[str, Any], func: Any) -> Any:
        key = self._known(node.args[0], scope) if node.args else None
        default: Any = _NO_DEFAULT
        cast: Any = None
        if len(node.args) > 1:
            default = self.value(node.args[1], scope)
        for kw in node.keywords:
            if kw.arg == "default":
                default = self.value(kw.value, scope)
            elif kw.arg == "cast":
                cast = self.value(kw.value, scope)
        if isinstance(func, _Method) and func.name in ("bool",):
            cast = _strtobool
        elif isinstance(func, _Method) and func.name in ("int",):
            cast = int
        if not isinstance(key, str):
            raise self._unknown(node, "an environment variable named at run time")
        value = self.getenv(key, node, default=default)
        if isinstance(value, str) and (cast is bool or cast is _strtobool):
            return _strtobool(value)
        if isinstance(value, str) and cast is int:
            try:
                return int(value)
            except ValueError:
                return value
        return value

    def getenv(self, key: str, node: ast.AST, *, default: Any, none_default: bool = False) -> Any:
        """An environment variable's value here, else the default; records where it came from."""
        if key in self.env:
            self._seen.append(f"from environment variable {key}")
            return self.env[key]
        if default is _NO_DEFAULT:
            return _EnvUnset(key, self.where(node))
        if default is None and none_default:
            return _EnvUnset(key, self.where(node))
        self._seen.append(f"default of environment variable {key}, unset here")
        return default

    def _method(self, node: ast.Call, scope: Mapping[str, Any], method: _Method) -> Any:
        obj, name = method.obj, method.name
        if isinstance(obj, _App):
            return self._app_method(node, scope, obj, name)
        if isinstance(obj, _AppConf):
            if name == "update":
                for arg in node.args:
                    mark = len(self._seen)
                    value = self.value(arg, scope)
                    if isinstance(value, _Class):
                        value = value.attrs
                    if isinstance(value, Mapping):
                        for key, item in value.items():
                            self.set_conf(obj.app, str(key), item, self._since(mark), node)
                    else:
                        self.notes.append(
                            f"could not resolve {_source(node)} at {self.where(node)}: "
                            f"{_why(value, 'not a dict this audit can read')}"
                        )
                for kw in node.keywords:
                    mark = len(self._seen)
                    value = self.value(kw.value, scope)
                    if kw.arg is not None:
                        self.set_conf(obj.app, kw.arg, value, self._since(mark), node)
            return None
        if isinstance(obj, dict) and name == "update":
            for arg in node.args:
                value = self.value(arg, scope)
                if isinstance(value, Mapping):
                    obj.update(value)
            obj.update({kw.arg: self.value(kw.value, scope) for kw in node.keywords if kw.arg})
            return None
        args = [self._known(a, scope) for a in node.args]
        fn = getattr(obj, name, None)
        if isinstance(obj, str) and name in _STR_METHODS and fn is not None:
            return fn(*args)
        if isinstance(obj, PurePath) and name in ("joinpath", "with_suffix", "as_posix") and fn is not None:
            return fn(*args)
        if isinstance(obj, dict) and name == "get":
            return obj.get(*args)
        raise self._unknown(node, f"{_short(node)} is called at import time")

    def _since(self, mark: int) -> str:
        """The origin of a value evaluated since ``len(self._seen) == mark``."""
        return "; ".join(dict.fromkeys([*self._conditions, *self._seen[mark:]]))

    def _app_method(self, node: ast.Call, scope: Mapping[str, Any], app: _App, name: str) -> Any:
        if name == "config_from_object" and node.args:
            app.source, app.source_where = self.value(node.args[0], scope), self.where(node)
            for kw in node.keywords:
                if kw.arg == "namespace":
                    namespace = self.value(kw.value, scope)
                    app.namespace = namespace if isinstance(namespace, str) else app.namespace
        elif name == "config_from_envvar" and node.args:
            var = self.value(node.args[0], scope)
            app.source_where = self.where(node)
            if isinstance(var, str) and self.env.get(var):
                app.source = self.env[var]
            else:
                why = f"environment variable {var} is not set here"
                app.source = _Unknown(why, app.source_where)
        return None

    def _celery(self, node: ast.Call, scope: Mapping[str, Any]) -> _App:
        app = _App(label=_source(node)[:60], line=getattr(node, "lineno", 0))
        for kw in node.keywords:
            mark = len(self._seen)
            if kw.arg is None:
                extra = self.value(kw.value, scope)
                if isinstance(extra, Mapping):
                    for key, value in extra.items():
                        self.set_conf(app, str(key), value, self._since(mark), node)
                continue
            if kw.arg in _CELERY_PARAMS:
                continue
            value = self.value(kw.value, scope)
            origin = self._since(mark)
            if kw.arg == "changes" and isinstance(value, Mapping):
                for key, item in value.items():
                    self.set_conf(app, str(key), item, origin, node)
            elif kw.arg == "config_source":
                app.source, app.source_where = value, self.where(node)
            elif kw.arg == "namespace":
                app.namespace = value if isinstance(value, str) else None
            elif value is not None:
                self.set_conf(app, _CELERY_RENAMED.get(kw.arg, kw.arg), value, origin, node)
        assert self._mod is not None
        self._mod.apps.append(app)
        return app

    # -- config sources -------------------------------------------------------

    def source_layer(self, app: _App) -> _Layer:
        """The settings config_from_object would read for APP."""
        source, where = app.source, app.source_where
        namespace = app.namespace
        if isinstance(source, _Namespace) and source.name == "django.conf.settings":
            source = "django.conf:settings"
        if isinstance(source, _Unknown):
            self.notes.append(f"could not resolve config_from_object at {where}: {source.why}")
            return _Layer(namespace=namespace)
        if isinstance(source, str):
            module_name, _, attr = source.partition(":")
            if module_name == "django.conf" and attr == "settings":
                settings_module = self.env.get("DJANGO_SETTINGS_MODULE")
                if not settings_module:
                    self.notes.append(
                        f"could not resolve config_from_object('django.conf:settings') at {where}: "
                        "DJANGO_SETTINGS_MODULE is not set"
                    )
                    return _Layer(namespace=namespace)
                path = self.find_module(settings_module)
                if path is None:
                    self.notes.append(
                        f"could not resolve config_from_object('django.conf:settings') at {where}: "
                        f"no file for DJANGO_SETTINGS_MODULE={settings_module} "
                        f"near {_rel(self.target)}"
                    )
                    return _Layer(namespace=namespace)
                return self.settings_of(self.module(path), namespace=namespace, django=True)
            path = self.find_module(module_name)
            if path is None:
                self.notes.append(
                    f"could not resolve config_from_object({source!r}) at {where}: "
                    f"no file for module {module_name} near {_rel(self.target)}"
                )
                return _Layer(namespace=namespace)
            mod = self.module(path)
            if attr:
                return self._object_layer(mod.scope.get(attr), where, namespace, mod)
            return self.settings_of(mod, namespace=namespace)
        return self._object_layer(source, where, namespace, None)

    def _object_layer(
        self, obj: Any, where: str, namespace: str | None, mod: _Module | None
    ) -> _Layer:
        if isinstance(obj, _Module):
            return self.settings_of(obj, namespace=namespace)
        if isinstance(obj, _Class):
            obj = obj.attrs
        if isinstance(obj, Mapping):
            layer = _Layer(namespace=namespace)
            for key, value in obj.items():
                if not str(key).startswith("_"):
                    layer.settings[str(key)] = value
                    layer.lines[str(key)] = where
                    if (id(obj), key) in self._item_origins:
                        layer.origins[str(key)] = self._item_origins[(id(obj), key)]
            return layer
        self.notes.append(f"could not resolve config_from_object at {where}: not a module, "
                          "class or dict this audit can read")
        return _Layer(namespace=namespace)

    def settings_of(
        self, mod: _Module, *, namespace: str | None, django: bool = False
    ) -> _Layer:
        """The names of a config or settings module that Celery would read as settings."""
        django = django or any(m in mod.scope for m in _DJANGO_MARKERS)
        if namespace is None and (django or not _has_plain_settings(mod)):
            namespace = _inferred_namespace(mod)
            if namespace:
                self.notes.append(
                    f"{_rel(mod.path)}: read as Django-style settings with namespace "
                    f"{namespace!r} (names like {namespace}_BROKER_URL); --namespace overrides"
                )
        prefix = namespace.rstrip("_") + "_" if namespace else None
        layer = _Layer(namespace=namespace, django=django)
        for name, value in mod.scope.items():
            if name.startswith("_") or isinstance(
                value,
                (_Namespace, _Module, _Class, _App, _AppConf, _Env, _Method, _Builtin, _Lazy),
            ):
                continue
            if isinstance(value, _Opaque) and value.text.startswith("function "):
                continue
            known = canonical_name(name, namespace)[0] is not None
            if not known:
                if name in mod.referenced:
                    continue  # a helper the settings are built from
                if prefix is not None:
                    if not name.startswith(prefix):
                        continue
                elif (django or name.isupper()) and not name.startswith(
                    _OLD_PREFIXES if django else SETTING_PREFIXES
                ):
                    continue
            layer.settings[name] = value
            line_file = mod.line_files.get(name, mod.path)
            layer.lines[name] = f"{_rel(line_file)}:{mod.lines.get(name, '?')}"
            if name in mod.origins:
                layer.origins[name] = mod.origins[name]
        return layer

    # -- the result -------------------------------------------------------------

    def assemble(self, layers: list[_Layer], namespace: str | None) -> Config:
        """Merge LAYERS (later wins) into the Config the audit reads."""
        conf = Config(namespace=namespace, files=list(self.files), notes=self.notes)
        by_key: dict[str, str] = {}  # Celery's name (or the unknown name) -> name as written
        lines: dict[str, str] = {}
        for layer in layers:
            for name, value in layer.settings.items():
                key = canonical_name(name, namespace)[0] or name
                prior = by_key.get(key)
                if prior is not None and prior != name:
                    if _namespaced(prior, namespace) and not _namespaced(name, namespace):
                        continue  # Celery looks up NS_NAME before name, whatever the layer
                    conf.settings.pop(prior, None)
                    conf.origins.pop(prior, None)
                by_key[key] = name
                conf.settings[name] = value
                lines[name] = layer.lines.get(name, "?")
                if layer.origins.get(name):
                    conf.origins[name] = layer.origins[name]
                else:
                    conf.origins.pop(name, None)
        for key, var in ENV_OVERRIDES.items():
            if self.env.get(var):
                name = by_key.get(key, key)
                conf.settings[name] = self.env[var]
                conf.origins[name] = f"from environment variable {var}, which Celery prefers"
                lines[name] = f"environment variable {var}"
        _check_mixing(conf.settings, namespace)
        for name, value in list(conf.settings.items()):
            conf.settings[name] = self._finish(name, value, lines.get(name, "?"), conf)
        return conf

    def _finish(self, path: str, value: Any, where: str, conf: Config) -> Any:
        """Turn internal unknowns into ``Unresolved`` (one note each), recursively."""
        if isinstance(value, (_Unknown, _EnvUnset)):
            why = value.why if isinstance(value, _Unknown) else _env_unset_why(value.var)
            unresolved = Unresolved(path, value.where, why)
            conf.unresolved.append(unresolved)
            return unresolved
        if isinstance(value, Partial):
            unknown = ", ".join(dict.fromkeys(re.findall(r"\$\{[^}]*\}", value))) or "some parts"
            note = Unresolved(f"part of {path}", where, f"{unknown} not known here")
            conf.unresolved.append(note)
            return value
        if isinstance(value, dict):
            return {k: self._finish(f"{path}[{k!r}]", v, where, conf) for k, v in value.items()}
        if isinstance(value, list):
            return [self._finish(f"{path}[{i}]", v, where, conf) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return tuple(self._finish(f"{path}[{i}]", v, where, conf) for i, v in enumerate(value))
        if isinstance(value, PurePath):
            return str(value)
        return value


# --------------------------------------------------------------------------- helpers


def _makes_an_app(stmt: ast.AST) -> bool:
    """Whether a function body calls Celery(...) (the only bodies worth reading)."""
    for node in ast.walk(stmt):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "Celery":
                return True
    return False


class _Lazy:
    """An imported module or name, read only when a value from it is needed."""

    def __init__(self, reader: _Reader, near: Path, module: str, name: str | None) -> None:
        self.reader, self.near, self.module, self.name = reader, near, module, name
        self._value: Any = None
        self._done = False

    def value(self) -> Any:
        if not self._done:
            self._done = True
            self._value = self.reader.resolve(self)
        return self._value


class _Child(dict):  # type: ignore[type-arg]
    """A local scope (a function or class body) that reads through to its module's names."""

    def __init__(self, parent: Mapping[str, Any], local: dict[str, Any]) -> None:
        super().__init__()
        self.parent, self.local = parent, local

    def __contains__(self, key: object) -> bool:
        return key in self.local or key in self.parent

    def __getitem__(self, key: str) -> Any:
        return self.local[key] if key in self.local else self.parent[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.local[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - dict.get skips __getitem__


@dataclass
class _Method:
    """A bound method the reader may evaluate (``str.startswith``, ``app.conf.update``)."""

    obj: Any
    name: str


@dataclass
class _Builtin:
    fn: Callable[..., Any]


_NO_DEFAULT = object()
_BUILTINS = {
    "str": _Builtin(str),
    "int": _Builtin(int),
    "bool": _Builtin(bool),
    "dict": _Builtin(dict),
    "list": _Builtin(list),
    "tuple": _Builtin(tuple),
    "set": _Builtin(set),
}
_STR_METHODS = {
    "startswith", "endswith", "lower", "upper", "strip", "rstrip", "lstrip", "replace",
    "split", "format", "join", "removeprefix", "removesuffix",
}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def _strtobool(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on", "y", "t"}


def _is_unknown(value: Any) -> bool:
    return isinstance(value, (_Unknown, _EnvUnset))


def _env_unset_why(var: str) -> str:
    return f"environment variable {var} is not set here and has no default"


def _placeholder(node: ast.expr, value: Any) -> str:
    if isinstance(value, _EnvUnset):
        return "${" + value.var + "}"
    return "${" + _source(node) + "}"


def _source(node: ast.AST) -> str:
    try:
        return one_line(ast.unparse(node))
    except Exception:  # noqa: BLE001 - unparse of odd nodes
        return type(node).__name__


def _short(node: ast.AST, limit: int = 60) -> str:
    text = _source(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rel(path: Path | str) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _namespaced(name: str, namespace: str | None) -> bool:
    if not namespace:
        return False
    return name.upper().startswith(namespace.rstrip("_").upper() + "_")


def _has_plain_settings(mod: _Module) -> bool:
    """Whether a module sets Celery's own lower-case names (a flat celeryconfig)."""
    return any(name in SETTING_KEYS for name in mod.scope)


def _inferred_namespace(mod: _Module) -> str | None:
    """'CELERY' when the module spells settings as CELERY_<name> that only a namespace reads."""
    for name in mod.scope:
        rest = name.removeprefix("CELERY_")
        if rest != name and name not in _TO_NEW_KEY and rest.lower() in SETTING_KEYS:
            return "CELERY"
    return None


def _check_mixing(settings: Mapping[str, Any], namespace: str | None) -> None:
    """Refuse what Celery refuses: old and new setting names mixed (without a namespace)."""
    from celery.app.utils import detect_settings
    from celery.exceptions import ImproperlyConfigured

    try:
        detect_settings({name: None for name in settings}, {}, prefix=namespace)
    except ImproperlyConfigured as exc:
        raise ProvisionError(one_line(f"Celery refuses these settings: {exc}")) from None


def _find_target(target: str) -> Path:
    path = python_file(target)
    if path is not None:
        return path
    parts = target.split(".")
    for root in (Path.cwd(),):
        stem = root.joinpath(*parts)
        for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
            if candidate.is_file():
                return candidate
    raise ProvisionError(
        "no such module (looked in the current directory; --import uses sys.path)", where=target
    )


def _why(value: Any, fallback: str) -> str:
    if isinstance(value, _Unknown):
        return value.why
    if isinstance(value, _EnvUnset):
        return _env_unset_why(value.var)
    return fallback
