"""Audit a Celery configuration for the security mistakes this toolkit exists to prevent.

``load_config`` loads a config module the way ``app.config_from_object`` does;
``audit_config`` turns the settings into ``Finding`` objects, one per problem,
each with a one-line reason and a one-line fix. Nothing here connects to a
server: URLs are parsed, referenced files are read when they exist here.
"""

from __future__ import annotations

import ast
import datetime
import enum
import functools
import glob
import importlib.util
import json
import os
import ssl
import stat
import types
import uuid
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from celery.app.defaults import _TO_NEW_KEY, DEFAULTS, SETTING_KEYS

from .errors import ProvisionError

__all__ = [
    "RULES",
    "Finding",
    "Severity",
    "audit_config",
    "exit_status",
    "format_table",
    "load_config",
    "to_json",
]


@functools.total_ordering
class Severity(enum.Enum):
    """How bad a finding is; members compare in the order info < low < medium < high < critical."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Position in the ordering (info is 0)."""
        return list(Severity).index(self)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    """One problem in a configuration: what, where, why it matters, how to fix it."""

    severity: Severity
    code: str
    setting: str
    reason: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        """Return the finding as plain strings (the JSON shape)."""
        return {
            "severity": self.severity.value,
            "code": self.code,
            "setting": self.setting,
            "reason": self.reason,
            "fix": self.fix,
        }


# Every rule: code -> (usual severity, what it catches). Severities of single
# findings may be lower when the same code covers a milder variant.
RULES: dict[str, tuple[Severity, str]] = {
    "unsafe-serializer": (
        Severity.CRITICAL,
        "pickle or yaml accepted or used for messages/results/events",
    ),
    "unknown-serializer": (Severity.MEDIUM, "custom serializer whose safety cannot be checked"),
    "signing-disabled": (
        Severity.MEDIUM,
        "task messages are not signed (task_serializer/accept_content not 'auth')",
    ),
    "unsigned-accepted": (
        Severity.HIGH,
        "signing is on but accept_content still takes unsigned content",
    ),
    "signing-incomplete": (
        Severity.MEDIUM,
        "auth serializer without security_key/certificate/cert_store",
    ),
    "weak-digest": (Severity.HIGH, "security_digest is md5/sha1/sha224"),
    "cert-store-expired": (Severity.HIGH, "an expired certificate in the signing cert store"),
    "cert-store-duplicate": (
        Severity.HIGH,
        "two certificates with the same issuer+serial in the store",
    ),
    "cert-store-non-rsa": (Severity.HIGH, "a non-RSA certificate in the store"),
    "cert-store-invalid": (Severity.HIGH, "a file in the store is not a PEM certificate"),
    "cert-store-empty": (Severity.HIGH, "security_cert_store matches no certificate"),
    "signing-cert-invalid": (
        Severity.HIGH,
        "security_certificate expired, non-RSA or not matching security_key",
    ),
    "private-key-exposed": (
        Severity.HIGH,
        "a private key file readable or writable by other users",
    ),
    "broker-url-unset": (
        Severity.HIGH,
        "no broker_url: Celery falls back to amqp://guest@localhost//",
    ),
    "plaintext-transport": (Severity.CRITICAL, "broker or backend without TLS"),
    "rediss-unverified": (
        Severity.CRITICAL,
        "rediss:// broker with no TLS options: kombu uses CERT_NONE",
    ),
    "backend-tls-options-missing": (
        Severity.LOW,
        "rediss:// backend with no ssl_cert_reqs: Celery refuses to start",
    ),
    "tls-verification-disabled": (Severity.CRITICAL, "cert_reqs/ssl_cert_reqs none or optional"),
    "hostname-not-checked": (
        Severity.HIGH,
        "server host name not verified (no server_hostname / ssl_check_hostname off)",
    ),
    "no-private-ca": (
        Severity.MEDIUM,
        "TLS trusts the system CA bundle instead of the deployment CA",
    ),
    "no-client-certificate": (Severity.MEDIUM, "no certfile/keyfile: mutual TLS not in use"),
    "cert-reqs-spelling": (
        Severity.MEDIUM,
        "an ssl_cert_reqs spelling the consuming library rejects",
    ),
    "cert-reqs-inconsistent": (
        Severity.LOW,
        "ssl_cert_reqs spelled differently in different places",
    ),
    "guest-credentials": (Severity.CRITICAL, "the RabbitMQ guest account"),
    "missing-credentials": (Severity.HIGH, "no user or no password in a broker/backend URL"),
    "password-in-config": (Severity.HIGH, "a password written literally in the config"),
    "unchecked-transport": (Severity.INFO, "a transport this audit does not inspect"),
    "file-not-found": (Severity.INFO, "a referenced file does not exist on this machine"),
    "no-effect-setting": (Severity.LOW, "a setting Celery does not know: it has no effect"),
    "not-a-security-control": (
        Severity.INFO,
        "a setting that looks like a protection but is not one",
    ),
    "deprecated-setting-name": (
        Severity.LOW,
        "an old uppercase setting name (removed in Celery 6)",
    ),
    "remote-control-unsigned": (
        Severity.LOW,
        "remote control on without signing: broker write access = worker control",
    ),
    "pool-restarts-enabled": (
        Severity.LOW,
        "worker_pool_restarts lets remote control re-import code",
    ),
    "result-extended": (Severity.LOW, "result_extended stores task args/kwargs in the backend"),
    "results-unsigned": (Severity.INFO, "results in the backend are not signed"),
    "old-task-protocol": (Severity.LOW, "task_protocol 1"),
    "retry-on-startup-unset": (Severity.LOW, "broker_connection_retry_on_startup left unset"),
}

