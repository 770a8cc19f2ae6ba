"""Filters of the rabbitmq role: compare the node's users, permissions and vhosts with the
role's inputs on the controller, so that a run with nothing to change starts one Erlang VM
(one ``rabbitmqctl eval`` that reads the state) instead of several per user.

``rabbitmq_pending`` answers which vhosts and users the ``community.rabbitmq`` modules must
still be called for; they make every change, as before. It mirrors the comparisons those
modules make (``rabbitmq_vhost``: exists, tracing; ``rabbitmq_user``: exists, password via
``authenticate_user``, tags, per-vhost and topic permissions) and answers "everything" when
it cannot read the state, so the modules then decide as they always did.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

__all__ = ["FilterModule"]

# RabbitMQ's internal password hashes: base64(salt(4 bytes) + H(salt + UTF-8 password)).
_HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}


def _password_matches(user, password):
    """True if ``password`` is the one RabbitMQ stores for ``user`` (an exported user record)."""
    algorithm = _HASHES.get(user.get("hashing_algorithm") or "rabbit_password_hashing_sha256")
    try:
        stored = base64.b64decode(user.get("password_hash") or "", validate=True)
    except (binascii.Error, ValueError):
        return False
    if algorithm is None or len(stored) <= 4:
        return False  # unknown scheme or no password: the module's authenticate_user decides
    salt, digest = stored[:4], stored[4:]
    return hmac.compare_digest(algorithm(salt + password.encode("utf-8")).digest(), digest)


def _tags(value):
    if isinstance(value, str):  # older exports: "a,b"
        value = value.split(",")
    return {t.strip() for t in value or [] if t and t.strip()}


def _permissions(items):
    """The module's view of desired per-vhost permissions: {vhost: {vhost, configure, write, read}}.
    An empty list means ^$ on "/" (the module's non-bulk default)."""
    if not items:
        return {"/": {"vhost": "/", "configure": "^$", "write": "^$", "read": "^$"}}, False
    out = {}
    for p in items:
        out[p.get("vhost", "/")] = {"vhost": p.get("vhost", "/"),
                                    "configure": p.get("configure_priv", p.get("configure")),
                                    "write": p.get("write_priv", p.get("write")),
                                    "read": p.get("read_priv", p.get("read"))}
    return out, True


def _topic_permissions(items):
    out = {}
    for p in items or []:
        vhost, exchange = p.get("vhost", "/"), p.get("exchange", "amq.topic")
        out[(vhost, exchange)] = {"vhost": vhost, "exchange": exchange,
                                  "write": p.get("write_priv", p.get("write")),
                                  "read": p.get("read_priv", p.get("read"))}
    return out


def _user_differs(desired, existing, perms, topics):
    """True if the rabbitmq_user module would change something for a present user."""
    if existing is None:
        return True
    # update_password: always for a password user, on_create for a certificate user (users.yml).
    password = desired.get("password")
    if password is not None and not _password_matches(existing, password):
        return True
    if _tags(desired.get("tags")) != _tags(existing.get("tags")):
        return True
    wanted, bulk = _permissions(desired.get("permissions"))
    have = perms.get(existing["name"], {})
    if not bulk:
        have = {"/": have.get("/", {})}
    if wanted != have:
        return True
    return _topic_permissions(desired.get("topic_permissions")) != topics.get(existing["name"], {})


def _parse(text):
    """The JSON object the role's `rabbitmqctl eval` prints ({definitions, tracing}), or None."""
    if not isinstance(text, str) or "{" not in text:
        return None
    try:
        state = json.JSONDecoder().raw_decode(text[text.index("{"):])[0]
        return state if isinstance(state.get("definitions"), dict) else None
    except (ValueError, AttributeError):
        return None


def rabbitmq_pending(text, vhosts, users, admin, guest="guest"):
    """What the role's modules must still do, from the node's state ``text``.

    ``users`` are ``rabbitmq_users`` items, ``admin`` one more (name, state, password, tags,
    permissions, topic_permissions), passed to rabbitmq_user as users.yml does. Returns
    ``{known, vhosts: [names], guest: bool, admin: bool, users: [names]}``.
    """
    state = _parse(text)
    if state is None:
        return {"known": False, "vhosts": list(vhosts), "guest": True, "admin": True,
                "users": [u["name"] for u in users]}
    defs = state["definitions"]
    tracing = state.get("tracing") or {}
    existing_vhosts = {v["name"] for v in defs.get("vhosts", [])}
    existing = {u["name"]: u for u in defs.get("users", [])}
    perms, topics = {}, {}
    for p in defs.get("permissions", []):
        perms.setdefault(p["user"], {})[p["vhost"]] = {
            "vhost": p["vhost"], "configure": p["configure"], "write": p["write"], "read": p["read"]}
    for p in defs.get("topic_permissions", []):
        topics.setdefault(p["user"], {})[(p["vhost"], p["exchange"])] = {
            "vhost": p["vhost"], "exchange": p["exchange"], "write": p["write"], "read": p["read"]}

    def pending(user):
        if user.get("state", "present") == "absent":
            return user["name"] in existing
        return _user_differs(user, existing.get(user["name"]), perms, topics)

    return {
        "known": True,
        "vhosts": [v for v in vhosts if v not in existing_vhosts or tracing.get(v, False)],
        "guest": guest in existing,
        "admin": pending(admin),
        "users": [u["name"] for u in users if pending(u)],
    }


def rabbitmq_enabled_plugins(text):
    """The plugin names of an enabled_plugins file (``[a,b].``), sorted; None if unreadable."""
    if not isinstance(text, str):
        return None
    body = text.strip()
    if not (body.startswith("[") and body.endswith("].")):
        return None
    names = [n.strip() for n in body[1:-2].split(",") if n.strip()]
    if not all(n.replace("_", "").isalnum() for n in names):
        return None
    return sorted(names)


class FilterModule:
    def filters(self):
        return {"rabbitmq_pending": rabbitmq_pending, "rabbitmq_enabled_plugins": rabbitmq_enabled_plugins}
