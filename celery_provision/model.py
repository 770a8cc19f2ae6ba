"""The deployment model: the Ansible inventory read through ansible-core, typed and validated."""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .errors import ProvisionError
from .layout import AppFiles, HostLayout, Layout, inventory_dir

__all__ = [
    "ROLE_GROUPS",
    "CELERY_ROLES",
    "KEY_TYPES",
    "PLAINTEXT_PORTS",
    "Host",
    "Settings",
    "Credential",
    "Endpoint",
    "Replication",
    "Deployment",
    "load",
    "roles_dir",
    "is_dns_name",
    "is_ip",
]

#: The inventory groups the toolkit gives meaning to.
ROLE_GROUPS = ("rabbitmq", "redis", "celery_workers", "celery_clients", "celery_operators")
#: The Celery roles, by group: each worker, producer or operator host is in exactly one.
CELERY_ROLES = {"celery_workers": "worker", "celery_clients": "client", "celery_operators": "operator"}
#: Key types for TLS keys (what RabbitMQ/Erlang, Redis and Python's ssl all accept).
KEY_TYPES = ("ec-p256", "ec-p384", "rsa2048", "rsa3072", "rsa4096")
#: Key types for message-signing keys, the default first. ECDSA P-256 signs and verifies
#: fastest with OpenSSL 3 here (25 + 78 µs, against Ed25519's 70 + 146 µs: benchmarks/README.md),
#: and every task message pays one signature and one verification.
SIGNING_KEY_TYPES = ("ec-p256", "ed25519", "rsa2048", "rsa3072", "rsa4096")
#: The ports each daemon serves in plaintext unless told otherwise: what must stay closed.
PLAINTEXT_PORTS = {"rabbitmq": 5672, "redis": 6379}

# Role variables the model needs; their one default lives in roles/<role>/defaults/main.yml.
_ROLE_VARS = {
    "rabbitmq": ("rabbitmq_tls_port", "rabbitmq_admin_user", "rabbitmq_cluster", "rabbitmq_nodename"),
    "redis": ("redis_tls_port", "redis_admin_user", "redis_sentinel", "redis_sentinel_port",
              "redis_sentinel_master_name", "redis_sentinel_quorum", "redis_replication_primary",
              "redis_replication_user", "redis_sentinel_user", "redis_sentinel_peer_user"),
    "celery_worker": ("celery_worker_config_dir", "celery_worker_config_name", "celery_worker_signer_dir",
                      "celery_worker_policy_file"),
}

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z", re.IGNORECASE)
_QUEUE = re.compile(r"[A-Za-z0-9_.-]{1,200}\Z")


def is_ip(value: str) -> bool:
    """True if *value* is an IPv4 or IPv6 address."""
    if ":" not in value and not value.replace(".", "").isdigit():
        return False  # not IPv6 (no colon), not dotted decimal: spare ipaddress its two exceptions
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_dns_name(value: str) -> bool:
    """True if *value* is a valid DNS host name (RFC 1123 labels, no wildcard)."""
    if not value or len(value) > 253 or value.endswith(".") or is_ip(value):
        return False
    labels = value.split(".")
    if labels[-1].isdigit():  # 10.0.0.300 is a bad IP, not a name
        return False
    return all(_LABEL.match(label) for label in labels)


def _long_host(address: str) -> bool:
    """Whether Erlang needs a long node name for a node on *address* (an IP or a dotted name)."""
    return is_ip(address) or "." in address


def roles_dir() -> Path:
    """The directory holding the Ansible roles whose defaults the model reads.

    In order: ``CELERY_PROVISION_ROLES_DIR``; the checkout's ``roles/`` when the package
    runs from a clone (editable install, ``python -m``); else the copy of the role
    defaults installed with the package (``celery_provision/roles``, mapped from the
    checkout's ``roles/`` at build time, see pyproject.toml).
    """
    env = os.environ.get("CELERY_PROVISION_ROLES_DIR")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "roles").is_dir():
        return checkout / "roles"
    return package / "roles"


def _role_defaults() -> dict[str, Any]:
    """The defaults of the role variables the model depends on, from the roles themselves."""
    out: dict[str, Any] = {}
    base = roles_dir()
    for role, names in _ROLE_VARS.items():
        path = base / role / "defaults" / "main.yml"
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ProvisionError(
                "role defaults not found: reinstall celery-provision, or set"
                " CELERY_PROVISION_ROLES_DIR to the collection's roles directory",
                where=str(path),
            ) from None
        for name in names:
            if name not in data:
                raise ProvisionError(f"no default for {name}", where=str(path))
            out[name] = data[name]
    return out


def _where(value: Any, fallback: str) -> str:
    """The file:line a value came from (ansible-core tags it), else *fallback*."""
    try:
        from ansible._internal._datatag._tags import Origin

        origin = Origin.get_tag(value)
        if origin is not None and origin.path:
            return f"{origin.path}:{origin.line_num}" if origin.line_num else str(origin.path)
    except Exception:  # pragma: no cover - older ansible-core without data tagging
        pass
    return fallback


