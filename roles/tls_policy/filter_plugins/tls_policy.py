"""Filters of the tls_policy role: the TLS policy in each server's spelling.

The policy (``roles/tls_policy/defaults/main.yml``) names TLS versions the
OpenSSL way (``TLSv1.2``) and key exchange groups the IANA way (``x25519``,
``secp256r1``). Erlang's ``ssl`` (RabbitMQ) and OpenSSL (Redis) spell some of
them differently; these filters translate, refuse names they do not know, and
drop the groups a TLS stack cannot offer. Input may be in any known spelling,
so a list already translated passes through unchanged.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

__all__ = ["FilterModule"]

# TLS versions the toolkit can offer: canonical name -> (Erlang atom, rank).
# TLS 1.0 and 1.1 are absent on purpose: no spelling turns them on.
_VERSIONS = {
    "TLSv1.2": ("tlsv1.2", 2),
    "TLSv1.3": ("tlsv1.3", 3),
}

# Key exchange groups: IANA name -> (Erlang ssl atom, OpenSSL TLS group name).
# A name here is only a spelling: whether a stack can offer the group is
# tls_policy_stack_groups' business (Erlang's ssl spells the hybrid group
# x25519mlkem768 where it has it; OTP 25 and 27.3 do not).
_GROUPS = {
    "X25519MLKEM768": ("x25519mlkem768", "X25519MLKEM768"),
    "x25519": ("x25519", "X25519"),
    "x448": ("x448", "X448"),
    "secp256r1": ("secp256r1", "P-256"),
    "secp384r1": ("secp384r1", "P-384"),
    "secp521r1": ("secp521r1", "P-521"),
}

# Every known spelling (case-insensitive) -> IANA name.
_GROUP_ALIASES = {
    **{name.casefold(): name for name in _GROUPS},
    **{erlang.casefold(): name for name, (erlang, _openssl) in _GROUPS.items() if erlang},
    **{openssl.casefold(): name for name, (_erlang, openssl) in _GROUPS.items()},
    "prime256v1": "secp256r1",
}


def _names(value, what):
    if not isinstance(value, (list, tuple)) or not value:
        raise AnsibleFilterError("%s must be a non-empty list, got %r" % (what, value))
    for item in value:
        if not isinstance(item, str):
            raise AnsibleFilterError("%s: %r is not a string" % (what, item))
    return list(value)


def _version(name):
    for canonical, (erlang, _openssl) in _VERSIONS.items():
        if name.casefold() in (canonical.casefold(), erlang):
            return canonical
    raise AnsibleFilterError(
        "TLS version %r is not offered by celery-provision (known: %s)" % (name, ", ".join(_VERSIONS))
    )


def _versions(versions):
    canonical = [_version(name) for name in _names(versions, "TLS versions")]
    return sorted(set(canonical), key=lambda name: _VERSIONS[name][1])


def erlang_versions(versions):
    """Erlang's spelling, newest first (as ``ssl:versions()`` lists them)."""
    return [_VERSIONS[name][0] for name in reversed(_versions(versions))]


def openssl_versions(versions):
    """OpenSSL's spelling, oldest first (so ``first`` is the minimum)."""
    return _versions(versions)


def _group(name):
    try:
        return _GROUP_ALIASES[name.casefold()]
    except KeyError:
        raise AnsibleFilterError(
            "key exchange group %r is unknown to celery-provision (known: %s)" % (name, ", ".join(_GROUPS))
        ) from None


def _groups(groups, supported, spelling):
    wanted = []
    for name in _names(groups, "key exchange groups"):
        canonical = _group(name)
        if canonical not in wanted:
            wanted.append(canonical)
    if supported is not None:
        offerable = {_group(name) for name in _names(supported, "supported groups")}
        wanted = [name for name in wanted if name in offerable]
        if not wanted:
            raise AnsibleFilterError(
                "none of the key exchange groups %s can be offered by this TLS stack (it has %s)"
                % (", ".join(groups), ", ".join(supported))
            )
    index = {"erlang": 0, "openssl": 1}[spelling]
    out = []
    for name in wanted:
        spelled = _GROUPS[name][index]
        if spelled is None:
            raise AnsibleFilterError(
                "%s has no name for the key exchange group %s: leave it out of that stack's groups"
                " (tls_policy_stack_groups)" % (spelling, name)
            )
        out.append(spelled)
    return out


def erlang_groups(groups, supported=None):
    """Erlang ``eccs``/``supported_groups`` atoms, in order; without the groups not in *supported*."""
    return _groups(groups, supported, "erlang")


def openssl_groups(groups, supported=None):
    """OpenSSL ``Groups`` names, in order; without the groups not in *supported*."""
    return _groups(groups, supported, "openssl")


class FilterModule:
    """The TLS policy in Erlang's and OpenSSL's spelling."""

    def filters(self):
        return {
            "tls_policy_erlang_versions": erlang_versions,
            "tls_policy_openssl_versions": openssl_versions,
            "tls_policy_erlang_groups": erlang_groups,
            "tls_policy_openssl_groups": openssl_groups,
        }
