"""The `celery-provision` command: parses arguments, calls the library, prints. Nothing else."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import ProvisionError

__all__ = ["main"]

PROG = "celery-provision"


def _deployment(args: argparse.Namespace) -> Any:
    from . import model

    return model.load(args.inventory, pki_dir=getattr(args, "pki_dir", None))


def _progress() -> Callable[[int, int], None]:
    tty = sys.stderr.isatty()
    last = [-1]

    def show(done: int, total: int) -> None:
        if total < 20:
            return
        pct = done * 100 // total
        if tty:
            print(f"\rissuing certificates: {done}/{total}", end="" if done < total else "\n", file=sys.stderr)
        elif pct // 10 != last[0]:
            last[0] = pct // 10
            print(f"issuing certificates: {done}/{total} ({pct}%)", file=sys.stderr)

    return show


def _print_report(report: Any, verbose: bool = True) -> None:
    for action, name, detail in report.events:
        if action != "unchanged" and verbose:
            print(f"{action:>9}  {name}" + (f"  ({detail})" if detail and detail != name else ""))
    unchanged, skipped = report.count("unchanged"), report.count("skipped")
    print(f"certs: {report.summary()}" + (f"; {unchanged} unchanged" if unchanged else "")
          + (f"; {skipped} revoked host(s) skipped" if skipped else ""))


# --------------------------------------------------------------------------- certs


def cmd_certs_init(args: argparse.Namespace) -> int:
    from . import pki

    d = _deployment(args)
    _print_report(pki.issue(d, force_ca=args.force, only=()))
    return 0


def cmd_certs_issue(args: argparse.Namespace) -> int:
    from . import pki

    d = _deployment(args)
    report = pki.issue(d, only=args.host or None, progress=_progress())
    _print_report(report)
    return 0


def cmd_certs_renew(args: argparse.Namespace) -> int:
    from . import pki

    d = _deployment(args)
    _print_report(pki.renew(d, args.within, progress=_progress()))
    return 0


def cmd_certs_revoke(args: argparse.Namespace) -> int:
    from . import pki

    d = _deployment(args)
    kinds = (args.kind,) if args.kind != "all" else pki.KINDS
    _print_report(pki.revoke(d, args.name, kinds=kinds, reason=args.reason))
    return 0


def cmd_certs_readmit(args: argparse.Namespace) -> int:
    from . import pki

    _print_report(pki.readmit(_deployment(args), args.name, progress=_progress()))
    return 0


def cmd_certs_prune(args: argparse.Namespace) -> int:
    from . import pki

    _print_report(pki.prune(_deployment(args)))
    return 0


def cmd_certs_list(args: argparse.Namespace) -> int:
    from . import pki

    rows = pki.inventory_rows(_deployment(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [["NAME", "KIND", "KEY", "SANS", "EXPIRES", "DAYS", "STATUS"]]
    for r in rows:
        table.append([r["name"], r["kind"], r["key_type"], ",".join(r["sans"]) or "-",
                      (r["not_after"] or "-")[:10], str(r["days_left"]), r["status"]])
    print(_table(table))
    return 0


def cmd_certs_check(args: argparse.Namespace) -> int:
    from . import pki

    d = _deployment(args)
    problems = pki.check(d)
    for name, why in pki.revoked_hosts(d).items():
        print(f"REVOKED  {name}  (since {why['date'][:10]}: {why['reason']}; certs readmit {name} to re-admit)")
    for p in problems:
        print(f"FAIL  {p}")
    print(f"certs check: {len(problems)} problem(s)" if problems else "certs check: ok")
    return 1 if problems else 0


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# --------------------------------------------------------------------------- the rest


def _ensure_credentials(d: Any) -> None:
    from . import credentials

    created = credentials.ensure(d)
    for c in created:
        print(f"  created  {c.service}/{c.user}")
    total = len(credentials.wanted(d))
    print(f"credentials: {len(created)} created, {total - len(created)} unchanged")


def cmd_credentials(args: argparse.Namespace) -> int:
    _ensure_credentials(_deployment(args))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import export

    print(json.dumps(export.export(_deployment(args)), indent=1, sort_keys=True))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """`certs issue`, `credentials` and `export` from one inventory load: the reports of the first
    two on stderr, the model on stdout (site.yml's controller play makes one call, not three)."""
    from . import export, pki

    d = _deployment(args)
    with contextlib.redirect_stdout(sys.stderr):
        _print_report(pki.issue(d, progress=_progress()))
        _ensure_credentials(d)
    print(json.dumps(export.export(d), indent=1, sort_keys=True))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from . import render

    d = _deployment(args)
    out = Path(args.out) if args.out else None
    results = render.write_all(d, out, hosts=args.host, controller_paths=args.controller_paths)
    for path, changed in results:
        print(f"{'rendered' if changed else 'unchanged':>9}  {path}")
    print(f"render: {sum(c for _, c in results)} rendered, {sum(not c for _, c in results)} unchanged")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from . import audit

    if args.suggest and not (args.inventory and args.host):
        raise ProvisionError("--suggest needs -i INVENTORY and --host HOST (the host to render)")
    if args.suggest and args.json:
        raise ProvisionError("--suggest prints Python source: use it without --json")
    if args.import_module:
        conf: Any = audit.load_config(args.target)
    else:
        conf = audit.read_config(args.target, namespace=args.namespace)
        for line in audit.format_notes(conf):
            print(f"{PROG}: note: {line}", file=sys.stderr)
    findings = audit.audit_config(conf, role=args.role)
    print(audit.to_json(findings) if args.json else audit.format_table(findings))
    if args.suggest:
        print()
        print(audit.suggest(args.inventory, args.host, pki_dir=args.pki_dir), end="")
    return audit.exit_status(findings, audit.Severity[args.fail_on.upper()])


def cmd_verify(args: argparse.Namespace) -> int:
    from . import verify

    d = _deployment(args)
    checks = verify.run(d, canary=not args.no_canary, timeout=args.timeout)
    print(verify.to_json(checks) if args.json else verify.format_table(checks))
    return 0 if all(c.ok for c in checks) else 1


# --------------------------------------------------------------------------- parser


def _version() -> str:
    """The installed distribution's version (the package's own when run from a bare checkout)."""
    from importlib import metadata

    try:
        return metadata.version(PROG)
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (subcommand parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Secure-by-construction Celery deployments.")
    p.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def inv(sp: argparse.ArgumentParser, pki_dir: bool = True) -> argparse.ArgumentParser:
        sp.add_argument("-i", "--inventory", required=True, help="Ansible inventory (file or directory)")
        if pki_dir:
            sp.add_argument("--pki-dir", help="PKI directory (default: derived from the inventory)")
        return sp

    certs = sub.add_parser("certs", help="the PKI: CA, server, client and signing certificates")
    csub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    sp = inv(csub.add_parser("init", help="create the CA (never replaces one without --force)"))
    sp.add_argument("--force", action="store_true", help="retire the existing CA and create a new one")
    sp.set_defaults(func=cmd_certs_init)
    sp = inv(csub.add_parser("issue", help="issue every missing or stale certificate"))
    sp.add_argument("--host", action="append", help="only this host (repeatable)")
    sp.set_defaults(func=cmd_certs_issue)
    sp = inv(csub.add_parser("renew", help="reissue certificates that expire soon"))
    sp.add_argument("--within", type=int, required=True, metavar="DAYS", help="renew what expires within DAYS")
    sp.set_defaults(func=cmd_certs_renew)
    sp = inv(csub.add_parser("revoke", help="revoke a host (or one of its certificates) and publish the CRL; "
                                            "a revoked host gets nothing until `certs readmit`"))
    sp.add_argument("name", help="inventory host name")
    sp.add_argument("--kind", choices=("all", "server", "client", "signing"), default="all",
                    help="revoke only this certificate (the next issue replaces it); default: the whole host")
    sp.add_argument("--reason", default="revoked by operator")
    sp.set_defaults(func=cmd_certs_revoke)
    sp = inv(csub.add_parser("readmit", help="re-admit a revoked host: new keys, certificates and passwords"))
    sp.add_argument("name", help="inventory host name")
    sp.set_defaults(func=cmd_certs_readmit)
    inv(csub.add_parser("prune", help="revoke and delete certificates of hosts no longer in the inventory")
        ).set_defaults(func=cmd_certs_prune)
    sp = inv(csub.add_parser("list", help="table of certificates, expiry and status"))
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_certs_list)
    inv(csub.add_parser("check", help="verify chains, key pairs, expiry and permissions")).set_defaults(
        func=cmd_certs_check)

    inv(sub.add_parser("credentials", help="generate missing broker passwords (0600 files)"),
        pki_dir=False).set_defaults(func=cmd_credentials)
    inv(sub.add_parser("export", help="print every host's role variables as JSON (contains secrets)")
        ).set_defaults(func=cmd_export)
    inv(sub.add_parser("prepare", help="certs issue, credentials and export in one call: the reports on "
                                       "stderr, the model (JSON, contains secrets) on stdout")
        ).set_defaults(func=cmd_prepare)
    sp = inv(sub.add_parser("render", help="render each worker's and client's Celery configuration"),
             pki_dir=True)
    sp.add_argument("--host", action="append", help="only this host (repeatable)")
    sp.add_argument("--out", help="output directory (default: beside the PKI, configs/HOST/celeryconfig.py)")
    sp.add_argument("--controller-paths", action="store_true",
                    help="point at the controller's PKI and password files instead of the host's copies")
    sp.set_defaults(func=cmd_render)

    sp = sub.add_parser("audit", help="audit a Celery configuration (module path or file)")
    sp.add_argument("target", help="config module, app module or Django settings (file or module path)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--fail-on", default="high", choices=("info", "low", "medium", "high", "critical"),
                    help="exit 1 when a finding is at least this severe (default: high)")
    sp.add_argument("--namespace", help="read NAMESPACE_X names, as config_from_object(..., namespace=NAMESPACE)")
    sp.add_argument("--role", default="worker", choices=("worker", "client", "operator"),
                    help="the Celery role of the host using the config: worker (default), client"
                         " (a producer) or operator")
    sp.add_argument("--import", dest="import_module", action="store_true",
                    help="import the target (runs its code) instead of reading its source")
    sp.add_argument("--suggest", action="store_true",
                    help="also print the secure configuration rendered for --host from -i INVENTORY")
    sp.add_argument("-i", "--inventory", help="Ansible inventory (for --suggest)")
    sp.add_argument("--host", help="inventory host whose configuration --suggest prints")
    sp.add_argument("--pki-dir", help="PKI directory (for --suggest; default: derived from the inventory)")
    sp.set_defaults(func=cmd_audit)

    sp = inv(sub.add_parser("verify", help="check the live deployment: TLS, refusals, a signed canary task"))
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--no-canary", action="store_true", help="skip the canary task round trip")
    sp.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the canary (default 30)")
    sp.set_defaults(func=cmd_verify)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one readable line and a non-zero exit for any error, never a traceback."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ProvisionError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: still one line
        if args.debug:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