@dataclass(frozen=True)
class Host:
    """One inventory host that takes part in the deployment."""

    name: str
    address: str
    groups: frozenset[str]
    extra_sans: tuple[str, ...] = ()
    #: A worker's queues (it consumes them) or a producer's (it may publish to them):
    #: `celery_provision_queues` as the host sees it. Empty for every other host.
    queues: tuple[str, ...] = ()
    #: The task names (glob patterns) this host may call when it signs a message:
    #: `celery_provision_allowed_tasks`, by default every task for workers and producers
    #: and none for operators (they send control messages only).
    allowed_tasks: tuple[str, ...] = ()
    role_vars: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_rabbitmq(self) -> bool:
        return "rabbitmq" in self.groups

    @property
    def is_redis(self) -> bool:
        return "redis" in self.groups

    @property
    def is_broker(self) -> bool:
        return self.is_rabbitmq or self.is_redis

    @property
    def is_worker(self) -> bool:
        return "celery_workers" in self.groups

    @property
    def is_client(self) -> bool:
        return "celery_clients" in self.groups

    @property
    def is_operator(self) -> bool:
        return "celery_operators" in self.groups

    @property
    def role(self) -> str | None:
        """`worker`, `client` (a producer) or `operator`; None for a broker-only host."""
        return next((r for g, r in CELERY_ROLES.items() if g in self.groups), None)

    @property
    def is_app(self) -> bool:
        """Workers, clients and operators: the hosts that speak Celery and hold client certificates."""
        return self.role is not None

    @property
    def sans(self) -> tuple[str, ...]:
        """Subject alternative names: the inventory name, the address and any extras, once each."""
        seen: dict[str, None] = {}
        for value in (self.name, self.address, *self.extra_sans):
            seen.setdefault(value.lower() if not is_ip(value) else value, None)
        return tuple(seen)

    def var(self, name: str) -> Any:
        """A role variable as this host sees it (inventory override, else the role default)."""
        return self.role_vars[name]


@dataclass(frozen=True)
class Settings:
    """Deployment-wide choices, from `celery_provision_*` variables in group_vars/all."""

    broker: str
    result_backend: str
    auth: str = "password"
    vhost: str = "celery"
    broker_db: int = 0
    backend_db: int = 1
    signed_results: bool = False
    delivery: str = "at_least_once"
    key_type: str = "ec-p256"
    signing_key_type: str = SIGNING_KEY_TYPES[0]
    #: Hours a replaced signing certificate stays in the signer store (0: it leaves at once).
    signing_overlap_hours: int = 24
    intermediate_ca: bool = False
    ca_days: int = 3650
    leaf_days: int = 365
    crl_days: int = 30
    ca_passphrase_env: str | None = None
    ca_passphrase_file: str | None = None
    admin_networks: tuple[str, ...] = ()
    visibility_timeout: int = 3600
    #: How old a signed task message may be when it arrives (plus its ETA or countdown):
    #: the window in which the record of completed tasks refuses replays.
    message_max_age: int = 86400

    @property
    def verify_depth(self) -> int:
        """How many CA certificates a broker accepts above a client's leaf."""
        return 2 if self.intermediate_ca else 1


@dataclass(frozen=True)
class Credential:
    """One password user of one service (`rabbitmq` or `redis`)."""

    service: str
    user: str


@dataclass(frozen=True)
class Endpoint:
    """One broker as its clients reach it."""

    host: Host
    service: str
    port: int

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def plaintext_port(self) -> int:
        """The daemon's well-known plaintext port, which must stay closed."""
        return PLAINTEXT_PORTS[self.service]

    @property
    def bind_address(self) -> str | None:
        """The address the broker binds: its inventory address if that is an IP, else None
        (a host declared by DNS name binds its default IPv4 address)."""
        return self.address if is_ip(self.address) else None


@dataclass(frozen=True)
class Replication:
    """The `redis` group as one replicated Redis under Sentinel (`redis_sentinel: true`): one
    primary (at first: `redis_replication_primary`, else the group's first host), the other
    hosts its replicas, and a Sentinel on every host. Sentinel may promote a replica later:
    `primary` is the initial one, what the roles configure on a first deployment."""

    master_name: str
    sentinel_port: int
    quorum: int
    primary: Host
    replicas: tuple[Host, ...]
    #: The servers' user of replicas (masteruser), Sentinel's user on the servers
    #: (sentinel auth-user) and the Sentinels' user on each other (sentinel sentinel-user).
    replication_user: str
    sentinel_user: str
    peer_user: str

    @property
    def hosts(self) -> tuple[Host, ...]:
        """Every server and Sentinel host, the initial primary first."""
        return (self.primary, *self.replicas)

    @property
    def users(self) -> tuple[str, ...]:
        """The internal users: replication, Sentinel on the servers, Sentinel on Sentinel."""
        return (self.replication_user, self.sentinel_user, self.peer_user)


#: The smallest group that Sentinel can fail over: a majority of Sentinels must authorise a
#: failover, so two Sentinels cannot fail over the host one of them ran on.
MIN_SENTINELS = 3


