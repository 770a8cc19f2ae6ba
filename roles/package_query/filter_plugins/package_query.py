"""Filters of the package_query role: one package query per host, and its answer.

The roles ask the host's package database once which of their packages are installed
(a command module run: ``dpkg-query``, a few hundred milliseconds, where
``ansible.builtin.package_facts`` loads the whole apt cache, ~3 s here, and the
package manager's own modules as much). The question and the reading of its answer
are written here, once, for every role:

    argv: "{{ _role_packages | package_query_argv }}"          # the command
    stdout_lines | package_query_installed                     # {name: version}

A package is installed when dpkg's status says so (``installed``: not
``config-files``, ``half-installed``, ...); the version is dpkg's (epoch and Debian
revision included). dpkg-query exits 1 for a name the host has never seen, after
answering for the others: the task accepts rc 0 and 1.
"""

from __future__ import annotations

from collections.abc import Iterable

from ansible.errors import AnsibleFilterError

__all__ = ["FilterModule"]

# One line per package: name, dpkg's status word, version, separated by tabs.
_FORMAT = "${Package}\t${db:Status-Status}\t${Version}\n"


def package_query_argv(packages: Iterable[str]) -> list[str]:
    """The command that asks for ``packages``: an argv, no shell."""
    names = list(packages)
    bad = [name for name in names if not isinstance(name, str) or not name or name.startswith("-")]
    if bad:
        raise AnsibleFilterError(f"package_query_argv: not a package name: {bad!r}")
    return ["dpkg-query", "--show", f"--showformat={_FORMAT}", "--", *names]


def package_query_installed(lines: Iterable[str]) -> dict[str, str]:
    """The installed packages in the query's answer (its ``stdout_lines``): name -> version."""
    installed = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) == 3 and fields[1] == "installed":
            installed[fields[0]] = fields[2]
    return installed


class FilterModule:
    """The package query's command and the reading of its answer."""

    def filters(self) -> dict[str, object]:
        return {
            "package_query_argv": package_query_argv,
            "package_query_installed": package_query_installed,
        }
