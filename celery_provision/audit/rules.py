"""The audit's rules as data: code, severity, reason and fix of each, in one table."""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_ROLE", "ROLES", "RULES", "TABLE", "Finding", "Rule", "Severity", "rule"]

#: The Celery roles a config can be audited as (the model's roles: worker, producer, operator).
ROLES = ("worker", "client", "operator")
#: The role assumed when none is given: the one that reads every setting.
DEFAULT_ROLE = "worker"


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


@dataclass(frozen=True)
class Rule:
    """One thing the audit catches. ``reason`` and ``fix`` are ``str.format`` templates.

    Rules that share a code (a milder or differently worded case of the same
    problem) differ by ``variant``; ``key`` ("code" or "code/variant") names one.
    ``roles`` are the roles whose configs the rule applies to (``audit --role``).
    """

    code: str
    severity: Severity
    catches: str
    reason: str
    fix: str
    variant: str = ""
    roles: tuple[str, ...] = ROLES

    @property
    def key(self) -> str:
        """The name checks use for this rule."""
        return f"{self.code}/{self.variant}" if self.variant else self.code

    def finding(self, setting: str, /, **fields: Any) -> Finding:
        """The finding for SETTING, with the templates filled from FIELDS."""
        return Finding(
            self.severity,
            self.code,
            setting,
            _one_line(self.reason.format(**fields)),
            _one_line(self.fix.format(**fields)),
        )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_WORKER, _CLIENT, _NOT_WORKER = ("worker",), ("client",), ("client", "operator")
_CRIT, _HIGH, _MED, _LOW, _INFO = (
    Severity.CRITICAL,
    Severity.HIGH,
    Severity.MEDIUM,
    Severity.LOW,
    Severity.INFO,
)
_SERIALIZER_FIX = (
    "use 'json' for tasks (signed by the celery-provision envelope), 'json' or "
    "'celery-provision-result' for results and 'json' for events"
)
_YAML_FIX = _SERIALIZER_FIX
_ENVELOPE_FIX = (
    "use the celery-provision envelope: the celery_provision_envelope setting (rendered by "
    "celery-provision render) with task_serializer = 'json' and accept_content = ['json'], and "
    "call celery_provision.runtime.secure(app) after app.config_from_object(...)"
)
_PASSWORD_FIX = (
    "read it from a 0600 file at import time (e.g. Path(...).read_text().strip()) instead"
)
_UNKNOWN_SETTING = (
    "{name!r} is not a Celery setting: Celery ignores it, so it protects/changes nothing"
)
_UNKNOWN_SETTING_FIX = (
    "remove it, or use the real setting (see celery.app.defaults / the Celery configuration docs)"
)