@dataclass(frozen=True)
class Deployment:
    """The whole deployment: hosts by name, settings, and where its state lives."""

    inventory: Path
    hosts: Mapping[str, Host]
    settings: Settings
    pki_dir: Path
    credentials_dir: Path

    @property
    def inventory_dir(self) -> Path:
        """The directory relative paths in the inventory are read from."""
        return inventory_dir(self.inventory)

    @cached_property
    def layout(self) -> Layout:
        """Every path the controller keeps for this deployment."""
        return Layout.beside(self.inventory, pki=self.pki_dir, credentials=self.credentials_dir)

    def host_layout(self, host: Host) -> HostLayout:
        """The paths on one worker or client host."""
        return HostLayout(Path(str(host.var("celery_worker_config_dir"))),
                          str(host.var("celery_worker_config_name")),
                          Path(str(host.var("celery_worker_signer_dir"))),
                          Path(str(host.var("celery_worker_policy_file"))))

    def group(self, name: str) -> list[Host]:
        """Hosts of one role group, in inventory order."""
        return list(self._members.get(name, ()))

    @cached_property
    def _members(self) -> dict[str, tuple[Host, ...]]:
        """Hosts by role group, from one pass over the hosts: `group` is asked per host (each
        worker's configuration names its brokers), so it must not scan every host each time."""
        out: dict[str, list[Host]] = {}
        for h in self.hosts.values():
            for g in h.groups:
                out.setdefault(g, []).append(h)
        return {g: tuple(hs) for g, hs in out.items()}

    @property
    def brokers(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.is_broker]

    @property
    def apps(self) -> list[Host]:
        """Workers, clients and operators."""
        return [h for h in self.hosts.values() if h.is_app]

    @cached_property
    def task_queues(self) -> tuple[str, ...]:
        """Every queue some worker consumes, in inventory order: where tasks may be routed
        (a chain or a callback sent by a worker may go to any of them)."""
        seen: dict[str, None] = {}
        for w in self.group("celery_workers"):
            seen.update(dict.fromkeys(w.queues))
        return tuple(seen)

    @property
    def remote_control(self) -> bool:
        """Whether workers answer remote control and send events: only when some operator
        host exists to use them (otherwise no one may reach a worker but its broker)."""
        return bool(self.group("celery_operators"))

    @cached_property
    def broker_hosts(self) -> list[Host]:
        """The hosts of the broker the workers use."""
        return self.group(self.settings.broker)

    @cached_property
    def backend_hosts(self) -> list[Host]:
        """The Redis hosts of the result backend (empty for the RPC backend)."""
        return self.group("redis") if self.settings.result_backend == "redis" else []

    def endpoints(self, service: str) -> list[Endpoint]:
        """Every broker host of *service* (`rabbitmq` or `redis`) with its TLS port."""
        return [self.endpoint(h, service) for h in self.group(service)]

    def endpoint(self, host: Host, service: str) -> Endpoint:
        """One broker host of *service* as its clients reach it."""
        return Endpoint(host, service, int(host.var(f"{service}_tls_port")))

    def server_name(self, service: str) -> str:
        """The name clients of *service* check in its server certificates."""
        return self.service_name(service) or self.group(service)[0].address

    def service_name(self, group: str) -> str | None:
        """The shared name in every certificate of a broker group with several hosts.

        py-amqp checks one server name for a whole failover list, so clustered brokers carry
        their group's name as an extra SAN and clients check that; None for a single broker.
        """
        return group if len(self.group(group)) > 1 else None

    @cached_property
    def rabbitmq_cluster(self) -> bool:
        """Whether the rabbitmq group is one cluster (`rabbitmq_cluster: true`, the same on
        every node: `load` refuses mixed values) rather than independent brokers."""
        hosts = self.group("rabbitmq")
        return bool(hosts) and hosts[0].var("rabbitmq_cluster") is True

    @property
    def quorum_queues(self) -> bool:
        """Whether the task queues are quorum queues: replicated on every node of a RabbitMQ
        cluster (a classic queue lives on one node and is lost with it)."""
        return self.settings.broker == "rabbitmq" and self.rabbitmq_cluster

    @cached_property
    def rabbitmq_longnames(self) -> bool:
        """Whether the cluster's node names are long ones (their host part is an IP address or
        a dotted DNS name): a single node keeps its short `rabbit@localhost`."""
        return self.rabbitmq_cluster and any(_long_host(h.address) for h in self.group("rabbitmq"))

    def rabbitmq_nodename(self, host: Host) -> str:
        """The Erlang node name of a RabbitMQ host: `rabbit@<address>` in a cluster (the peers
        reach it there, and its certificate carries the address), else the role's default."""
        if self.rabbitmq_cluster:
            return f"rabbit@{host.address}"
        return str(host.var("rabbitmq_nodename"))

    def services(self, host: Host) -> list[str]:
        """The services a Celery host talks to, broker first; operators (inspect, control,
        events) need only the broker."""
        s = self.settings
        if not host.is_app:
            return []
        out = [s.broker]
        if s.result_backend == "redis" and "redis" not in out and not host.is_operator:
            out.append("redis")
        return out

    def user(self, host: Host, service: str) -> str:
        """The user a worker or client is on *service*: its inventory name (the CN of its
        client certificate, so x509 login maps to it)."""
        return host.name

    def secrets(self, host: Host) -> list[Credential]:
        """The passwords a worker or client needs: one per service it uses, except where x509
        login replaces the password (RabbitMQ with `celery_provision_auth: x509`)."""
        x509 = self.settings.auth == "x509"
        return [Credential(svc, self.user(host, svc)) for svc in self.services(host)
                if not (svc == "rabbitmq" and x509)]

    def admin(self, service: str) -> Credential | None:
        """The operators' admin user of *service*, if the deployment runs it."""
        hosts = self.group(service)
        return Credential(service, str(hosts[0].var(f"{service}_admin_user"))) if hosts else None

    @cached_property
    def replication(self) -> Replication | None:
        """The `redis` group replicated under Sentinel, or None (one server, or independent ones)."""
        hosts = self.group("redis")
        if not hosts or not hosts[0].var("redis_sentinel"):
            return None
        first = hosts[0]
        primary_name = str(first.var("redis_replication_primary") or first.name)
        primary = next(h for h in hosts if h.name == primary_name)  # _check_replication: a member
        return Replication(
            master_name=str(first.var("redis_sentinel_master_name")),
            sentinel_port=int(first.var("redis_sentinel_port")),
            quorum=int(first.var("redis_sentinel_quorum")) or len(hosts) // 2 + 1,
            primary=primary,
            replicas=tuple(h for h in hosts if h is not primary),
            replication_user=str(first.var("redis_replication_user")),
            sentinel_user=str(first.var("redis_sentinel_user")),
            peer_user=str(first.var("redis_sentinel_peer_user")),
        )

    def internal_credentials(self) -> list[Credential]:
        """The passwords of a replicated Redis's own users (replication, Sentinel)."""
        r = self.replication
        return [Credential("redis", u) for u in r.users] if r else []

    def app_files(self, host: Host, *, controller: bool = False) -> AppFiles:
        """A worker's or client's files: on its host, or (*controller*) in place on the controller."""
        if controller:
            return self.layout.app_files(host.name, {c.service: c.user for c in self.secrets(host)})
        return self.host_layout(host).app_files([c.service for c in self.secrets(host)])

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise ProvisionError(f"no host {name!r} in the inventory", where=str(self.inventory)) from None


