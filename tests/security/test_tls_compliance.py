"""TLS compliance of both broker ports with Mozilla's "intermediate" profile, measured by sslyze
(a full scan: every protocol version and cipher suite, curves, certificate, known attacks)
while presenting the worker's client certificate.

Trust: the deployment's CA is private, so it is in none of sslyze's public trust stores. The
scan is given the deployment CA as its custom trust store (`custom_ca_file`), and the test
asserts that the chain validates against exactly that CA; the public stores' failure to
validate a private CA is expected and only printed, never counted as compliance.
Where the brokers differ from "modern" is printed, not asserted.

Policy: what the brokers accept is checked against the project's one TLS policy,
roles/tls_policy/defaults/main.yml, read from that file: no suite, version or group
outside it may be accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sslyze import (
    CertificateInfoExtraArgument,
    ClientAuthenticationCredentials,
    Scanner,
    ScanCommandsExtraArguments,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)

CUSTOM_STORE = "Supplied CA file"  # sslyze's name for the trust store built from custom_ca_file

#: The one TLS policy of the roles, read from its one place.
POLICY = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "roles" / "tls_policy" / "defaults" / "main.yml").read_text())


def _policy_suites() -> dict[str, set[str]]:
    """The suites the policy allows, by sslyze scan field (``tls_1_2_cipher_suites``...): the
    policy's lists for its versions, nothing for every other version sslyze scans."""
    by_version = {"1.2": POLICY["tls_policy_tls12_ciphers"], "1.3": POLICY["tls_policy_tls13_ciphersuites"]}
    allowed = {c.value: set() for c in SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER if c.value.endswith("_cipher_suites")}
    for version in POLICY["tls_policy_versions"]:
        number = version.removeprefix("TLSv")
        allowed[f"tls_{number.replace('.', '_')}_cipher_suites"] = set(by_version[number])
    return allowed


def _server_name(live, kind: str) -> str:
    """A DNS name in the broker's certificate for SNI (IP addresses are not valid SNI)."""
    host = live.d.group(kind)[0]
    names = [n for n in host.sans if not n.replace(".", "").isdigit() and ":" not in n]
    return names[-1] if names else host.name


@pytest.fixture(scope="module")
def scans(live) -> dict[str, object]:
    """One sslyze scan per broker port, run concurrently."""
    cert, key = live.tls_pair(live.worker)
    requests = {}
    for kind in ("rabbitmq", "redis"):
        ep = live.endpoint(kind)
        name = _server_name(live, kind)
        requests[kind] = ServerScanRequest(
            server_location=ServerNetworkLocation(hostname=name, port=ep.port, ip_address=ep.address),
            network_configuration=ServerNetworkConfiguration(
                tls_server_name_indication=name,
                tls_client_auth_credentials=ClientAuthenticationCredentials(
                    certificate_chain_path=Path(cert), key_path=Path(key)),
                network_timeout=10,
            ),
            scan_commands=set(SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER),
            scan_commands_extra_arguments=ScanCommandsExtraArguments(
                certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(live.layout.ca_pem))),
        )
    scanner = Scanner()
    scanner.queue_scans(list(requests.values()))
    by_uuid = {r.uuid: kind for kind, r in requests.items()}
    return {by_uuid[result.uuid]: result for result in scanner.get_results()}


def _issues(result, profile: TlsConfigurationEnum) -> dict[str, str]:
    try:
        check_server_against_tls_configuration(result, MozillaTlsConfiguration.get(profile))
    except ServerNotCompliantWithTlsConfiguration as exc:
        return dict(exc.issues)
    return {}


def _failed_commands(result) -> list[str]:
    out = []
    for command in SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER:
        attempt = getattr(result.scan_result, command.value)
        if attempt.status.name != "COMPLETED":
            out.append(f"{command.value}: {attempt.error_reason} {attempt.error_trace}"[:600])
    return out


pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")


@pytest.mark.parametrize("kind", ["rabbitmq", "redis"])
def test_broker_certificate_chain_validates_against_the_deployment_ca(scans, kind: str) -> None:
    result = scans[kind]
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    info = result.scan_result.certificate_info.result
    assert info is not None, _failed_commands(result)
    for deployment in info.certificate_deployments:
        verdicts = {v.trust_store.name: v.was_validation_successful for v in deployment.path_validation_results}
        public = sorted(name for name, ok in verdicts.items() if name != CUSTOM_STORE and not ok)
        print(f"{kind}: public trust stores that do not know the private CA (expected): {public}")
        assert verdicts.get(CUSTOM_STORE) is True, verdicts


@pytest.mark.parametrize("kind", ["rabbitmq", "redis"])
def test_broker_complies_with_mozilla_intermediate(scans, kind: str) -> None:
    result = scans[kind]
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    assert not _failed_commands(result), _failed_commands(result)
    allowed = _policy_suites()
    accepted = {field: [s.cipher_suite.openssl_name for s in getattr(result.scan_result, field).result.accepted_cipher_suites]
                for field in allowed}
    print(f"\n{kind}: accepted {accepted}")
    assert any(accepted.values()), "the scan saw no accepted suite: it measured nothing"
    outside = {field: sorted(set(names) - allowed[field]) for field, names in accepted.items()
               if set(names) - allowed[field]}
    assert not outside, f"{kind} accepts suites outside the TLS policy (roles/tls_policy): {outside}"
    curves = result.scan_result.elliptic_curves.result.supported_curves or []
    print(f"{kind}: curves {[c.name for c in curves]}")
    # sslyze names curves the SECG way (X25519, secp256r1), the policy the IANA way (x25519, secp256r1).
    groups = {g.casefold() for g in POLICY["tls_policy_groups"]}
    extra = sorted(c.name for c in curves if c.name.casefold() not in groups)
    assert not extra, f"{kind} offers key exchange groups outside the TLS policy (roles/tls_policy): {extra}"
    modern = _issues(result, TlsConfigurationEnum.MOZILLA_MODERN)
    print(f"\n{kind}: differences from Mozilla 'modern' (reported, not asserted):")
    for name, issue in sorted(modern.items()):
        print(f"  {name}: {issue}")
    issues = _issues(result, TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    assert not issues, f"{kind} deviates from Mozilla 'intermediate': {issues}"