TABLE: tuple[Rule, ...] = (
    # -- serialization
    Rule(
        "unsafe-serializer", _CRIT, "pickle or yaml accepted or used for messages/results/events",
        "{raw!r}: unpickling a message runs arbitrary code, so broker/backend write access = "
        "code execution",
        _SERIALIZER_FIX,
    ),
    Rule(
        "unsafe-serializer", _HIGH, "pickle produced (its readers must accept pickle)",
        "{raw!r}: pickle output needs pickle accepted by its readers, which means code execution",
        _SERIALIZER_FIX,
        variant="pickle-produced",
    ),
    Rule(
        "unsafe-serializer", _MED, "yaml accepted",
        "{raw!r}: YAML decoding is a large attack surface (kombu uses safe_load; custom loaders "
        "do not)",
        _YAML_FIX,
        variant="yaml-accepted",
    ),
    Rule(
        "unsafe-serializer", _LOW, "yaml produced",
        "{raw!r}: YAML decoding is a large attack surface (kombu uses safe_load; custom loaders "
        "do not)",
        _YAML_FIX,
        variant="yaml-produced",
    ),
    Rule(
        "unknown-serializer", _MED, "custom serializer whose safety cannot be checked",
        "{raw!r} is a custom serializer: this audit cannot tell whether decoding untrusted input "
        "is safe",
        "use 'json' (with the celery-provision envelope), or review the custom decoder for "
        "code execution",
    ),
    # -- message signing: the celery-provision envelope
    Rule(
        "signing-disabled", _MED,
        "task messages are not signed (neither the celery-provision envelope nor 'auth')",
        "task messages are not signed: anyone who can publish to the broker can run any "
        "registered task",
        _ENVELOPE_FIX,
    ),
    Rule(
        "envelope-incomplete", _MED, "celery_provision_envelope without some of its keys",
        "celery_provision_envelope lacks {missing}: celery_provision.runtime.secure(app) "
        "refuses to start without them",
        "render the configuration again (celery-provision render), or set {missing} as "
        "rendered configurations do",
    ),
    Rule(
        "envelope-serializer", _MED, "the envelope with task messages of another serializer",
        "task_serializer {raw!r}: workers under the celery-provision envelope refuse every task "
        "message that is not {wanted}, so these tasks never run; plain JSON also runs unchecked "
        "where an app forgets secure(app)",
        "set task_serializer = '{wanted}' (JSON that only secure(app) can send or accept)",
    ),
    Rule(
        "envelope-serializer", _LOW, "the envelope with accept_content wider than its serializer",
        "accept_content also takes {others}: the envelope refuses such task messages before "
        "Celery decodes them, so this only states a wider intent than enforced",
        "set accept_content = ['{wanted}']",
        variant="accepted",
    ),
    Rule(
        "envelope-allows-any-task", _INFO, "a signer the worker's allow-list lets call every task",
        "{signers} may call every task registered here ('*'): whoever holds {whose} signing "
        "key can run any of them, with any arguments",
        "narrow celery_provision_allowed_tasks of {signers} to the task names (globs) {whose} "
        "code sends, then render and deploy again",
        roles=_WORKER,
    ),
    # -- message signing: Celery's auth serializer
    Rule(
        "auth-serializer-headers-unsigned", _MED,
        "Celery's auth serializer: the body is signed, the headers are not",
        "Celery's auth serializer signs the body only: task name, id, ETA, expiry travel "
        "unsigned, and nothing refuses replays, so a captured message can be re-labelled as "
        "another task or sent again",
        _ENVELOPE_FIX,
    ),
    Rule(
        "unsigned-accepted", _HIGH, "signing is on but accept_content still takes unsigned content",
        "tasks are signed but workers also accept {others}: a forged unsigned task still runs",
        "set accept_content = ['auth'], or better, use the celery-provision envelope",
    ),
    Rule(
        "signing-incomplete", _MED, "auth serializer without security_key/certificate/cert_store",
        "the auth serializer needs {missing}: setup_security() fails without them",
        "set security_key, security_certificate and security_cert_store to the signing files",
    ),
    Rule(
        "weak-digest", _HIGH, "security_digest is md5/sha1/sha224",
        "{digest} is too weak for message signatures",
        "set security_digest = 'sha256' (the default) or 'sha512'",
    ),
    Rule(
        "cert-store-expired", _HIGH, "an expired certificate in the signing cert store",
        "{path} expired {expired:%Y-%m-%d}: one expired cert makes Celery refuse the store",
        "remove or renew it (celery-provision certs issue), then redeploy the store",
    ),
    Rule(
        "cert-store-duplicate", _HIGH, "two certificates with the same issuer+serial in the store",
        "{path} and {other} have the same issuer and serial: Celery refuses the store",
        "keep one file per certificate; reissue with unique serials",
    ),
    Rule(
        "cert-store-non-rsa", _HIGH, "a non-RSA certificate in the store",
        "{path} has a non-RSA key: Celery signing supports RSA only and refuses the store",
        "issue signing certificates with RSA keys (celery_provision_signing_key_type: rsa3072)",
    ),
    Rule(
        "cert-store-invalid", _HIGH, "a file in the store is not a PEM certificate",
        "{path} is not a PEM certificate: Celery refuses to start with it in the store",
        "keep only signer certificates (PEM) in the store",
    ),
    Rule(
        "cert-store-empty", _HIGH,
        "the signer store (security_cert_store, the envelope's store) holds no certificate",
        "{pattern!r} matches no file: no signer is trusted, every signed message is refused",
        "point it at the signers directory of the PKI (one PEM per worker/client)",
    ),
    Rule(
        "signing-cert-invalid", _HIGH,
        "security_certificate expired, non-RSA or not matching security_key",
        "{path} {problem}: this node's signatures will not verify",
        "use the signing.pem/signing.key pair issued for this host",
    ),
    Rule(
        "private-key-exposed", _HIGH, "a private key file readable or writable by other users",
        "{path} is readable or writable by every local user (mode {mode:04o})",
        "chmod 0600 {path} (0640 with a dedicated group if a service user must read it)",
    ),
    # -- transports
    Rule(
        "broker-url-unset", _HIGH, "no broker_url: Celery falls back to amqp://guest@localhost//",
        "no broker_url: Celery connects to amqp://guest:guest@localhost:5672// unless "
        "CELERY_BROKER_URL is set",
        "set broker_url to the amqps:// or rediss:// URL of the deployment",
    ),
    Rule(
        "plaintext-transport", _CRIT, "broker or backend without TLS",
        "{url} without {ssl_setting}: credentials and task messages cross the network in clear",
        "use amqps:// with {ssl_setting} (ca_certs, certfile, keyfile, cert_reqs, "
        "server_hostname)",
    ),
    Rule(
        "plaintext-transport", _CRIT, "Redis without TLS",
        "{url} without {ssl_setting}: passwords and messages cross the network in clear",
        "use rediss:// with {ssl_setting} (ssl_ca_certs, ssl_certfile, ssl_keyfile, "
        "ssl_cert_reqs)",
        variant="redis",
    ),
    Rule(
        "plaintext-transport", _CRIT, "Redis with use_ssl=True (ignored: Redis needs a dict)",
        "{url} without {ssl_setting} (True is ignored for Redis: it needs a dict): passwords "
        "and messages cross the network in clear",
        "use rediss:// with {ssl_setting} (ssl_ca_certs, ssl_certfile, ssl_keyfile, "
        "ssl_cert_reqs)",
        variant="redis-use-ssl-true",
    ),
    Rule(
        "sentinel-plaintext", _CRIT, "sentinel:// without TLS to the Sentinels",
        "{url_setting} asks the Sentinels without TLS: its sentinel_kwargs has no ssl=True (the master's "
        "TLS options never reach the Sentinels: celery #6455, #8016), so the Sentinel login and "
        "the primary's address cross the network in clear and a forged answer redirects Celery",
        "set sentinel_kwargs in {options} to ssl=True, ssl_cert_reqs=ssl.CERT_REQUIRED, "
        "ssl_ca_certs, ssl_certfile, ssl_keyfile and the Sentinel user's username/password",
    ),
    Rule(
        "rediss-unverified", _CRIT, "rediss:// broker with no TLS options: kombu uses CERT_NONE",
        "{url} without {ssl_setting}: kombu silently falls back to ssl_cert_reqs=CERT_NONE",
        "set {ssl_setting} with ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_ca_certs, ssl_certfile, "
        "ssl_keyfile",
    ),
    Rule(
        "backend-tls-options-missing", _LOW,
        "rediss:// backend with no ssl_cert_reqs: Celery refuses to start",
        "{url} without {ssl_setting} or ssl_cert_reqs: Celery's Redis backend refuses to start",
        "set {ssl_setting} with ssl_cert_reqs=ssl.CERT_REQUIRED and the CA/client files",
    ),
    Rule(
        "unchecked-transport", _INFO, "a transport this audit does not inspect",
        "{url}: {what} is not inspected by this audit",
        "check its TLS and authentication by hand, or use amqps:// / rediss://",
    ),
    Rule(
        "unchecked-transport", _INFO, "a URL that cannot be parsed",
        "the URL cannot be parsed",
        "check the URL",
        variant="unparsable",
    ),
    Rule(
        "unchecked-transport", _INFO, "the amqp result backend (removed in Celery 5)",
        "{url}: the amqp result backend is gone from Celery 5",
        "use rpc:// or rediss://",
        variant="amqp-backend",
    ),
    # -- TLS options
    Rule(
        "tls-verification-disabled", _CRIT, "cert_reqs/ssl_cert_reqs none or optional",
        "{reqs_key}=none: the server certificate is not checked, anyone on the path can "
        "impersonate it",
        "set {reqs_key} = ssl.CERT_REQUIRED with {ca_key} = the deployment CA",
    ),
    Rule(
        "tls-verification-disabled", _LOW, "cert_reqs/ssl_cert_reqs optional",
        "{reqs_key}=optional: Python clients treat it as required, but it states a weaker intent "
        "than enforced",
        "set {reqs_key} = ssl.CERT_REQUIRED",
        variant="optional",
    ),
    Rule(
        "hostname-not-checked", _HIGH,
        "server host name not verified (no server_hostname / ssl_check_hostname off)",
        "no server_hostname: py-amqp then skips the host name check, any cert from the CA "
        "passes as the broker",
        "add server_hostname = the broker's name in its certificate to {setting}",
    ),
    Rule(
        "hostname-not-checked", _HIGH, "ssl_check_hostname off",
        "ssl_check_hostname is off: any certificate from the CA passes as the Redis server",
        "remove ssl_check_hostname (redis-py checks by default) and use the server's name in "
        "the URL",
        variant="redis",
    ),
    Rule(
        "no-private-ca", _MED, "TLS trusts the system CA bundle instead of the deployment CA",
        "no {ca_key}: the server is checked against the system CA bundle, which any public CA "
        "can satisfy",
        "set {ca_key} to the deployment's CA certificate (ca.pem)",
    ),
    Rule(
        "no-client-certificate", _MED, "no certfile/keyfile: mutual TLS not in use",
        "no {cert_key}/{key_key}: this client has no certificate, so the server cannot require "
        "mutual TLS",
        "set {cert_key} and {key_key} to this host's client.pem/client.key",
    ),
    Rule(
        "cert-reqs-spelling", _MED, "an ssl_cert_reqs spelling the consuming library rejects",
        "cert_reqs {value!r} {where} is a spelling the consuming library rejects at connect time",
        "use ssl.CERT_REQUIRED in dicts and ssl_cert_reqs=required in URLs",
    ),
    Rule(
        "cert-reqs-inconsistent", _LOW, "ssl_cert_reqs spelled differently in different places",
        "ssl_cert_reqs is spelled several ways in {place} ({detail})",
        "use ssl.CERT_REQUIRED in every dict and ssl_cert_reqs=required in every URL",
    ),
    Rule(
        "cert-reqs-inconsistent", _LOW, "ssl_cert_reqs=CERT_* in a URL",
        "ssl_cert_reqs=CERT_* in a URL: Celery takes it, redis-py (Flower, exporters) does not",
        "write ssl_cert_reqs=required in URLs",
        variant="name-in-url",
    ),
    # -- credentials
    Rule(
        "guest-credentials", _CRIT, "the RabbitMQ guest account",
        "the RabbitMQ 'guest' account: its password is public and it has full rights on '/'",
        "delete guest on the broker; give each worker/client its own user",
    ),
    Rule(
        "missing-credentials", _HIGH, "no user or no password in a broker/backend URL",
        "no user or no password: kombu then logs in with the default guest credentials",
        "give the URL this host's user and read the password from a 0600 file (or use x509 "
        "EXTERNAL login)",
    ),
    Rule(
        "missing-credentials", _HIGH, "no password in a Redis URL",
        "no password: the connection uses Redis' 'default' user, often 'on nopass ~* +@all'",
        "use a per-host ACL user (redis(s)://USER:PASSWORD@...) with the password read from a "
        "0600 file",
        variant="redis",
    ),
    Rule(
        "password-in-config", _HIGH, "a password written literally in the config",
        "a password is written in the config file",
        _PASSWORD_FIX,
    ),
    # -- files
    Rule(
        "file-not-found", _INFO, "a referenced file does not exist on this machine",
        "{path} does not exist on this machine, so it was not checked",
        "run the audit on the host that runs Celery to check the file",
    ),
    # -- names
    Rule(
        "no-effect-setting", _LOW, "a setting Celery does not know: it has no effect",
        _UNKNOWN_SETTING,
        _UNKNOWN_SETTING_FIX,
    ),
    Rule(
        "no-effect-setting", _MED, "an unknown setting whose name sounds like a protection",
        _UNKNOWN_SETTING,
        _UNKNOWN_SETTING_FIX,
        variant="security-sounding",
    ),
    Rule(
        "not-a-security-control", _INFO, "a setting that looks like a protection but is not one",
        "only stops this app from declaring unknown queues; any broker user with configure "
        "rights still can",
        "restrict queue declaration with RabbitMQ configure permissions / Redis ACL key patterns",
        variant="task_create_missing_queues",
    ),
    Rule(
        "not-a-security-control", _INFO, "task_create_missing_queues=True (the default)",
        "True (the default) lets this app declare any queue a task is routed to; only the "
        "broker's permissions limit what a producer can create",
        "restrict queue declaration with RabbitMQ configure permissions / Redis ACL key patterns",
        variant="task_create_missing_queues-on",
    ),
    Rule(
        "not-a-security-control", _INFO, "worker_hijack_root_logger: a logging choice",
        "only decides who configures logging; it neither redacts nor protects log output",
        "protect logs with file permissions and keep secrets out of task arguments",
        variant="worker_hijack_root_logger",
    ),
    Rule(
        "deprecated-setting-name", _LOW, "an old uppercase setting name (removed in Celery 6)",
        "old setting name {old!r}: Celery 6 drops the uppercase names",
        "rename it to {new!r}",
    ),
    # -- behaviour
    Rule(
        "remote-control-unsigned", _LOW,
        "remote control on without signing: broker write access = worker control",
        "control messages are unsigned: anyone who can publish to the broker can shut down or "
        "reconfigure workers",
        "use the celery-provision envelope (control messages then use its signed "
        "'celery-provision' serializer) or set worker_enable_remote_control = False",
        roles=_WORKER,
    ),
    Rule(
        "pool-restarts-enabled", _LOW, "worker_pool_restarts lets remote control re-import code",
        "the pool_restart control command can re-import modules on every worker",
        "set worker_pool_restarts = False unless you deploy by remote pool restart",
        roles=_WORKER,
    ),
    Rule(
        "result-extended", _LOW, "result_extended stores task args/kwargs in the backend",
        "task name, args and kwargs are copied into the result backend, where every backend "
        "user can read them",
        "set result_extended = False, or keep secrets and personal data out of task arguments",
    ),
    Rule(
        "results-unsigned", _INFO, "results in the backend are not signed",
        "results are stored unsigned: whoever can write to the backend can forge a task's "
        "return value",
        "if callers act on results, sign them: result_serializer = 'celery-provision-result' "
        "and result_accept_content = ['celery-provision-result'] (celery-provision renders "
        "them with celery_provision_signed_results: true)",
    ),
    Rule(
        "old-task-protocol", _LOW, "task_protocol 1",
        "protocol 1 is the legacy message format, kept for Celery 3 compatibility",
        "remove task_protocol (the default, 2)",
    ),
    Rule(
        "retry-on-startup-unset", _LOW, "broker_connection_retry_on_startup left unset",
        "unset: Celery warns at startup and its behaviour changes in Celery 6",
        "set broker_connection_retry_on_startup = True (or False) explicitly",
    ),
    # -- roles: what a config reveals of a host holding another role's powers
    Rule(
        "remote-control-on", _LOW, "a signing worker with remote control left on (the default)",
        "unset, so on (Celery's default): control messages are signed, but every host with a "
        "signing key, each producer too, can rate-limit, revoke or shut down this worker "
        "unless broker permissions keep such hosts off {pidbox}",
        "set worker_enable_remote_control = False unless an operator host needs it (then set "
        "it True and grant {pidbox} to the operators' broker users only)",
        roles=_WORKER,
    ),
    Rule(
        "remote-control-on", _INFO, "a signing worker with remote control turned on",
        "on: only broker permissions on {pidbox} keep producers, which hold signing keys too, "
        "from rate-limiting, revoking or shutting down this worker",
        "grant {pidbox} to the operators' broker users only; set it False if no operator "
        "host needs it",
        variant="explicit",
        roles=_WORKER,
    ),
    Rule(
        "worker-settings-outside-worker", _MED, "worker-only settings in a producer's/operator's config",
        "{names}: only a worker reads {them}, so this {role} config looks like a worker's copy, "
        "and the {role} then likely holds the worker's identity (user, certificates, signing key) "
        "and broker permissions",
        "render the {role}'s own configuration (celery-provision render --host HOST) with its "
        "own broker user and certificates, or remove the worker settings",
        roles=_NOT_WORKER,
    ),
    Rule(
        "producer-declares-queues", _LOW, "a producer that declares the queues it publishes to",
        "{what}: Celery declares a queue when it publishes to it, so this producer must hold "
        "the right to create and bind queues (RabbitMQ configure, Redis write on "
        "_kombu.binding.*)",
        "give each of its task_queues no_declare=True (the workers declare them) and take that "
        "right away from the producer's broker user",
        roles=_CLIENT,
    ),
    Rule(
        "producer-sends-events", _LOW, "a producer that publishes task-sent events",
        "on: this producer publishes task-sent events, with task arguments, to the event "
        "exchange {exchange!r}, so it must hold write permission there",
        "set task_send_sent_event = False unless a monitor needs task-sent events (then grant "
        "the producer write on {exchange!r} only)",
        roles=_CLIENT,
    ),
)

_BY_KEY: Mapping[str, Rule] = MappingProxyType({r.key: r for r in TABLE})
assert len(_BY_KEY) == len(TABLE), "two rules with the same code and variant"

#: code -> its rules, the plain (variant-less) one first.
RULES: Mapping[str, tuple[Rule, ...]] = MappingProxyType(
    {
        code: tuple(sorted((r for r in TABLE if r.code == code), key=lambda r: r.variant != ""))
        for code in dict.fromkeys(r.code for r in TABLE)
    }
)


def rule(key: str) -> Rule:
    """The rule named KEY ("code" or "code/variant")."""
    return _BY_KEY[key]