# --------------------------------------------------------------------------- loading


def _load_inventory(path: Path) -> tuple[Any, Any]:
    """Parse *path* with ansible-core; return (InventoryManager, VariableManager)."""
    os.environ.setdefault("ANSIBLE_LOCALHOST_WARNING", "False")
    os.environ.setdefault("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")
    # Two hosts with one name in one YAML mapping: an error, not "last one wins".
    os.environ.setdefault("ANSIBLE_DUPLICATE_YAML_DICT_KEY", "error")
    from ansible import constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    if not path.exists():
        raise ProvisionError("inventory not found", where=str(path))
    if not os.access(path, os.R_OK):
        raise ProvisionError("inventory is not readable", where=str(path))
    loader = DataLoader()
    saved = C.INVENTORY_UNPARSED_IS_FAILED, C.INVENTORY_ANY_UNPARSED_IS_FAILED
    warnings: list[Any] = []
    try:
        C.INVENTORY_UNPARSED_IS_FAILED = C.INVENTORY_ANY_UNPARSED_IS_FAILED = True
        # ansible-core prints one multi-line warning per plugin it tried; keep them for the
        # one-line error instead of letting them reach stderr.
        with _captured_warnings(warnings):
            inventory = InventoryManager(loader=loader, sources=[str(path)])
        variables = VariableManager(loader=loader, inventory=inventory)
    except AnsibleError as exc:
        message, where = _parse_failure(warnings) or (_first_line(exc), str(path))
        raise ProvisionError(f"not a valid inventory: {message}", where=where) from None
    finally:
        C.INVENTORY_UNPARSED_IS_FAILED, C.INVENTORY_ANY_UNPARSED_IS_FAILED = saved
    return inventory, variables


@contextlib.contextmanager
def _captured_warnings(into: list[Any]) -> Iterator[None]:
    """Collect ansible-core's warnings (WarningSummary objects) instead of printing them."""
    try:
        from ansible._internal._display_utils import DeferredWarningContext
    except ImportError:  # pragma: no cover - other ansible-core versions: let them print
        yield
        return
    with DeferredWarningContext(variables={}) as ctx:
        try:
            yield
        finally:
            into.extend(ctx.get_warnings())


def _parse_failure(warnings: Sequence[Any]) -> tuple[str, str] | None:
    """The most specific one-line reason and file:line among ansible-core's parse warnings."""
    for warning in warnings:
        message = where = None
        event = getattr(warning, "event", None)
        while event is not None:
            msg = str(getattr(event, "msg", "") or "")
            if msg and "\n" not in msg.strip():
                message = msg.strip()
            context = str(getattr(event, "formatted_source_context", "") or "")
            if context.startswith("Origin: /"):
                where = context.splitlines()[0].removeprefix("Origin: ")
            chain = getattr(event, "chain", None)
            event = getattr(chain, "event", None)
        if message and where:
            return message[:300], where
    return None


def _host_vars(variables: Any, host: Any, path: Path) -> Mapping[str, Any]:
    """A host's variables; a malformed group_vars/host_vars file is one readable error.

    The reference: ansible-core's own `VariableManager.get_vars` for one host. `_vars_reader`
    returns the same mapping faster; this stays its fallback and the equivalence tests' oracle.
    """
    from ansible.errors import AnsibleError

    try:
        values: Mapping[str, Any] = variables.get_vars(host=host, include_hostvars=False)
        return values
    except AnsibleError as exc:
        raise _vars_error(host, exc, path) from None


def _vars_error(host: Any, exc: BaseException, path: Path) -> ProvisionError:
    return ProvisionError(
        f"cannot read the variables of host {host.name!r} (group_vars/host_vars): {_first_line(exc)}",
        where=str(path),
    )


# The entries of ansible-core's VARIABLE_PRECEDENCE (the group levels) that _vars_reader
# evaluates itself; any other configuration takes the reference path.
_GROUP_LEVELS = ("all_inventory", "groups_inventory", "all_plugins_inventory", "all_plugins_play",
                 "groups_plugins_inventory", "groups_plugins_play")


