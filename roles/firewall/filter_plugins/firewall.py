"""Filters of the firewall role: validate and normalise ``firewall_rules``.

Only the standard library is used (``ipaddress``): ``ansible.utils.ipaddr``
needs ``netaddr``, which is not part of the Ansible bundle.
"""

from __future__ import annotations

import ipaddress
import re

from ansible.errors import AnsibleFilterError

__all__ = ["FilterModule"]

_PROTOCOLS = ("tcp", "udp")
_COMMENT_UNSAFE = re.compile(r'[^A-Za-z0-9 ._:/,;()+=@-]')
_COMMENT_MAX = 100


def _rule_errors(rules):
    """Return one readable message per problem found in ``rules``."""
    if rules is None:
        return []
    if not isinstance(rules, (list, tuple)):
        return ["firewall_rules must be a list, got %s" % type(rules).__name__]
    errors = []
    for index, rule in enumerate(rules):
        where = "firewall_rules[%d]" % index
        if not isinstance(rule, dict):
            errors.append("%s must be a dict with port, proto, sources, comment" % where)
            continue
        if rule.get("comment"):
            where = "%s (%s)" % (where, rule["comment"])
        port = rule.get("port")
        try:
            port_ok = not isinstance(port, bool) and 1 <= int(port) <= 65535
        except (TypeError, ValueError):
            port_ok = False
        if not port_ok:
            errors.append("%s: port %r is not an integer between 1 and 65535" % (where, port))
        proto = rule.get("proto", "tcp")
        if proto not in _PROTOCOLS:
            errors.append("%s: proto %r is not one of %s" % (where, proto, ", ".join(_PROTOCOLS)))
        sources = rule.get("sources")
        if not isinstance(sources, (list, tuple)):
            errors.append("%s: sources must be a list of CIDR strings, got %r" % (where, sources))
            continue
        for source in sources:
            try:
                ipaddress.ip_network(str(source), strict=True)
            except ValueError as exc:
                hint = ""
                try:
                    hint = "; did you mean %s?" % ipaddress.ip_network(str(source), strict=False)
                except ValueError:
                    pass
                errors.append(
                    "%s: source %r is not a valid IPv4/IPv6 CIDR (%s)%s" % (where, source, exc, hint)
                )
    return errors


def firewall_rule_errors(rules):
    """List of problems in ``rules`` (empty when the rules are valid)."""
    return _rule_errors(rules)


def _safe_comment(text):
    return _COMMENT_UNSAFE.sub("_", str(text))[:_COMMENT_MAX]


def firewall_ports(rules):
    """Group ``rules`` by (proto, port): sorted, merged, collapsed allow-lists.

    Each item: ``{"proto", "port", "comment", "name", "v4": [CIDR], "v6": [CIDR]}``.
    Two rules for the same port are merged (the union of their sources). A
    port listed with no sources keeps empty lists: it is closed to everyone
    but loopback.
    """
    errors = _rule_errors(rules)
    if errors:
        raise AnsibleFilterError("invalid firewall_rules: " + "; ".join(errors))
    merged = {}
    for rule in rules or []:
        key = (rule.get("proto", "tcp"), int(rule["port"]))
        entry = merged.setdefault(key, {"comments": [], "networks": []})
        comment = rule.get("comment")
        if comment and comment not in entry["comments"]:
            entry["comments"].append(comment)
        entry["networks"].extend(ipaddress.ip_network(str(s), strict=True) for s in rule["sources"])
    ports = []
    for (proto, port), entry in sorted(merged.items()):
        v4 = [n for n in entry["networks"] if n.version == 4]
        v6 = [n for n in entry["networks"] if n.version == 6]
        ports.append({
            "proto": proto,
            "port": port,
            "name": "%s_%d" % (proto, port),
            "comment": _safe_comment("; ".join(entry["comments"])),
            "v4": [str(n) for n in ipaddress.collapse_addresses(v4)],
            "v6": [str(n) for n in ipaddress.collapse_addresses(v6)],
        })
    return ports


class FilterModule:
    """Filters: ``firewall_rule_errors``, ``firewall_ports``."""

    def filters(self):
        return {
            "firewall_rule_errors": firewall_rule_errors,
            "firewall_ports": firewall_ports,
        }