_PASSWORD_FIX = (
    "read it from a 0600 file at import time (e.g. Path(...).read_text().strip()) instead"
)
_SETTING_PREFIXES = (
    "CELERY_",
    "CELERYD_",
    "CELERYBEAT_",
    "BROKER_",
    "CASSANDRA_",
    "REDIS_",
    "EMAIL_",
)
_AMQP_SCHEMES = {"amqp", "pyamqp", "librabbitmq"}
_REDIS_SCHEMES = {"redis", "sentinel"}
_CONTENT_TYPES = {
    "application/json": "json",
    "application/x-python-serialize": "pickle",
    "application/x-yaml": "yaml",
    "application/x-msgpack": "msgpack",
    "application/data": "auth",
}
_SAFE_CONTENT = {"json", "msgpack", "auth"}
_CERT_REQS_WORDS = {"none": "none", "optional": "optional", "required": "required"}
_CERT_REQS_NAMES = {"CERT_NONE": "none", "CERT_OPTIONAL": "optional", "CERT_REQUIRED": "required"}
_CERT_REQS_INTS = {
    int(ssl.CERT_NONE): "none",
    int(ssl.CERT_OPTIONAL): "optional",
    int(ssl.CERT_REQUIRED): "required",
}
_LOOKALIKES = {
    "task_create_missing_queues": (
        "only stops this app from declaring unknown queues; any broker user with configure rights still can",
        "restrict queue declaration with RabbitMQ configure permissions / Redis ACL key patterns",
    ),
    "worker_hijack_root_logger": (
        "only decides who configures logging; it neither redacts nor protects log output",
        "protect logs with file permissions and keep secrets out of task arguments",
    ),
}


# --------------------------------------------------------------------------- loading


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
            _one_line(f"Celery refuses these settings: {exc}"), where=target
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