def _vars_reader(variables: Any, path: Path) -> Callable[[Any], Mapping[str, Any]]:
    """A function giving each host's variables exactly as `_host_vars` does, for many hosts.

    `VariableManager.get_vars(host=h)` (no play, no task) is, in order: the group levels of
    VARIABLE_PRECEDENCE (group_vars/all < group_vars/<group> sorted by depth, priority, name,
    from the inventory and from the vars plugins), then the host's inventory variables, its
    host_vars (vars plugins for the host alone), its facts, extra vars and the magic
    variables. Only the host's own levels depend on the host: the group levels are computed
    once per set of groups, the magic variables (no play, no task) once. The same ansible-core
    functions merge the same sources in the same order, so precedence and the merge
    behaviour (`hash_behaviour`) are ansible-core's. A host with facts, include_vars or
    set_fact data (none in a fresh VariableManager unless a fact cache plugin holds some),
    and any configuration this does not model, takes the reference path.
    """
    from ansible import constants as C
    from ansible.errors import AnsibleError

    def reference(host: Any) -> Mapping[str, Any]:
        return _host_vars(variables, host, path)

    try:
        from ansible.inventory.helpers import get_group_vars, sort_groups
        from ansible.utils.vars import combine_vars
        from ansible.vars.clean import namespace_facts
        from ansible.vars.plugins import get_vars_from_inventory_sources, get_vars_from_path
        from ansible.vars.reserved import warn_if_reserved

        loader, inventory = variables._loader, variables._inventory
        fact_cache, extra_vars = variables._fact_cache, variables._extra_vars
        include_cache, set_fact_cache = variables._vars_cache, variables._nonpersistent_fact_cache
        basedirs = [loader.get_basedir()] if variables.safe_basedir else []
        magic = variables._get_magic_variables(play=None, host=None, task=None, include_hostvars=False)
        levels = tuple(C.VARIABLE_PRECEDENCE)
        inject_facts = C.INJECT_FACTS_AS_VARS
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - another ansible-core
        return reference
    if not set(levels) <= set(_GROUP_LEVELS) or include_cache or set_fact_cache:
        return reference
    sources = inventory._sources
    all_group = inventory.groups["all"]

    def merge(data: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
        return data if new == {} else combine_vars(data, new)

    def plugins_inventory(entities: list[Any]) -> dict[str, Any]:
        found: dict[str, Any] = get_vars_from_inventory_sources(loader, sources, entities, "task")
        return found

    def plugins_play(entities: list[Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for base in basedirs:
            data = merge(data, get_vars_from_path(loader, base, entities, "task"))
        return data

    def group_levels(host_groups: list[Any]) -> dict[str, Any]:
        level: dict[str, Callable[[], Mapping[str, Any]]] = {
            "all_inventory": lambda: all_group.get_vars(),
            "all_plugins_inventory": lambda: plugins_inventory([all_group]),
            "all_plugins_play": lambda: plugins_play([all_group]),
            "groups_inventory": lambda: get_group_vars(host_groups),
            "groups_plugins_inventory": lambda: plugins_inventory(host_groups),
            "groups_plugins_play": lambda: plugins_play(host_groups),
        }
        data: dict[str, Any] = {}
        for entry in levels:
            data = merge(data, level[entry]())
        return data

    by_groups: dict[frozenset[str], dict[str, Any]] = {}

    def read(host: Any) -> Mapping[str, Any]:
        try:
            facts = fact_cache.get(host.name)
        except KeyError:
            facts = {}
        if facts:
            return reference(host)
        try:
            key = frozenset(g.name for g in host.get_groups())
            groups_part = by_groups.get(key)
            if groups_part is None:
                host_groups = sort_groups([g for g in host.get_groups() if g.name != "all"])
                groups_part = by_groups[key] = group_levels(host_groups)
            data = combine_vars(groups_part, host.get_vars())  # always a new dict
            data = merge(data, plugins_inventory([host]))
            data = merge(data, plugins_play([host]))
        except AnsibleError as exc:
            raise _vars_error(host, exc, path) from None
        data |= namespace_facts(facts)
        if not inject_facts:
            data = merge(data, {"ansible_local": {}})
        data = merge(data, extra_vars)
        warn_if_reserved(data)
        return merge(data, magic)

    return read


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # ansible-core lists every plugin it tried; the most specific reason is usually last.
    detail = [ln for ln in lines if not ln.startswith(("Unable to parse", "Completely failed"))]
    return (detail[-1] if detail else (lines[0] if lines else type(exc).__name__))[:300]


class _Vars:
    """Typed, located access to one host's variables."""

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        self.name = name
        self.values = values

    def where(self, key: str) -> str:
        return _where(self.values.get(key), f"host {self.name}")

    def fail(self, key: str, message: str) -> ProvisionError:
        return ProvisionError(f"{key}: {message}", where=self.where(key))

    def get(self, key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        if key not in self.values or self.values[key] is None:
            return default
        value = self.values[key]
        if kind is int and isinstance(value, bool):
            raise self.fail(key, f"expected an integer, got {value!r}")
        if kind is bool and not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        if not isinstance(value, kind):
            expected = {str: "a string", int: "an integer", list: "a list"}.get(kind, str(kind))  # type: ignore[arg-type]
            # ansible-core hands out tagged subclasses (_AnsibleTaggedStr): name the builtin type.
            builtin = next((t for t in type(value).__mro__ if t.__module__ == "builtins"), type(value))
            raise self.fail(key, f"expected {expected}, got {builtin.__name__} {value!r}")
        return value

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.get(key, default, str)
        if value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return str(value)

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, [], list)
        for item in values:
            if not isinstance(item, str):
                raise self.fail(key, f"expected a list of strings, got {item!r}")
        return tuple(str(v) for v in values)

    def positive(self, key: str, default: int) -> int:
        value = self.get(key, default, int)
        if value <= 0:
            raise self.fail(key, f"must be positive, got {value}")
        return int(value)

    def non_negative(self, key: str, default: int) -> int:
        value = self.get(key, default, int)
        if value < 0:
            raise self.fail(key, f"must be zero or more, got {value}")
        return int(value)


def _queues(v: _Vars) -> tuple[str, ...]:
    """A worker's or producer's queues: `celery_provision_queues` (host over group), once each."""
    queues = tuple(dict.fromkeys(v.strings("celery_provision_queues"))) or ("celery",)
    for q in queues:
        if not _QUEUE.match(q):
            raise v.fail("celery_provision_queues", f"{q!r} is not a valid queue name")
    return queues


#: A task-name pattern of `celery_provision_allowed_tasks`: a dotted name with `*`, `?` and
#: `[...]` globs.
_TASK_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]!:-]+$")


def _allowed_tasks(v: _Vars, role: str | None) -> tuple[str, ...]:
    """`celery_provision_allowed_tasks` of a worker, producer or operator, once each."""
    if "celery_provision_allowed_tasks" not in v.values or v.values["celery_provision_allowed_tasks"] is None:
        return ("*",) if role in ("celery_workers", "celery_clients") else ()
    patterns = tuple(dict.fromkeys(v.strings("celery_provision_allowed_tasks")))
    for p in patterns:
        if not _TASK_PATTERN.match(p):
            raise v.fail("celery_provision_allowed_tasks", f"{p!r} is not a task name pattern")
    return patterns


def _settings(v: _Vars, groups: Mapping[str, list[str]]) -> Settings:
    broker_default = "rabbitmq" if groups.get("rabbitmq") else "redis"
    backend_default = "redis" if groups.get("redis") else "rpc"
    broker = v.choice("celery_provision_broker", broker_default, ("rabbitmq", "redis"))
    backend = v.choice("celery_provision_result_backend", backend_default, ("redis", "rpc"))
    auth = v.choice("celery_provision_auth", "password", ("password", "x509"))
    vhost = v.get("celery_provision_vhost", "celery", str)
    if not vhost or len(vhost) > 255:
        raise v.fail("celery_provision_vhost", "must be a non-empty string")
    networks = v.strings("celery_provision_admin_networks")
    for net in networks:
        try:
            ipaddress.ip_network(net, strict=True)
        except ValueError as exc:
            raise v.fail("celery_provision_admin_networks", f"invalid CIDR {net!r} ({exc})") from None
    passphrase_file = v.get("celery_provision_ca_passphrase_file", None, str)
    return Settings(
        broker=broker,
        result_backend=backend,
        auth=auth,
        vhost=vhost,
        broker_db=v.get("celery_provision_redis_broker_db", 0, int),
        backend_db=v.get("celery_provision_redis_backend_db", 1, int),
        signed_results=v.get("celery_provision_signed_results", False, bool),
        delivery=v.choice("celery_provision_delivery", "at_least_once", ("at_least_once", "at_most_once")),
        key_type=v.choice("celery_provision_key_type", "ec-p256", KEY_TYPES),
        signing_key_type=v.choice("celery_provision_signing_key_type", Settings.signing_key_type, SIGNING_KEY_TYPES),
        signing_overlap_hours=v.non_negative("celery_provision_signing_overlap_hours", Settings.signing_overlap_hours),
        intermediate_ca=v.get("celery_provision_intermediate_ca", False, bool),
        ca_days=v.positive("celery_provision_ca_days", 3650),
        leaf_days=v.positive("celery_provision_leaf_days", 365),
        crl_days=v.positive("celery_provision_crl_days", 30),
        ca_passphrase_env=v.get("celery_provision_ca_passphrase_env", None, str),
        ca_passphrase_file=passphrase_file,
        admin_networks=networks,
        visibility_timeout=v.positive("celery_provision_visibility_timeout", 3600),
        message_max_age=v.positive("celery_provision_message_max_age", 86400),
    )


@cache
def _jinja() -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined)


