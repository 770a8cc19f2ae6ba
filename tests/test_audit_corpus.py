"""`celery-provision audit` on configurations in the shapes public projects use.

Each directory of tests/audit_corpus/ holds one reduced configuration whose header says
which public shape it reproduces. A case lists the finding codes a careful reviewer
expects (every one must be reported, no other may be), the exit status, and the settings
that cannot be read without running the code (each named on one line of its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from celery_provision import cli
from celery_provision.audit import audit_config, format_notes, format_table, read_config

CORPUS = Path(__file__).parent / "audit_corpus"

# Variables the corpus reads; the tests start with all of them unset.
ENV_VARS = (
    "REDIS_URL",
    "BROKER_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "CELERY_BROKER_READ_URL",
    "CELERY_BROKER_WRITE_URL",
    "DJANGO_SETTINGS_MODULE",
    "CELERY_CONFIG_MODULE",
)

BASELINE = {"signing-disabled", "remote-control-unsigned", "retry-on-startup-unset"}


@dataclass(frozen=True)
class Case:
    target: str
    codes: frozenset[str]
    exit: int
    unresolved: frozenset[str] = frozenset()


def _case(target: str, codes: set[str], exit: int, unresolved: set[str] = frozenset()) -> Case:
    return Case(target, frozenset(codes), exit, frozenset(unresolved))


CASES = {
    "seed_app": _case(
        "seed_app/proj_celery.py",
        BASELINE
        | {
            "guest-credentials",
            "plaintext-transport",
            "password-in-config",
            "no-effect-setting",  # worker_port
            "not-a-security-control",  # worker_hijack_root_logger, task_create_missing_queues
        },
        1,
    ),
    "docs_first_steps": _case(
        "docs_first_steps/tasks.py", BASELINE | {"guest-credentials", "plaintext-transport"}, 1
    ),
    "docs_celeryconfig": _case(
        "docs_celeryconfig/celeryconfig.py",
        BASELINE | {"plaintext-transport", "missing-credentials", "results-unsigned"},
        1,
    ),
    "django_docs": _case(
        "django_docs/proj/celery.py",
        BASELINE | {"tls-verification-disabled", "no-client-certificate", "missing-credentials"},
        1,
    ),
    "django_managed_redis": _case(
        "django_managed_redis/app/celery.py",
        BASELINE | {"tls-verification-disabled", "no-client-certificate", "results-unsigned"},
        1,
        {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"},
    ),
    "app_conf_update": _case(
        "app_conf_update/worker.py",
        {
            "signing-disabled",
            "remote-control-unsigned",
            "tls-verification-disabled",
            "no-client-certificate",
            "unsafe-serializer",
            "password-in-config",
        },
        1,
    ),
    "env_driven": _case(
        "env_driven/celery_settings.py",
        BASELINE
        | {
            "tls-verification-disabled",  # CERT_OPTIONAL (low)
            "no-private-ca",
            "no-client-certificate",
            "missing-credentials",
            "results-unsigned",
        },
        1,
    ),
    "airflow_style": _case(
        "airflow_style/default_celery.py",
        BASELINE | {"hostname-not-checked", "results-unsigned"},
        1,
        {
            "broker_url",
            "result_backend",
            "broker_use_ssl['keyfile']",
            "broker_use_ssl['certfile']",
            "broker_use_ssl['ca_certs']",
        },
    ),
    "airflow_pickle": _case(
        "airflow_pickle/celeryconfig.py",
        BASELINE | {"unsafe-serializer", "results-unsigned"},
        1,
        {"broker_url", "result_backend", "worker_concurrency"},
    ),
    # Known gap: the Flask config the URLs come from is not modelled, so the plaintext
    # redis:// URLs of flask_app.config are not seen; the two lines say so.
    "flask_make_celery": _case(
        "flask_make_celery/app.py",
        BASELINE | {"results-unsigned"},
        0,
        {"broker_url", "result_backend", "celery.conf.update(app.config)"},
    ),
    "rediss_conditional": _case(
        "rediss_conditional/celery.py",
        BASELINE | {"tls-verification-disabled", "no-client-certificate", "results-unsigned"},
        1,
        {"broker_url", "result_backend"},
    ),
    "split_settings": _case(
        "split_settings/config/celery_app.py",
        BASELINE
        | {
            "plaintext-transport",
            "missing-credentials",
            "result-extended",
            "results-unsigned",
            "not-a-security-control",
        },
        1,
    ),
    "class_config": _case(
        "class_config/app.py",
        {
            "signing-disabled",
            "missing-credentials",
            "hostname-not-checked",
            "no-client-certificate",
            "file-not-found",
        },
        1,
    ),
    "secure_app": _case("secure_app/celery.py", {"file-not-found"}, 0, {"broker_password"}),
    "celery_message_signing": _case(
        "celery_message_signing/celery.py",
        {"auth-serializer-headers-unsigned", "file-not-found"},
        0,
        {"broker_password"},
    ),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def _unresolved_names(notes: list[str]) -> set[str]:
    names = set()
    for note in notes:
        if note.startswith("could not resolve "):
            names.add(note.removeprefix("could not resolve ").split(" at ")[0])
    return names


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_corpus_file_reports_exactly_the_expected_findings(case: Case) -> None:
    findings = audit_config(read_config(str(CORPUS / case.target)))
    assert {f.code for f in findings} == case.codes, format_table(findings)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_corpus_file_exits_1_only_with_a_high_or_critical_finding(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["audit", str(CORPUS / case.target)]) == case.exit
    capsys.readouterr()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_corpus_file_names_each_value_it_could_not_read_on_one_line(case: Case) -> None:
    notes = format_notes(read_config(str(CORPUS / case.target)))
    assert _unresolved_names(notes) == case.unresolved
    for note in notes:
        assert "\n" not in note
        if note.startswith("could not resolve "):
            assert ".py:" in note  # file:line


def test_every_corpus_file_has_a_case() -> None:
    files = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.py")}
    targets = {c.target for c in CASES.values()}
    helpers = {
        "django_docs/proj/settings.py",
        "django_managed_redis/app/settings.py",
        "split_settings/config/__init__.py",
        "split_settings/config/settings/__init__.py",
        "split_settings/config/settings/base.py",
        "split_settings/config/settings/local.py",
    }
    assert files - helpers == targets


def test_every_corpus_file_says_where_its_shape_comes_from() -> None:
    for path in CORPUS.rglob("*.py"):
        text = path.read_text()
        if text.strip():
            assert "Origin:" in text or "Local settings" in text, path