def _import_target(target: str) -> types.ModuleType:
    """Import a config module by dotted path or by file path; errors become ProvisionError."""
    is_file = (
        target.endswith(".py")
        or os.sep in target
        or (os.altsep is not None and os.altsep in target)
    )
    try:
        if is_file:
            path = Path(target)
            if not path.is_file():
                raise ProvisionError("no such file", where=target)
            if path.suffix != ".py":
                raise ProvisionError(
                    "not a Python file (expected a .py file or a module path)", where=target
                )
            name = f"_celery_provision_audit_{uuid.uuid4().hex}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ProvisionError("cannot load this file as a Python module", where=target)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        from celery.utils.imports import import_from_cwd

        return import_from_cwd(target)
    except ProvisionError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise ProvisionError(
                "no such module (looked in the current directory and sys.path)", where=target
            ) from None
        raise ProvisionError(_one_line(f"importing it failed: {exc}"), where=target) from exc
    except SyntaxError as exc:
        raise ProvisionError(
            _one_line(f"syntax error at line {exc.lineno}: {exc.msg}"), where=target
        ) from None
    except (Exception, SystemExit) as exc:
        raise ProvisionError(
            _one_line(f"importing it raised {type(exc).__name__}: {exc}"), where=target
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
        return name.startswith(_SETTING_PREFIXES)
    return True


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- auditing


def audit_config(conf: Mapping[str, Any]) -> list[Finding]:
    """Return the findings for CONF (settings as set; Celery's defaults fill the rest), worst first."""
    audit = _Audit(conf)
    audit.run()
    return sorted(audit.findings, key=lambda f: (-f.severity.rank, f.code, f.setting))


@dataclass
class _Tls:
    """TLS options of one connection, normalised across kombu/py-amqp/redis-py spellings."""

    setting: str  # the dict's setting name, or the URL setting when options come from the URL
    family: str  # "amqp" or "redis"
    options: Mapping[str, Any]


class _Audit:
    """One pass over a configuration; rules append to ``findings``."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.source_file: str | None = (
            conf.get("__file__") if isinstance(conf.get("__file__"), str) else None
        )
        self.set: dict[str, Any] = {}
        self.old_names: dict[str, str] = {}
        self.unknown: list[str] = []
        for name, value in conf.items():
            if name.startswith("_"):
                continue
            new = name if name in SETTING_KEYS else _TO_NEW_KEY.get(name)
            if new is None:
                self.unknown.append(name)
                continue
            if new != name:
                self.old_names[new] = name
            self.set[new] = value
        self.eff: ChainMap[str, Any] = ChainMap(self.set, DEFAULTS)
        self.findings: list[Finding] = []
        self._literals: set[str] | None = None
        self._spellings: list[tuple[str, str, bool]] = []  # (setting, style, in a URL)

    def add(self, severity: Severity, code: str, setting: str, reason: str, fix: str) -> None:
        assert code in RULES, code
        finding = Finding(severity, code, self.name(setting), _one_line(reason), _one_line(fix))
        if finding not in self.findings:
            self.findings.append(finding)

    def name(self, setting: str) -> str:
        """The setting's name as the config spells it."""
        return self.old_names.get(setting, setting)

    def run(self) -> None:
        self.check_names()
        self.check_serializers()
        self.check_signing()
        self.check_broker()
        self.check_backend()
        self.check_spelling_consistency()
        self.check_setting_passwords()
        self.check_behaviour()

    # -- names ------------------------------------------------------------------

    def check_names(self) -> None:
        for name in sorted(self.unknown):
            looks_secure = any(
                w in name.lower()
                for w in ("ssl", "tls", "auth", "pass", "secur", "cert", "acl", "port", "key")
            )
            self.add(
                Severity.MEDIUM if looks_secure else Severity.LOW,
                "no-effect-setting",
                name,
                f"{name!r} is not a Celery setting: Celery ignores it, so it protects/changes nothing",
                "remove it, or use the real setting (see celery.app.defaults / the Celery configuration docs)",
            )
        for new, old in sorted(self.old_names.items()):
            self.add(
                Severity.LOW,
                "deprecated-setting-name",
                new,
                f"old setting name {old!r}: Celery 6 drops the uppercase names",
                f"rename it to {new!r}",
            )
        for setting, (reason, fix) in _LOOKALIKES.items():
            if setting in self.set:
                self.add(Severity.INFO, "not-a-security-control", setting, reason, fix)

    # -- serialization ----------------------------------------------------------

    def check_serializers(self) -> None:
        lists = ["accept_content"]
        if self.eff.get("result_accept_content") is not None:
            lists.append("result_accept_content")
        for setting in lists:
            for kind, raw in self._content(setting):
                self._serializer_finding(setting, kind, raw, accepting=True)
        for setting in ("task_serializer", "result_serializer", "event_serializer"):
            value = self.eff.get(setting)
            if value is not None:
                kind = _content_kind(str(value))
                self._serializer_finding(setting, kind, str(value), accepting=False)

    def _content(self, setting: str) -> list[tuple[str, str]]:
        value = self.eff.get(setting) or ()
        if isinstance(value, str):
            value = [value]
        return [(_content_kind(str(v)), str(v)) for v in value]

    def _serializer_finding(self, setting: str, kind: str, raw: str, *, accepting: bool) -> None:
        if kind == "pickle":
            self.add(
                Severity.CRITICAL if accepting else Severity.HIGH,
                "unsafe-serializer",
                setting,
                f"{raw!r}: unpickling a message runs arbitrary code, so broker/backend write access = code execution"
                if accepting
                else f"{raw!r}: pickle output needs pickle accepted by its readers, which means code execution",
                "use 'auth' for tasks (signed JSON) and 'json' for results and events",
            )
        elif kind == "yaml":
            self.add(
                Severity.MEDIUM if accepting else Severity.LOW,
                "unsafe-serializer",
                setting,
                f"{raw!r}: YAML decoding is a large attack surface (kombu uses safe_load; custom loaders do not)",
                "use 'auth' for tasks and 'json' for results and events",
            )
        elif kind not in _SAFE_CONTENT:
            self.add(
                Severity.MEDIUM,
                "unknown-serializer",
                setting,
                f"{raw!r} is a custom serializer: this audit cannot tell whether decoding untrusted input is safe",
                "use 'auth'/'json', or review the custom decoder for code execution",
            )

    # -- message signing --------------------------------------------------------

    def signing_on(self) -> bool:
        return self.eff.get("task_serializer") == "auth" and {
            k for k, _ in self._content("accept_content")
        } == {"auth"}

    def check_signing(self) -> None:
        task_ser = self.eff.get("task_serializer")
        accepted = {k for k, _ in self._content("accept_content")}
        if task_ser == "auth" and "auth" in accepted and accepted != {"auth"}:
            others = ", ".join(sorted(accepted - {"auth"}))
            self.add(
                Severity.HIGH,
                "unsigned-accepted",
                "accept_content",
                f"tasks are signed but workers also accept {others}: a forged unsigned task still runs",
                "set accept_content = ['auth']",
            )
        elif task_ser != "auth" or accepted != {"auth"}:
            self.add(
                Severity.MEDIUM,
                "signing-disabled",
                "task_serializer" if task_ser != "auth" else "accept_content",
                "task messages are not signed: anyone who can publish to the broker can run any registered task",
                "set task_serializer = 'auth', accept_content = ['auth'], security_* and call app.setup_security()",
            )
        if task_ser == "auth" or "auth" in accepted:
            missing = [
                s
                for s in ("security_key", "security_certificate", "security_cert_store")
                if not self.eff.get(s)
            ]
            if missing:
                self.add(
                    Severity.MEDIUM,
                    "signing-incomplete",
                    missing[0],
                    f"the auth serializer needs {', '.join(missing)}: setup_security() fails without them",
                    "set security_key, security_certificate and security_cert_store to the signing files",
                )
        digest = str(self.eff.get("security_digest") or "").lower().replace("-", "")
        if digest in {"md5", "sha1", "sha224"}:
            self.add(
                Severity.HIGH,
                "weak-digest",
                "security_digest",
                f"{digest} is too weak for message signatures",
                "set security_digest = 'sha256' (the default) or 'sha512'",
            )
        if task_ser == "auth" or "auth" in accepted or self.eff.get("security_cert_store"):
            self.check_cert_store()
            self.check_signing_cert()
        if self.eff.get("security_key"):
            self.check_key_file("security_key", str(self.eff["security_key"]))

    def check_cert_store(self) -> None:
        pattern = self.eff.get("security_cert_store")
        if not pattern:
            return
        pattern = str(pattern)
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*")
        paths = sorted(glob.glob(pattern))
        if not paths:
            if os.path.isdir(os.path.dirname(pattern) or "."):
                self.add(
                    Severity.HIGH,
                    "cert-store-empty",
                    "security_cert_store",
                    f"{pattern!r} matches no file: no signer is trusted, every signed message is refused",
                    "point it at the signers directory of the PKI (one PEM per worker/client)",
                )
            else:
                self.file_missing("security_cert_store", pattern)
            return
        seen: dict[str, str] = {}
        for path in paths:
            cert = _load_cert(path)
            if cert is None:
                self.add(
                    Severity.HIGH,
                    "cert-store-invalid",
                    "security_cert_store",
                    f"{path} is not a PEM certificate: Celery refuses to start with it in the store",
                    "keep only signer certificates (PEM) in the store",
                )
                continue
            if not _is_rsa(cert):
                self.add(
                    Severity.HIGH,
                    "cert-store-non-rsa",
                    "security_cert_store",
                    f"{path} has a non-RSA key: Celery signing supports RSA only and refuses the store",
                    "issue signing certificates with RSA keys (celery_provision_signing_key_type: rsa3072)",
                )
            if _expired(cert):
                self.add(
                    Severity.HIGH,
                    "cert-store-expired",
                    "security_cert_store",
                    f"{path} expired {cert.not_valid_after_utc:%Y-%m-%d}: one expired cert makes Celery refuse the store",
                    "remove or renew it (celery-provision certs issue), then redeploy the store",
                )
            cert_id = _celery_cert_id(cert)
            if cert_id in seen:
                self.add(
                    Severity.HIGH,
                    "cert-store-duplicate",
                    "security_cert_store",
                    f"{path} and {seen[cert_id]} have the same issuer and serial: Celery refuses the store",
                    "keep one file per certificate; reissue with unique serials",
                )
            else:
                seen[cert_id] = path

    def check_signing_cert(self) -> None:
        cert_path = self.eff.get("security_certificate")
        if not cert_path:
            return
        if not os.path.exists(str(cert_path)):
            self.file_missing("security_certificate", str(cert_path))
            return
        cert = _load_cert(str(cert_path))
        problem = None
        if cert is None:
            problem = "is not a PEM certificate"
        elif not _is_rsa(cert):
            problem = "has a non-RSA key (Celery signing supports RSA only)"
        elif _expired(cert):
            problem = f"expired {cert.not_valid_after_utc:%Y-%m-%d}"
        elif not self._signing_key_matches(cert):
            problem = "does not match security_key"
        if problem:
            self.add(
                Severity.HIGH,
                "signing-cert-invalid",
                "security_certificate",
                f"{cert_path} {problem}: this node's signatures will not verify",
                "use the signing.pem/signing.key pair issued for this host",
            )

    def _signing_key_matches(self, cert: Any) -> bool:
        key = self.eff.get("security_key")
        if not key or not os.path.exists(str(key)):
            return True  # nothing to compare with here
        return _key_matches(str(key), cert, self.eff.get("security_key_password"))

    def check_key_file(self, setting: str, path: str) -> None:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            self.file_missing(setting, path)
            return
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            self.add(
                Severity.HIGH,
                "private-key-exposed",
                setting,
                f"{path} is readable or writable by every local user (mode {stat.S_IMODE(mode):04o})",
                f"chmod 0600 {path} (0640 with a dedicated group if a service user must read it)",
            )

    def file_missing(self, setting: str, path: str) -> None:
        self.add(
            Severity.INFO,
            "file-not-found",
            setting,
            f"{path} does not exist on this machine, so it was not checked",
            "run the audit on the host that runs Celery to check the file",
        )

    # -- broker -----------------------------------------------------------------

    def check_broker(self) -> None:
        urls: list[tuple[str, str]] = []
        for setting in ("broker_url", "broker_read_url", "broker_write_url"):
            urls += [(setting, u) for u in _split_urls(self.eff.get(setting))]
        if not urls:
            self.add(
                Severity.HIGH,
                "broker-url-unset",
                "broker_url",
                "no broker_url: Celery connects to amqp://guest:guest@localhost:5672// unless CELERY_BROKER_URL is set",
                "set broker_url to the amqps:// or rediss:// URL of the deployment",
            )
            return
        use_ssl = self.eff.get("broker_use_ssl")
        for setting, url in urls:
            self.check_url(setting, url, use_ssl, "broker_use_ssl", backend=False)

    def check_backend(self) -> None:
        for url in _split_urls(self.eff.get("result_backend")):
            self.check_url(
                "result_backend",
                url,
                self.eff.get("redis_backend_use_ssl"),
                "redis_backend_use_ssl",
                backend=True,
            )
        if self.eff.get("result_backend") and self.eff.get("result_serializer") != "auth":
            self.add(
                Severity.INFO,
                "results-unsigned",
                "result_serializer",
                "results are stored unsigned: whoever can write to the backend can forge a task's return value",
                "set result_serializer = 'auth' and result_accept_content = ['auth'] if callers act on results",
            )

    def check_url(
        self, setting: str, url: str, use_ssl: Any, ssl_setting: str, *, backend: bool
    ) -> None:
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            user, password = parts.username, parts.password
        except ValueError:
            self.add(
                Severity.INFO,
                "unchecked-transport",
                setting,
                "the URL cannot be parsed",
                "check the URL",
            )
            return
        shown = _mask(url)
        if scheme == "rpc" and backend:
            return
        if scheme in _AMQP_SCHEMES or scheme == "amqps":
            if backend:
                self.add(
                    Severity.INFO,
                    "unchecked-transport",
                    setting,
                    f"{shown}: the amqp result backend is gone from Celery 5",
                    "use rpc:// or rediss://",
                )
                return
            self.check_credentials(setting, url, "amqp", user, password)
            if scheme != "amqps" and not use_ssl:
                self.add(
                    Severity.CRITICAL,
                    "plaintext-transport",
                    setting,
                    f"{shown} without {ssl_setting}: credentials and task messages cross the network in clear",
                    f"use amqps:// with {ssl_setting} (ca_certs, certfile, keyfile, cert_reqs, server_hostname)",
                )
                return
            if isinstance(use_ssl, Mapping) and use_ssl.get("cert_reqs") is not None:
                self.note_spelling(
                    ssl_setting, use_ssl["cert_reqs"], from_url=False, backend=False, amqp=True
                )
            dict_opts = use_ssl if isinstance(use_ssl, Mapping) else {}
            self.check_tls(
                _Tls(ssl_setting if isinstance(use_ssl, Mapping) else setting, "amqp", dict_opts)
            )
        elif scheme in _REDIS_SCHEMES or scheme == "rediss":
            self.check_credentials(setting, url, "redis", user, password)
            dict_ssl = use_ssl if isinstance(use_ssl, Mapping) and use_ssl else None
            url_reqs = query.get("ssl_cert_reqs")
            if scheme != "rediss" and dict_ssl is None:
                note = " (True is ignored for Redis: it needs a dict)" if use_ssl is True else ""
                self.add(
                    Severity.CRITICAL,
                    "plaintext-transport",
                    setting,
                    f"{shown} without {ssl_setting}{note}: passwords and messages cross the network in clear",
                    f"use rediss:// with {ssl_setting} (ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs)",
                )
                return
            if scheme == "rediss" and dict_ssl is None and url_reqs is None:
                if backend:
                    self.add(
                        Severity.LOW,
                        "backend-tls-options-missing",
                        setting,
                        f"{shown} without {ssl_setting} or ssl_cert_reqs: Celery's Redis backend refuses to start",
                        f"set {ssl_setting} with ssl_cert_reqs=ssl.CERT_REQUIRED and the CA/client files",
                    )
                else:
                    self.add(
                        Severity.CRITICAL,
                        "rediss-unverified",
                        setting,
                        f"{shown} without {ssl_setting}: kombu silently falls back to ssl_cert_reqs=CERT_NONE",
                        f"set {ssl_setting} with ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_ca_certs, ssl_certfile, ssl_keyfile",
                    )
                return
            options: dict[str, Any] = dict(query)
            if dict_ssl is not None:
                options.update(dict_ssl)
            if url_reqs is not None:
                self.note_spelling(setting, url_reqs, from_url=True, backend=backend)
            if dict_ssl is not None and dict_ssl.get("ssl_cert_reqs") is not None:
                self.note_spelling(
                    ssl_setting, dict_ssl["ssl_cert_reqs"], from_url=False, backend=backend
                )
            self.check_tls(_Tls(ssl_setting if dict_ssl is not None else setting, "redis", options))
        else:
            what = (
                "a local socket"
                if "socket" in scheme
                else f"the {scheme or 'unknown'}:// transport"
            )
            self.add(
                Severity.INFO,
                "unchecked-transport",
                setting,
                f"{shown}: {what} is not inspected by this audit",
                "check its TLS and authentication by hand, or use amqps:// / rediss://",
            )

    def check_credentials(
        self, setting: str, url: str, family: str, user: str | None, password: str | None
    ) -> None:
        url_password = password
        if (
            setting != "result_backend"
        ):  # kombu takes broker_user/broker_password when the URL has none
            user = user or self.eff.get("broker_user")
            password = password or self.eff.get("broker_password")
        elif family == "redis":  # Celery's Redis backend: redis_username/redis_password
            user = user or self.eff.get("redis_username")
            password = password or self.eff.get("redis_password")
        external = str(self.eff.get("broker_login_method") or "").upper() == "EXTERNAL"
        if user == "guest":
            self.add(
                Severity.CRITICAL,
                "guest-credentials",
                setting,
                "the RabbitMQ 'guest' account: its password is public and it has full rights on '/'",
                "delete guest on the broker; give each worker/client its own user",
            )
        elif family == "amqp" and not external and not (user and password):
            self.add(
                Severity.HIGH,
                "missing-credentials",
                setting,
                "no user or no password: kombu then logs in with the default guest credentials",
                "give the URL this host's user and read the password from a 0600 file (or use x509 EXTERNAL login)",
            )
        elif family == "redis" and not password:
            self.add(
                Severity.HIGH,
                "missing-credentials",
                setting,
                "no password: the connection uses Redis' 'default' user, often 'on nopass ~* +@all'",
                "use a per-host ACL user (redis(s)://USER:PASSWORD@...) with the password read from a 0600 file",
            )
        if url_password:
            self.check_literal_password(setting, url_password)

    def check_literal_password(self, setting: str, password: str) -> None:
        candidates = {password, unquote(password)}
        literals = self.literals()
        if literals is not None and any(
            lit in candidates or any(f":{c}@" in lit for c in candidates) for lit in literals
        ):
            self.add(
                Severity.HIGH,
                "password-in-config",
                setting,
                "a password is written in the config file",
                _PASSWORD_FIX,
            )

    def literals(self) -> set[str] | None:
        """String literals of the config's source; None (nothing to judge) without a source."""
        if self._literals is None and self.source_file:
            try:
                tree = ast.parse(Path(self.source_file).read_text(encoding="utf-8"))
            except (OSError, SyntaxError, ValueError):
                return None
            found: set[str] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
                    found.add(
                        node.value.decode("utf-8", "replace")
                        if isinstance(node.value, bytes)
                        else node.value
                    )
            self._literals = found
        return self._literals

    def check_setting_passwords(self) -> None:
        for setting in ("security_key_password", "redis_password", "broker_password"):
            value = self.set.get(setting)
            if value:
                self.check_literal_password(
                    setting, value.decode() if isinstance(value, bytes) else str(value)
                )
        for setting in ("broker_transport_options", "result_backend_transport_options"):
            for key, value in _walk(self.set.get(setting)):
                if key.lower() == "password" and value:
                    self.check_literal_password(setting, str(value))

    # -- TLS options ------------------------------------------------------------

    def check_tls(self, tls: _Tls) -> None:
        opts, amqp = tls.options, tls.family == "amqp"
        reqs_key, ca_key, cert_key, key_key = (
            ("cert_reqs", "ca_certs", "certfile", "keyfile")
            if amqp
            else ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
        )
        context = opts.get("context") if amqp and isinstance(opts.get("context"), Mapping) else None
        reqs_raw = opts.get(reqs_key)
        level = _cert_reqs_level(reqs_raw) if reqs_raw is not None else "required"
        if level == "none":
            self.add(
                Severity.CRITICAL,
                "tls-verification-disabled",
                tls.setting,
                f"{reqs_key}=none: the server certificate is not checked, anyone on the path can impersonate it",
                f"set {reqs_key} = ssl.CERT_REQUIRED with {ca_key} = the deployment CA",
            )
        elif level == "optional":
            self.add(
                Severity.LOW,
                "tls-verification-disabled",
                tls.setting,
                f"{reqs_key}=optional: Python clients treat it as required, but it states a weaker intent than enforced",
                f"set {reqs_key} = ssl.CERT_REQUIRED",
            )
        if level != "none":
            if amqp and context is None and not opts.get("server_hostname"):
                self.add(
                    Severity.HIGH,
                    "hostname-not-checked",
                    tls.setting,
                    "no server_hostname: py-amqp then skips the host name check, any cert from the CA passes as the broker",
                    f"add server_hostname = the broker's name in its certificate to {tls.setting}",
                )
            if not amqp and _falsy(opts.get("ssl_check_hostname", True)):
                self.add(
                    Severity.HIGH,
                    "hostname-not-checked",
                    tls.setting,
                    "ssl_check_hostname is off: any certificate from the CA passes as the Redis server",
                    "remove ssl_check_hostname (redis-py checks by default) and use the server's name in the URL",
                )
            ca = opts.get(ca_key) or (context or {}).get("cafile")
            if not ca:
                self.add(
                    Severity.MEDIUM,
                    "no-private-ca",
                    tls.setting,
                    f"no {ca_key}: the server is checked against the system CA bundle, which any public CA can satisfy",
                    f"set {ca_key} to the deployment's CA certificate (ca.pem)",
                )
        if not opts.get(cert_key) or not opts.get(key_key):
            self.add(
                Severity.MEDIUM,
                "no-client-certificate",
                tls.setting,
                f"no {cert_key}/{key_key}: this client has no certificate, so the server cannot require mutual TLS",
                f"set {cert_key} and {key_key} to this host's client.pem/client.key",
            )
        for key in (ca_key, cert_key):
            if opts.get(key) and not os.path.exists(str(opts[key])):
                self.file_missing(tls.setting, str(opts[key]))
        if opts.get(key_key):
            self.check_key_file(tls.setting, str(opts[key_key]))

    def note_spelling(
        self, setting: str, value: Any, *, from_url: bool, backend: bool, amqp: bool = False
    ) -> None:
        """Record how ssl_cert_reqs is spelled and flag spellings the consumer rejects."""
        if isinstance(value, int) and not isinstance(value, bool):
            style = "constant"
        elif isinstance(value, str) and value in _CERT_REQS_WORDS:
            style = "word"
        elif isinstance(value, str) and value in _CERT_REQS_NAMES:
            style = "NAME"
        else:
            style = "unknown"
        if (setting, style, from_url) not in self._spellings:
            self._spellings.append((setting, style, from_url))
        # In URLs kombu and Celery's Redis backend take both words and CERT_* names. In
        # dicts py-amqp needs the ssl constant, redis-py takes constants and lower-case
        # words, and only Celery's Redis *backend* also converts the CERT_* names.
        rejected = (
            style == "unknown"
            or (not from_url and amqp and style != "constant")
            or (not from_url and not amqp and style == "NAME" and not backend)
        )
        if rejected:
            where = "in the URL" if from_url else "in the dict"
            self.add(
                Severity.MEDIUM,
                "cert-reqs-spelling",
                setting,
                f"cert_reqs {value!r} {where} is a spelling the consuming library rejects at connect time",
                "use ssl.CERT_REQUIRED in dicts and ssl_cert_reqs=required in URLs",
            )

    def check_spelling_consistency(self) -> None:
        """Dicts should all use the constant, URLs all the lower-case word."""
        for in_url, place in ((False, "dicts"), (True, "URLs")):
            seen = [(s, style) for s, style, u in self._spellings if u is in_url]
            if len({style for _, style in seen}) > 1:
                detail = ", ".join(f"{s}: {style}" for s, style in seen)
                self.add(
                    Severity.LOW,
                    "cert-reqs-inconsistent",
                    seen[0][0],
                    f"ssl_cert_reqs is spelled several ways in {place} ({detail})",
                    "use ssl.CERT_REQUIRED in every dict and ssl_cert_reqs=required in every URL",
                )
        for setting, style, in_url in self._spellings:
            if in_url and style == "NAME":
                self.add(
                    Severity.LOW,
                    "cert-reqs-inconsistent",
                    setting,
                    "ssl_cert_reqs=CERT_* in a URL: Celery takes it, redis-py (Flower, exporters) does not",
                    "write ssl_cert_reqs=required in URLs",
                )

    # -- behaviour --------------------------------------------------------------

    def check_behaviour(self) -> None:
        signed = self.signing_on()
        if self.eff.get("worker_enable_remote_control") and not signed:
            self.add(
                Severity.LOW,
                "remote-control-unsigned",
                "worker_enable_remote_control",
                "control messages are unsigned: anyone who can publish to the broker can shut down or reconfigure workers",
                "enable signing (control messages then use the auth serializer) or set worker_enable_remote_control = False",
            )
        if self.eff.get("worker_pool_restarts") and self.eff.get("worker_enable_remote_control"):
            self.add(
                Severity.LOW,
                "pool-restarts-enabled",
                "worker_pool_restarts",
                "the pool_restart control command can re-import modules on every worker",
                "set worker_pool_restarts = False unless you deploy by remote pool restart",
            )
        if self.eff.get("result_extended") and self.eff.get("result_backend"):
            self.add(
                Severity.LOW,
                "result-extended",
                "result_extended",
                "task name, args and kwargs are copied into the result backend, where every backend user can read them",
                "set result_extended = False, or keep secrets and personal data out of task arguments",
            )
        if str(self.eff.get("task_protocol")) == "1":
            self.add(
                Severity.LOW,
                "old-task-protocol",
                "task_protocol",
                "protocol 1 is the legacy message format, kept for Celery 3 compatibility",
                "remove task_protocol (the default, 2)",
            )
        if self.eff.get("broker_connection_retry_on_startup") is None:
            self.add(
                Severity.LOW,
                "retry-on-startup-unset",
                "broker_connection_retry_on_startup",
                "unset: Celery warns at startup and its behaviour changes in Celery 6",
                "set broker_connection_retry_on_startup = True (or False) explicitly",
            )


# --------------------------------------------------------------------------- helpers


def _content_kind(value: str) -> str:
    value = value.strip()
    return _CONTENT_TYPES.get(value.lower(), value.lower())


def _split_urls(value: Any) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(";")
    return [str(u).strip() for u in items if str(u).strip()]


def _mask(url: str) -> str:
    """Show a URL without its password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _cert_reqs_level(value: Any) -> str:
    if isinstance(value, bool):
        return "required" if value else "none"
    if isinstance(value, int):
        return _CERT_REQS_INTS.get(int(value), "unknown")
    text = str(value)
    return (
        _CERT_REQS_WORDS.get(text)
        or _CERT_REQS_NAMES.get(text)
        or _CERT_REQS_NAMES.get(text.removeprefix("ssl."))
        or "unknown"
    )


def _falsy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"0", "false", "no", "off", "f", "n"}
    return not value


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key), item
            yield from _walk(item)


def _load_cert(path: str) -> Any:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


def _is_rsa(cert: Any) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(cert.public_key(), rsa.RSAPublicKey)


def _expired(cert: Any) -> bool:
    return datetime.datetime.now(datetime.UTC) >= cert.not_valid_after_utc


def _celery_cert_id(cert: Any) -> str:
    """The id Celery's CertStore keys certificates by (issuer values + serial)."""
    return f"{' '.join(str(a.value) for a in cert.issuer)} {cert.serial_number}"


def _key_matches(key_path: str, cert: Any, password: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    try:
        pw = password.encode() if isinstance(password, str) else password
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=pw or None)
    except (OSError, ValueError, TypeError):
        return True  # unreadable or encrypted without a password here: not this rule's business
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


# --------------------------------------------------------------------------- output


def format_table(findings: Iterable[Finding]) -> str:
    """Render findings as a plain-text table, worst first, the fix under each reason."""
    rows = sorted(findings, key=lambda f: (-f.severity.rank, f.code, f.setting))
    if not rows:
        return "no findings"
    w_sev = max(len("SEVERITY"), *(len(f.severity.value) for f in rows))
    w_code = max(len("CODE"), *(len(f.code) for f in rows))
    w_set = max(len("SETTING"), *(len(f.setting) for f in rows))
    indent = " " * (w_sev + w_code + w_set + 6)
    lines = [f"{'SEVERITY':<{w_sev}}  {'CODE':<{w_code}}  {'SETTING':<{w_set}}  REASON / FIX"]
    for f in rows:
        lines.append(
            f"{f.severity.value:<{w_sev}}  {f.code:<{w_code}}  {f.setting:<{w_set}}  {f.reason}"
        )
        lines.append(f"{indent}fix: {f.fix}")
    counts = {s: sum(1 for f in rows if f.severity is s) for s in reversed(Severity)}
    lines.append("")
    lines.append(", ".join(f"{n} {s.value}" for s, n in counts.items() if n))
    return "\n".join(lines)


def to_json(findings: Iterable[Finding]) -> str:
    """Render findings as a JSON array of {severity, code, setting, reason, fix}, worst first."""
    rows = sorted(findings, key=lambda f: (-f.severity.rank, f.code, f.setting))
    return json.dumps([f.as_dict() for f in rows], indent=2)


def exit_status(findings: Iterable[Finding], fail_on: Severity) -> int:
    """Return 1 when any finding is at or above FAIL_ON, else 0."""
    return 1 if any(f.severity >= fail_on for f in findings) else 0