class _Compiled:
    """One template source, compiled once; rendered per host.

    A source that is only text and plain variables (`/etc/x/{{ inventory_hostname }}`, the
    shape of the role defaults) renders as jinja renders it, `str()` of each variable between
    the text, without jinja's per-render set-up (a new context, its globals): that set-up
    costs more than the rest of a host's role variables. Anything else, and a variable the
    context lacks (a jinja global, or undefined: jinja's own error), goes through jinja.
    """

    __slots__ = ("template", "parts")

    def __init__(self, source: str) -> None:
        from jinja2 import nodes

        env = _jinja()
        self.template = env.from_string(source)
        parts: list[tuple[bool, str]] = []
        simple = True  # only text and plain variable names: rendered without jinja
        for node in env.parse(source).body:
            if type(node) is not nodes.Output:
                simple = False
                break
            for child in node.nodes:
                if type(child) is nodes.TemplateData:
                    parts.append((False, child.data))
                elif type(child) is nodes.Name and child.ctx == "load":
                    parts.append((True, child.name))
                else:
                    simple = False
                    break
            if not simple:
                break
        self.parts = tuple(parts) if simple else None

    def render(self, context: Mapping[str, Any]) -> str:
        parts = self.parts
        if parts is not None and all(name in context for is_name, name in parts if is_name):
            return "".join([str(context[text]) if is_name else text for is_name, text in parts])
        return self.template.render(context)


# A role default like "/etc/celery-provision/{{ inventory_hostname }}" is the same source for
# every host: compile it once (jinja's compilation costs ~100x its rendering).
_TEMPLATES: dict[str, _Compiled] = {}


def _template(source: str) -> _Compiled:
    """The compiled template of *source* (compiled once per distinct source)."""
    template = _TEMPLATES.get(source)
    if template is None:
        if len(_TEMPLATES) >= 4096:  # role defaults and inventory values: few sources in practice
            _TEMPLATES.clear()
        template = _TEMPLATES[str(source)] = _Compiled(source)
    return template


