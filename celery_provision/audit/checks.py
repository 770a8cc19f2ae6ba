"""The checks: decide which rules apply to a configuration, and to which setting.

Nothing here connects to a server: URLs are parsed, referenced files are read when
they exist here. Severities, reasons and fixes live in ``rules.py``; a check only
names the rule, the setting and the fields of the rule's message.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import ssl
import stat
from collections import ChainMap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from celery.app.defaults import _TO_NEW_KEY, DEFAULTS, SETTING_KEYS

from ..runtime import protect as _runtime
from . import certs
from .config import Config, Partial, Unresolved
from .rules import DEFAULT_ROLE, ROLES, Finding, rule

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["ENVELOPE", "ENVELOPE_KEYS", "audit_config", "canonical_name"]

#: The setting celery_provision.runtime reads: the signed envelope's identity and trust.
ENVELOPE = _runtime.CONFIG
#: The keys of ``celery_provision_envelope`` that celery_provision.runtime reads (render.py
#: writes each of them).
ENVELOPE_KEYS = ("signer", "key", "cert", "ca", "store", "max_age", "policy", "role")

_AMQP_SCHEMES = {"amqp", "pyamqp", "librabbitmq"}
_REDIS_SCHEMES = {"redis", "sentinel"}
_CONTENT_TYPES = {
    "application/json": "json",
    "application/x-python-serialize": "pickle",
    "application/x-yaml": "yaml",
    "application/x-msgpack": "msgpack",
    "application/data": "auth",
    _runtime.TASK_CONTENT_TYPE: _runtime.TASK_SERIALIZER,
    _runtime.CONTENT_TYPE: _runtime.SERIALIZER,
    _runtime.RESULT_CONTENT_TYPE: _runtime.RESULT_SERIALIZER,
}
_SAFE_CONTENT = {"json", "msgpack", "auth", _runtime.TASK_SERIALIZER, _runtime.SERIALIZER, _runtime.RESULT_SERIALIZER}
_CERT_REQS_WORDS = {"none": "none", "optional": "optional", "required": "required"}
_CERT_REQS_NAMES = {"CERT_NONE": "none", "CERT_OPTIONAL": "optional", "CERT_REQUIRED": "required"}
_CERT_REQS_INTS = {
    int(ssl.CERT_NONE): "none",
    int(ssl.CERT_OPTIONAL): "optional",
    int(ssl.CERT_REQUIRED): "required",
}
_LOOKALIKES = ("task_create_missing_queues", "worker_hijack_root_logger")
_SECURITY_WORDS = ("ssl", "tls", "auth", "pass", "secur", "cert", "acl", "port", "key")
# Settings only a worker reads, besides the worker_* ones other programs read too: logging
# (beat and events set up logs with them). task_time_limit and friends are not here:
# producers put them in the message.
_WORKER_TASK_SETTINGS = (
    "task_acks_late",
    "task_acks_on_failure_or_timeout",
    "task_reject_on_worker_lost",
    "task_track_started",
)
_SHARED_WORKER_SETTINGS = (
    "worker_hijack_root_logger",
    "worker_log_color",
    "worker_log_datefmt",
    "worker_log_format",
    "worker_redirect_stdouts",
    "worker_redirect_stdouts_level",
    "worker_task_log_datefmt",
    "worker_task_log_format",
)


def audit_config(
    conf: Mapping[str, Any] | Config, *, role: str = DEFAULT_ROLE
) -> list[Finding]:
    """Return the findings for CONF (settings as set; Celery's defaults fill the rest), worst first.

    CONF is a ``Config`` from ``read_config`` or a plain mapping of settings (with
    ``__file__`` naming the source, as ``load_config`` returns). ROLE is the Celery
    role of the host that uses it (one of ``ROLES``): rules apply per role.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    audit = _Audit(conf if isinstance(conf, Config) else _as_config(conf), role)
    audit.run()
    return sorted(audit.findings, key=lambda f: (-f.severity.rank, f.code, f.setting))


def canonical_name(name: str, namespace: str | None = None) -> tuple[str | None, bool]:
    """Celery's name for NAME as written, and whether NAME is an old (deprecated) spelling.

    With a NAMESPACE (``config_from_object(..., namespace='CELERY')``) Celery reads
    ``CELERY_BROKER_URL`` as ``broker_url``; it still reads plain and old names too.
    """
    if namespace:
        prefix = namespace.rstrip("_") + "_"
        if name.startswith(prefix):
            key = name[len(prefix):].lower()
            spelled = (prefix + key).upper() if prefix.isupper() else prefix + key
            if key in SETTING_KEYS and name == spelled:
                return key, False
    if name in SETTING_KEYS:
        return name, False
    if name in _TO_NEW_KEY:
        return _TO_NEW_KEY[name], True
    return None, False


def _as_config(conf: Mapping[str, Any]) -> Config:
    source = conf.get("__file__")
    return Config(
        settings={k: v for k, v in conf.items() if not k.startswith("_")},
        files=[source] if isinstance(source, str) else [],
    )


@dataclass
class _Tls:
    """TLS options of one connection, normalised across kombu/py-amqp/redis-py spellings."""

    setting: str  # the dict's setting name, or the URL setting when options come from the URL
    family: str  # "amqp" or "redis"
    options: Mapping[str, Any]


class _Audit:
    """One pass over a configuration; checks append to ``findings`` through ``flag``."""

    def __init__(self, conf: Config, role: str = DEFAULT_ROLE) -> None:
        self.conf = conf
        self.role = role
        self.set: dict[str, Any] = {}
        self.written: dict[str, str] = {}  # Celery's name -> the name as written
        self.old_names: dict[str, str] = {}
        self.unknown: list[str] = []
        self.unresolved: set[str] = set()  # Celery's names of settings set to something unknown
        self.has_envelope = ENVELOPE in conf.settings  # read by celery_provision.runtime
        self.envelope: Any = conf.settings.get(ENVELOPE)
        for name, value in conf.settings.items():
            if name == ENVELOPE:
                continue
            new, old = canonical_name(name, conf.namespace)
            if new is None:
                self.unknown.append(name)
                continue
            self.written[new] = name
            if old:
                self.old_names[new] = name
            if isinstance(value, Unresolved):
                self.unresolved.add(new)
            else:
                self.set[new] = value
        unknown_values = {name: None for name in self.unresolved}
        self.eff: ChainMap[str, Any] = ChainMap(self.set, unknown_values, DEFAULTS)
        self.findings: list[Finding] = []
        self._literals: set[str] | None = None
        self._sentinel_checked: set[str] = set()
        self._spellings: list[tuple[str, str, bool]] = []  # (setting, style, in a URL)

    def flag(self, key: str, setting: str, /, **fields: Any) -> None:
        """Report rule KEY for SETTING (Celery's name or an unknown name as written).

        A rule that does not apply to this config's role is not reported.
        """
        if self.role not in rule(key).roles:
            return
        shown = self.name(setting)
        finding = rule(key).finding(shown, **fields)
        origin = self.conf.origins.get(shown)
        if origin:
            finding = Finding(
                finding.severity, finding.code, finding.setting,
                f"{finding.reason} ({origin})", finding.fix,
            )
        if finding not in self.findings:
            self.findings.append(finding)

    def name(self, setting: str) -> str:
        """The setting's name as the config spells it (or would, under its namespace)."""
        if setting in self.written:
            return self.written[setting]
        return self.spelled(setting) if setting in SETTING_KEYS else setting

    def spelled(self, setting: str) -> str:
        """How this config would spell a new setting (namespaced when it uses a namespace)."""
        ns = self.conf.namespace
        if not ns:
            return setting
        prefix = ns.rstrip("_") + "_"
        return (prefix + setting).upper() if prefix.isupper() else prefix + setting

    def unknown_value(self, *settings: str) -> bool:
        """Whether any of SETTINGS is set to a value the reader could not work out."""
        return any(s in self.unresolved for s in settings)

    def run(self) -> None:
        self.check_names()
        self.check_serializers()
        self.check_signing()
        self.check_broker()
        self.check_backend()
        self.check_spelling_consistency()
        self.check_setting_passwords()
        self.check_behaviour()
        self.check_role()

    # -- names ------------------------------------------------------------------

    def check_names(self) -> None:
        for name in sorted(self.unknown):
            looks_secure = any(w in name.lower() for w in _SECURITY_WORDS)
            key = "no-effect-setting/security-sounding" if looks_secure else "no-effect-setting"
            self.flag(key, name, name=name)
        for new, old in sorted(self.old_names.items()):
            self.flag("deprecated-setting-name", new, old=old, new=self.spelled(new))
        for setting in _LOOKALIKES:
            if setting in self.set or setting in self.unresolved:
                on = setting == "task_create_missing_queues" and self.set.get(setting) is True
                self.flag(f"not-a-security-control/{setting}" + ("-on" if on else ""), setting)

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
        if not isinstance(value, (list, tuple, set, frozenset)):
            return []
        return [(_content_kind(str(v)), str(v)) for v in value if not isinstance(v, Unresolved)]

    def _serializer_finding(self, setting: str, kind: str, raw: str, *, accepting: bool) -> None:
        if kind == "pickle":
            key = "unsafe-serializer" if accepting else "unsafe-serializer/pickle-produced"
        elif kind == "yaml":
            key = "unsafe-serializer/yaml-" + ("accepted" if accepting else "produced")
        elif kind not in _SAFE_CONTENT:
            key = "unknown-serializer"
        else:
            return
        self.flag(key, setting, raw=raw)

    # -- message signing --------------------------------------------------------

    def signing_known(self) -> bool:
        """Whether task_serializer and accept_content are both known."""
        return not self.unknown_value("task_serializer", "accept_content") and not any(
            isinstance(v, Unresolved) for v in self.eff.get("accept_content") or ()
        )

    def auth_on(self) -> bool:
        """Whether Celery's auth serializer signs every task message this config takes."""
        return self.eff.get("task_serializer") == "auth" and {
            k for k, _ in self._content("accept_content")
        } == {"auth"}

    def control_signed(self) -> bool:
        """Whether control messages are signed: the envelope's ``celery-provision`` serializer
        (whatever the tasks use), or the auth serializer under ``setup_security()``."""
        return self.has_envelope or (self.signing_known() and self.auth_on())

    def check_signing(self) -> None:
        task_ser = self.eff.get("task_serializer")
        accepted = {k for k, _ in self._content("accept_content")}
        if self.has_envelope:
            self.check_envelope(accepted)
        elif not self.signing_known():
            pass
        elif task_ser == "auth" and "auth" in accepted and accepted != {"auth"}:
            others = ", ".join(sorted(accepted - {"auth"}))
            self.flag("unsigned-accepted", "accept_content", others=others)
        elif not self.auth_on():
            setting = "task_serializer" if task_ser != "auth" else "accept_content"
            self.flag("signing-disabled", setting)
        if task_ser == "auth" or "auth" in accepted:
            setting = "task_serializer" if task_ser == "auth" else "accept_content"
            self.flag("auth-serializer-headers-unsigned", setting)
            missing = [
                s
                for s in ("security_key", "security_certificate", "security_cert_store")
                if not self.eff.get(s) and not self.unknown_value(s)
            ]
            if missing:
                self.flag("signing-incomplete", missing[0], missing=", ".join(missing))
        digest = str(self.eff.get("security_digest") or "").lower().replace("-", "")
        if digest in {"md5", "sha1", "sha224"}:
            self.flag("weak-digest", "security_digest", digest=digest)
        if task_ser == "auth" or "auth" in accepted or self.eff.get("security_cert_store"):
            self.check_cert_store()
            self.check_signing_cert()
        if _is_path(self.eff.get("security_key")):
            self.check_key_file("security_key", str(self.eff["security_key"]))

    def check_envelope(self, accepted: set[str]) -> None:
        """The celery-provision envelope: its keys, JSON task messages, its files, its allow-list."""
        env = self.envelope
        if isinstance(env, Unresolved):
            return
        if isinstance(env, Mapping):
            missing = [k for k in ENVELOPE_KEYS if k not in env]
        else:
            missing = list(ENVELOPE_KEYS)
        if missing:
            self.flag("envelope-incomplete", ENVELOPE, missing=", ".join(missing))
        task_ser = self.eff.get("task_serializer")
        wanted = _runtime.TASK_SERIALIZER
        if not self.unknown_value("task_serializer") and _content_kind(str(task_ser)) != wanted:
            self.flag("envelope-serializer", "task_serializer", raw=str(task_ser), wanted=wanted)
        if self.signing_known() and accepted - {wanted}:
            others = ", ".join(sorted(accepted - {wanted}))
            self.flag("envelope-serializer/accepted", "accept_content", others=others, wanted=wanted)
        if not isinstance(env, Mapping):
            return
        if _is_path(env.get("key")):
            self.check_key_file(ENVELOPE, str(env["key"]))
        for key in ("cert", "ca"):
            if _is_path(env.get(key)) and not os.path.exists(str(env[key])):
                self.file_missing(ENVELOPE, str(env[key]))
        store = env.get("store")
        if _is_path(store):
            if not os.path.isdir(str(store)):
                self.file_missing(ENVELOPE, str(store))
            elif not glob.glob(os.path.join(str(store), "*.pem")):
                self.flag("cert-store-empty", ENVELOPE, pattern=os.path.join(str(store), "*.pem"))
        policy = env.get("policy")
        if not _is_path(policy) or env.get("role", "worker") != "worker":
            return
        try:
            with open(str(policy), "rb") as f:
                doc = json.load(f)
        except OSError:
            self.file_missing(ENVELOPE, str(policy))
            return
        except ValueError:
            return  # secure(app) refuses it and says why
        allowed = doc.get("allowed") if isinstance(doc, Mapping) else None
        if isinstance(allowed, Mapping):
            anyone = sorted(
                str(signer) for signer, patterns in allowed.items()
                if isinstance(patterns, (list, tuple)) and "*" in patterns
            )
            if anyone:
                whose = "its" if len(anyone) == 1 else "their"
                self.flag(
                    "envelope-allows-any-task", ENVELOPE, signers=", ".join(anyone), whose=whose
                )

    def check_cert_store(self) -> None:
        pattern = self.eff.get("security_cert_store")
        if not _is_path(pattern):
            return
        pattern = str(pattern)
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*")
        paths = sorted(glob.glob(pattern))
        if not paths:
            if os.path.isdir(os.path.dirname(pattern) or "."):
                self.flag("cert-store-empty", "security_cert_store", pattern=pattern)
            else:
                self.file_missing("security_cert_store", pattern)
            return
        seen: dict[str, str] = {}
        for path in paths:
            cert = certs.load_cert(path)
            if cert is None:
                self.flag("cert-store-invalid", "security_cert_store", path=path)
                continue
            if not certs.is_rsa(cert):
                self.flag("cert-store-non-rsa", "security_cert_store", path=path)
            if certs.expired(cert):
                self.flag(
                    "cert-store-expired", "security_cert_store",
                    path=path, expired=cert.not_valid_after_utc,
                )
            cert_id = certs.celery_cert_id(cert)
            if cert_id in seen:
                self.flag(
                    "cert-store-duplicate", "security_cert_store", path=path, other=seen[cert_id]
                )
            else:
                seen[cert_id] = path

    def check_signing_cert(self) -> None:
        cert_path = self.eff.get("security_certificate")
        if not _is_path(cert_path):
            return
        if not os.path.exists(str(cert_path)):
            self.file_missing("security_certificate", str(cert_path))
            return
        cert = certs.load_cert(str(cert_path))
        problem = None
        if cert is None:
            problem = "is not a PEM certificate"
        elif not certs.is_rsa(cert):
            problem = "has a non-RSA key (Celery signing supports RSA only)"
        elif certs.expired(cert):
            problem = f"expired {cert.not_valid_after_utc:%Y-%m-%d}"
        elif not self._signing_key_matches(cert):
            problem = "does not match security_key"
        if problem:
            self.flag(
                "signing-cert-invalid", "security_certificate", path=cert_path, problem=problem
            )

    def _signing_key_matches(self, cert: x509.Certificate) -> bool:
        key = self.eff.get("security_key")
        if not _is_path(key) or not os.path.exists(str(key)):
            return True  # nothing to compare with here
        return certs.key_matches(str(key), cert, self.eff.get("security_key_password"))

    def check_key_file(self, setting: str, path: str) -> None:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            self.file_missing(setting, path)
            return
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            self.flag("private-key-exposed", setting, path=path, mode=stat.S_IMODE(mode))

    def file_missing(self, setting: str, path: str) -> None:
        self.flag("file-not-found", setting, path=path)

    # -- broker -----------------------------------------------------------------

    def check_broker(self) -> None:
        settings = ("broker_url", "broker_read_url", "broker_write_url")
        urls: list[tuple[str, str]] = []
        for setting in settings:
            urls += [(setting, u) for u in _split_urls(self.eff.get(setting))]
        if not urls:
            if not self.unknown_value(*settings):
                self.flag("broker-url-unset", "broker_url")
            else:
                self.check_tls_alone("broker_use_ssl", backend=False)
            return
        use_ssl = self.eff.get("broker_use_ssl")
        for setting, url in urls:
            self.check_url(setting, url, use_ssl, "broker_use_ssl", backend=False)

    def check_tls_alone(self, ssl_setting: str, *, backend: bool) -> None:
        """TLS options whose URL is not known here: check what the dict itself says."""
        opts = self.eff.get(ssl_setting)
        if not isinstance(opts, Mapping) or not opts:
            return
        redis = backend or any(str(k).startswith("ssl_") for k in opts)
        if redis and opts.get("ssl_cert_reqs") is not None:
            self.note_spelling(ssl_setting, opts["ssl_cert_reqs"], from_url=False, backend=backend)
        elif not redis and opts.get("cert_reqs") is not None:
            self.note_spelling(
                ssl_setting, opts["cert_reqs"], from_url=False, backend=False, amqp=True
            )
        self.check_tls(_Tls(ssl_setting, "redis" if redis else "amqp", opts))

    def check_backend(self) -> None:
        if self.unknown_value("result_backend"):
            self.check_tls_alone("redis_backend_use_ssl", backend=True)
        for url in _split_urls(self.eff.get("result_backend")):
            self.check_url(
                "result_backend",
                url,
                self.eff.get("redis_backend_use_ssl"),
                "redis_backend_use_ssl",
                backend=True,
            )
        if (
            (self.eff.get("result_backend") or self.unknown_value("result_backend"))
            and self.eff.get("result_serializer") not in {_runtime.RESULT_SERIALIZER, "auth"}
            and not self.unknown_value("result_serializer")
        ):
            self.flag("results-unsigned", "result_serializer")

    def check_url(
        self, setting: str, url: str, use_ssl: Any, ssl_setting: str, *, backend: bool
    ) -> None:
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            user, password = parts.username, parts.password
        except ValueError:
            self.flag("unchecked-transport/unparsable", setting)
            return
        shown = _mask(url)
        tls_unknown = self.unknown_value(ssl_setting)
        ssl_name = self.name(ssl_setting)
        if scheme == "rpc" and backend:
            return
        if scheme in _AMQP_SCHEMES or scheme == "amqps":
            if backend:
                self.flag("unchecked-transport/amqp-backend", setting, url=shown)
                return
            self.check_credentials(setting, url, "amqp", user, password)
            if tls_unknown:
                return
            if scheme != "amqps" and not use_ssl:
                self.flag("plaintext-transport", setting, url=shown, ssl_setting=ssl_name)
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
            if scheme == "sentinel":
                self.check_sentinel(setting, backend=backend)
            if tls_unknown:
                return
            dict_ssl = use_ssl if isinstance(use_ssl, Mapping) and use_ssl else None
            url_reqs = query.get("ssl_cert_reqs")
            if scheme != "rediss" and dict_ssl is None:
                key = "plaintext-transport/redis" + ("-use-ssl-true" if use_ssl is True else "")
                self.flag(key, setting, url=shown, ssl_setting=ssl_name)
                return
            if scheme == "rediss" and dict_ssl is None and url_reqs is None:
                key = "backend-tls-options-missing" if backend else "rediss-unverified"
                self.flag(key, setting, url=shown, ssl_setting=ssl_name)
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
            self.flag("unchecked-transport", setting, url=shown, what=what)

    def check_sentinel(self, setting: str, *, backend: bool) -> None:
        """sentinel:// URLs: the Sentinels are reached with `sentinel_kwargs` alone (kombu and
        Celery pass it unchanged; the master's TLS options do not reach them: celery #6455,
        #8016). Without TLS there, the Sentinel login and the primary's address go in clear."""
        options_setting = "result_backend_transport_options" if backend else "broker_transport_options"
        if options_setting in self._sentinel_checked or self.unknown_value(options_setting):
            return
        self._sentinel_checked.add(options_setting)
        options = self.eff.get(options_setting)
        kwargs = options.get("sentinel_kwargs") if isinstance(options, Mapping) else None
        if isinstance(kwargs, (Unresolved, Partial)):
            return
        if not isinstance(kwargs, Mapping) or kwargs.get("ssl") is not True:
            self.flag("sentinel-plaintext", options_setting, url_setting=self.name(setting),
                      options=self.name(options_setting))
            return
        self.check_tls(_Tls(options_setting, "redis", kwargs))

    def check_credentials(
        self, setting: str, url: str, family: str, user: str | None, password: str | None
    ) -> None:
        url_password = password
        sources: tuple[str, ...]
        if setting != "result_backend":  # kombu: broker_user/broker_password if the URL has none
            sources = ("broker_user", "broker_password")
        elif family == "redis":  # Celery's Redis backend: redis_username/redis_password
            sources = ("redis_username", "redis_password")
        else:
            sources = ()
        if sources:
            user = user or self.eff.get(sources[0])
            password = password or self.eff.get(sources[1])
        unknown = self.unknown_value(*sources, "broker_login_method")
        external = str(self.eff.get("broker_login_method") or "").upper() == "EXTERNAL"
        if user == "guest":
            self.flag("guest-credentials", setting)
        elif unknown:
            pass  # a user, password or login method is set to something not known here
        elif family == "amqp" and not external and not (user and password):
            self.flag("missing-credentials", setting)
        elif family == "redis" and not password:
            self.flag("missing-credentials/redis", setting)
        if url_password:
            self.check_literal_password(setting, url_password)

    def check_literal_password(self, setting: str, password: str) -> None:
        candidates = {password, unquote(password)}
        literals = self.literals()
        if literals is not None and any(
            lit in candidates or any(f":{c}@" in lit for c in candidates) for lit in literals
        ):
            self.flag("password-in-config", setting)

    def literals(self) -> set[str] | None:
        """String literals of the config's sources; None (nothing to judge) without a source."""
        if self._literals is None and self.conf.files:
            found: set[str] = set()
            for source in self.conf.files:
                try:
                    tree = ast.parse(Path(source).read_text(encoding="utf-8"))
                except (OSError, SyntaxError, ValueError):
                    continue
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
            if value and isinstance(value, (str, bytes)) and not isinstance(value, Partial):
                self.check_literal_password(
                    setting, value.decode() if isinstance(value, bytes) else str(value)
                )
        for setting in ("broker_transport_options", "result_backend_transport_options"):
            for key, value in _walk(self.set.get(setting)):
                if key.lower() == "password" and isinstance(value, str) and value:
                    self.check_literal_password(setting, value)

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
        if isinstance(reqs_raw, Unresolved):
            level = "unknown"
        else:
            level = _cert_reqs_level(reqs_raw) if reqs_raw is not None else "required"
        if level == "none":
            self.flag("tls-verification-disabled", tls.setting, reqs_key=reqs_key, ca_key=ca_key)
        elif level == "optional":
            self.flag("tls-verification-disabled/optional", tls.setting, reqs_key=reqs_key)
        if level != "none":
            if amqp and context is None and not opts.get("server_hostname"):
                self.flag("hostname-not-checked", tls.setting, setting=self.name(tls.setting))
            check_hostname = opts.get("ssl_check_hostname", True)
            if not amqp and not isinstance(check_hostname, Unresolved) and _falsy(check_hostname):
                self.flag("hostname-not-checked/redis", tls.setting)
            ca = opts.get(ca_key) or (context or {}).get("cafile")
            if not ca:
                self.flag("no-private-ca", tls.setting, ca_key=ca_key)
        if not opts.get(cert_key) or not opts.get(key_key):
            self.flag(
                "no-client-certificate", tls.setting, cert_key=cert_key, key_key=key_key
            )
        for key in (ca_key, cert_key):
            if _is_path(opts.get(key)) and not os.path.exists(str(opts[key])):
                self.file_missing(tls.setting, str(opts[key]))
        if _is_path(opts.get(key_key)):
            self.check_key_file(tls.setting, str(opts[key_key]))

    def note_spelling(
        self, setting: str, value: Any, *, from_url: bool, backend: bool, amqp: bool = False
    ) -> None:
        """Record how ssl_cert_reqs is spelled and flag spellings the consumer rejects."""
        if isinstance(value, (Unresolved, Partial)):
            return
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
            self.flag("cert-reqs-spelling", setting, value=value, where=where)

    def check_spelling_consistency(self) -> None:
        """Dicts should all use the constant, URLs all the lower-case word."""
        for in_url, place in ((False, "dicts"), (True, "URLs")):
            seen = [(s, style) for s, style, u in self._spellings if u is in_url]
            if len({style for _, style in seen}) > 1:
                detail = ", ".join(f"{self.name(s)}: {style}" for s, style in seen)
                self.flag("cert-reqs-inconsistent", seen[0][0], place=place, detail=detail)
        for setting, style, in_url in self._spellings:
            if in_url and style == "NAME":
                self.flag("cert-reqs-inconsistent/name-in-url", setting)

    # -- behaviour --------------------------------------------------------------

    def check_behaviour(self) -> None:
        remote = self.eff.get("worker_enable_remote_control")
        if remote and not self.control_signed() and self.signing_known():
            self.flag("remote-control-unsigned", "worker_enable_remote_control")
        if self.eff.get("worker_pool_restarts") and remote:
            self.flag("pool-restarts-enabled", "worker_pool_restarts")
        if self.eff.get("result_extended") and (
            self.eff.get("result_backend") or self.unknown_value("result_backend")
        ):
            self.flag("result-extended", "result_extended")
        if str(self.eff.get("task_protocol")) == "1":
            self.flag("old-task-protocol", "task_protocol")
        if self.eff.get("broker_connection_retry_on_startup") is None and not self.unknown_value(
            "broker_connection_retry_on_startup"
        ):
            self.flag("retry-on-startup-unset", "broker_connection_retry_on_startup")

    # -- roles ------------------------------------------------------------------

    def check_role(self) -> None:
        """What the config reveals of its host holding another role's powers."""
        if self.role == "worker":
            self.check_remote_control()
            return
        self.check_worker_settings()
        if self.role == "client":
            self.check_producer_declares()
            sent = self.set.get("task_send_sent_event")
            if sent is not None and not _falsy(sent):
                exchange = self.eff.get("event_exchange") or "celeryev"
                self.flag("producer-sends-events", "task_send_sent_event", exchange=exchange)

    def check_remote_control(self) -> None:
        """Remote control on by default, or on by choice, where control messages are signed.

        Unsigned control is ``remote-control-unsigned``'s; here every signer can control.
        """
        setting = "worker_enable_remote_control"
        if self.unknown_value(setting) or not self.control_signed():
            return
        pidbox = f"the control exchange {self.eff.get('control_exchange') or 'celery'}.pidbox"
        if setting not in self.set:
            self.flag("remote-control-on", setting, pidbox=pidbox)
        elif not _falsy(self.set[setting]):
            self.flag("remote-control-on/explicit", setting, pidbox=pidbox)

    def check_worker_settings(self) -> None:
        names = sorted(
            self.name(s)
            for s in (*self.set, *self.unresolved)
            if (s.startswith("worker_") and s not in _SHARED_WORKER_SETTINGS)
            or s in _WORKER_TASK_SETTINGS
        )
        if names:
            them = "it" if len(names) == 1 else "them"
            self.flag(
                "worker-settings-outside-worker", names[0],
                names=", ".join(names), them=them, role=self.role,
            )

    def check_producer_declares(self) -> None:
        """Queues without ``no_declare``: Celery declares each one it publishes to."""
        if self.unknown_value("task_queues", "task_default_queue"):
            return
        queues = self.eff.get("task_queues")
        if not queues:
            default = self.eff.get("task_default_queue")
            what = f"no task_queues (Celery then uses its default queue {default!r})"
            self.flag("producer-declares-queues", "task_queues", what=what)
            return
        if isinstance(queues, Mapping):
            entries = [(str(name), opts) for name, opts in queues.items()]
        elif isinstance(queues, (list, tuple)):
            entries = [(str(getattr(q, "name", q)), q) for q in queues]
        else:
            return
        declaring = [name for name, q in entries if _declares(q)]
        if declaring:
            listed = ", ".join(repr(n) for n in declaring)
            what = f"queue{'s' if len(declaring) > 1 else ''} {listed} without no_declare=True"
            self.flag("producer-declares-queues", "task_queues", what=what)


# --------------------------------------------------------------------------- helpers


def _declares(queue: Any) -> bool:
    """Whether Celery would declare QUEUE (a task_queues entry) on publish; False when unknown.

    A dict entry and a kombu ``Queue`` (imported with ``--import``) say it; a ``Queue(...)``
    read from source is not looked into.
    """
    if isinstance(queue, Mapping):
        flag = queue.get("no_declare")
    elif hasattr(queue, "no_declare") and hasattr(queue, "declare"):
        flag = queue.no_declare
    else:
        return False
    if isinstance(flag, (Unresolved, Partial)):
        return False
    return flag is None or _falsy(flag)


def _is_path(value: Any) -> bool:
    """A file name this audit can look at: a fully known string."""
    return isinstance(value, (str, os.PathLike)) and not isinstance(value, Partial) and bool(value)


def _content_kind(value: str) -> str:
    value = value.strip()
    return _CONTENT_TYPES.get(value.lower(), value.lower())


def _split_urls(value: Any) -> list[str]:
    if not value or isinstance(value, Unresolved):
        return []
    if isinstance(value, (list, tuple)):
        items = [u for u in value if not isinstance(u, Unresolved)]
    else:
        cls = Partial if isinstance(value, Partial) else str
        items = [cls(u) for u in str(value).split(";")]
    stripped = [type(u)(u.strip()) if isinstance(u, str) else str(u).strip() for u in items]
    return [u for u in stripped if u]


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