def _render_role_vars(defaults: Mapping[str, Any], v: _Vars) -> dict[str, Any]:
    """Role variables for one host: inventory value if set, else the role default, templated."""
    context = {**defaults, **v.values}
    out: dict[str, Any] = {}
    for name, default in defaults.items():
        value = original = v.values.get(name, default)
        for _ in range(5):  # a default may refer to another templated default
            if not (isinstance(value, str) and "{{" in value):
                break
            try:
                value = _template(value).render(context)
            except jinja2.TemplateError as exc:
                raise v.fail(name, f"cannot template {original!r}: {exc}") from None
        else:
            raise v.fail(name, f"cannot template {original!r}: it refers to itself")
        out[name] = value
    for port in ("rabbitmq_tls_port", "redis_tls_port", "redis_sentinel_port"):
        try:
            out[port] = int(out[port])
        except (TypeError, ValueError):
            raise v.fail(port, f"expected a port number, got {out[port]!r}") from None
        if not 0 < out[port] < 65536:
            raise v.fail(port, f"{out[port]} is not a TCP port")
    return out


def load(
    inventory: str | os.PathLike[str],
    *,
    pki_dir: str | os.PathLike[str] | None = None,
    credentials_dir: str | os.PathLike[str] | None = None,
) -> Deployment:
    """Read and validate *inventory*; raise ProvisionError naming the file or host on bad input."""
    path = Path(inventory)
    inv, variables = _load_inventory(path)
    role_defaults = _role_defaults()

    known = set(ROLE_GROUPS) | {"all", "ungrouped"}
    for group in inv.groups:
        if group not in known:
            close = difflib.get_close_matches(group, ROLE_GROUPS, n=1, cutoff=0.8)
            if close:
                raise ProvisionError(
                    f"unknown group {group!r} (did you mean {close[0]!r}?)", where=str(path)
                )

    groups = {g: [h.name for h in inv.groups[g].get_hosts()] for g in ROLE_GROUPS if g in inv.groups}
    members = {g: set(names) for g, names in groups.items()}
    host_vars = _vars_reader(variables, path)
    hosts: dict[str, Host] = {}
    settings: Settings | None = None
    seen_lower: dict[str, str] = {}
    for ahost in inv.get_hosts():
        name = ahost.name
        member = frozenset(g for g in ROLE_GROUPS if name in members.get(g, ()))
        if not member:  # bastions, monitoring, test outsiders: not part of the deployment
            continue
        values = host_vars(ahost)
        v = _Vars(name, values)
        if settings is None:
            settings, first = _settings(v, groups), v
        if not is_dns_name(name):
            raise ProvisionError(
                f"host name {name!r} is not a valid DNS name (it becomes a certificate name)",
                where=str(path),
            )
        if name.lower() in seen_lower:
            raise ProvisionError(
                f"duplicate host names {seen_lower[name.lower()]!r} and {name!r} (names are case-insensitive)",
                where=str(path),
            )
        seen_lower[name.lower()] = name
        address = v.get("celery_provision_address", None, str) or v.get("ansible_host", name, str)
        if not (is_ip(address) or is_dns_name(address)):
            key = "celery_provision_address" if "celery_provision_address" in values else "ansible_host"
            raise v.fail(key, f"{address!r} is not a valid IP address or DNS name")
        extra = v.strings("celery_provision_extra_sans")
        for san in extra:
            if not (is_ip(san) or is_dns_name(san)):
                raise v.fail("celery_provision_extra_sans", f"{san!r} is not a valid DNS name or IP address")
        roles = [g for g in CELERY_ROLES if g in member]
        if len(roles) > 1:
            raise ProvisionError(
                f"host {name!r} is in {' and '.join(roles)}: a host has exactly one Celery role",
                where=str(path),
            )
        hosts[name] = Host(
            name=name,
            address=address,
            groups=member,
            extra_sans=extra,
            queues=_queues(v) if roles and roles[0] != "celery_operators" else (),
            allowed_tasks=_allowed_tasks(v, roles[0] if roles else None) if roles else (),
            role_vars=_render_role_vars(role_defaults, v),
        )

    if settings is None:
        raise ProvisionError(
            f"no hosts in any of the groups {', '.join(ROLE_GROUPS)}", where=str(path)
        )
    default = Layout.beside(path)
    deployment = Deployment(
        inventory=path.resolve(),
        hosts=hosts,
        settings=settings,
        pki_dir=_state_path(pki_dir, first, "celery_provision_pki_dir", path, default.root),
        credentials_dir=_state_path(credentials_dir, first, "celery_provision_credentials_dir", path,
                                    default.credentials),
    )
    _check(deployment)
    return deployment


def _state_path(explicit: Any, v: _Vars, key: str, inventory: Path, default: Path) -> Path:
    """Where the PKI or the credentials live: the command line, else the inventory (relative
    to its directory), else the default beside it."""
    if explicit:
        return Path(explicit).resolve()
    value = v.values.get(key)
    if value:
        if not isinstance(value, str):
            raise v.fail(key, "expected a path")
        return (inventory_dir(inventory) / Path(value).expanduser()).resolve()
    return default


def _check(d: Deployment) -> None:
    """Cross-host rules: what the inventory as a whole must satisfy."""
    s = d.settings
    where = str(d.inventory)
    if not d.group(s.broker):
        raise ProvisionError(f"celery_provision_broker is {s.broker!r} but the group {s.broker!r} has no hosts", where=where)
    if s.result_backend == "redis" and not d.group("redis"):
        raise ProvisionError("celery_provision_result_backend is 'redis' but the group 'redis' has no hosts", where=where)
    if s.auth == "x509" and s.broker != "rabbitmq":
        raise ProvisionError("celery_provision_auth: x509 login needs the rabbitmq broker", where=where)
    if not d.group("celery_workers"):
        raise ProvisionError("the group 'celery_workers' has no hosts", where=where)
    consumed = set(d.task_queues)
    for h in d.group("celery_clients"):
        lost = [q for q in h.queues if q not in consumed]
        if lost:
            raise ProvisionError(
                f"celery_provision_queues of {h.name!r}: no worker consumes {', '.join(map(repr, lost))}",
                where=where,
            )
    # Certificate names and broker user names are one namespace (x509 login maps CN -> user).
    for h in d.hosts.values():
        for admin in {h.var("rabbitmq_admin_user"), h.var("redis_admin_user")}:
            if h.name.lower() == str(admin).lower():
                raise ProvisionError(
                    f"host {h.name!r} has the same name as the admin user: its certificate would log in as admin",
                    where=where,
                )
    _one_value(d, "rabbitmq", ("rabbitmq_tls_port", "rabbitmq_cluster"))
    _one_value(d, "redis", ("redis_tls_port", *_REPLICATION_VARS))
    _check_cluster(d)
    _check_replication(d)


def _one_value(d: Deployment, group: str, names: Sequence[str]) -> None:
    """The role variables *names* have one value across the hosts of *group* (they describe
    the group: its port, whether it is one cluster or one replicated Redis)."""
    hosts = d.group(group)
    for name in names:
        values = [h.var(name) for h in hosts]
        if len({repr(v) for v in values}) > 1:
            shown = ", ".join(f"{h.name} {_shown(v)}" for h, v in zip(hosts, values, strict=True))
            raise ProvisionError(f"{group} hosts disagree on {name} ({shown}): set it once for the group"
                                 f" (group_vars/{group}.yml)", where=_where(hosts[-1].role_vars[name], str(d.inventory)))


def _shown(value: Any) -> str:
    """A variable's value as the inventory spells it (`true`, `5671`, `'celery'`)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _check_cluster(d: Deployment) -> None:
    """`rabbitmq_cluster` a boolean, and node names Erlang can use."""
    hosts = d.group("rabbitmq")
    for h in hosts:
        value = h.var("rabbitmq_cluster")
        if not isinstance(value, bool):
            raise ProvisionError(f"rabbitmq_cluster: expected true or false, got {value!r}",
                                 where=_where(value, f"host {h.name}"))
    if d.rabbitmq_longnames:
        short = [h.name for h in hosts if not _long_host(h.address)]
        if short:
            raise ProvisionError(
                f"rabbitmq cluster: the address of {', '.join(short)} is a short host name while"
                " others are IPs or dotted names; Erlang node names of one cluster are all long or"
                " all short: give every node an IP address or a fully qualified name",
                where=str(d.inventory))


#: The role variables of a replicated Redis that every host of the group must share.
_REPLICATION_VARS = ("redis_sentinel", "redis_sentinel_port", "redis_sentinel_master_name", "redis_sentinel_quorum",
                     "redis_replication_primary", "redis_replication_user", "redis_sentinel_user",
                     "redis_sentinel_peer_user")
_USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")


def _check_replication(d: Deployment) -> None:
    """A replicated Redis under Sentinel (one set of values for the group: `_one_value`):
    enough Sentinels for a quorum, a primary in the group, internal users apart from every
    other user."""
    hosts = d.group("redis")
    where = str(d.inventory)
    if not hosts:
        return
    first = hosts[0]
    enabled = first.var("redis_sentinel")
    if not isinstance(enabled, bool):
        raise ProvisionError(f"redis_sentinel: expected true or false, got {enabled!r}", where=where)
    if not enabled:
        return
    if len(hosts) < MIN_SENTINELS:
        raise ProvisionError(
            f"redis_sentinel needs at least {MIN_SENTINELS} hosts in the group 'redis' (it has {len(hosts)}):"
            " a majority of Sentinels must agree to fail over, which fewer cannot after losing one",
            where=where)
    named = [h.name for h in hosts if not is_ip(h.address)]
    if named:
        raise ProvisionError(
            f"redis_sentinel: the hosts {', '.join(map(repr, named))} have no IP address (ansible_host or"
            " celery_provision_address): Sentinel announces and compares the servers by IP", where=where)
    quorum = first.var("redis_sentinel_quorum")
    if isinstance(quorum, bool) or not isinstance(quorum, int) or not 0 <= quorum <= len(hosts):
        raise ProvisionError(f"redis_sentinel_quorum: expected 0 (a majority) to {len(hosts)}, got {quorum!r}",
                             where=where)
    master = first.var("redis_sentinel_master_name")
    if not isinstance(master, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", master):
        raise ProvisionError(f"redis_sentinel_master_name: {master!r} is not a plain name", where=where)
    primary = first.var("redis_replication_primary")
    if primary and primary not in {h.name for h in hosts}:
        raise ProvisionError(f"redis_replication_primary: {primary!r} is not a host of the group 'redis'",
                             where=where)
    if first.var("redis_sentinel_port") == first.var("redis_tls_port"):
        raise ProvisionError("redis_sentinel_port is redis_tls_port: Sentinel needs a port of its own", where=where)
    r = d.replication
    assert r is not None
    taken = {str(first.var("redis_admin_user")).lower(): "the admin user",
             **{h.name.lower(): f"the host {h.name!r}" for h in d.apps}, "default": "Redis's default user"}
    for user in r.users:
        if not _USER_NAME.match(user):
            raise ProvisionError(f"Redis user {user!r} (replication/Sentinel) is not a plain name", where=where)
        if user.lower() in taken:
            raise ProvisionError(f"Redis user {user!r} (replication/Sentinel) is also {taken[user.lower()]}:"
                                 " each needs its own user and password", where=where)
        taken[user.lower()] = f"the Redis user {user!r}"
