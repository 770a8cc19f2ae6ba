"""Reading a configuration from its source as Celery would end up with it (audit's reader)."""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_provision import cli
from celery_provision.audit import Unresolved, audit_config, format_notes, read_config
from celery_provision.errors import ProvisionError

CORPUS = Path(__file__).parent / "audit_corpus"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("REDIS_URL", "BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                "DJANGO_SETTINGS_MODULE"):
        monkeypatch.delenv(var, raising=False)


def _write(tmp_path: Path, source: str, name: str = "cfg.py") -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def _findings(target: str, **kwargs: object) -> set[tuple[str, str]]:
    return {(f.code, f.setting) for f in audit_config(read_config(target, **kwargs))}


# --------------------------------------------------------------------------- the seed


def test_seed_app_reports_guest_plaintext_and_the_three_false_friends() -> None:
    found = _findings(str(CORPUS / "seed_app" / "proj_celery.py"))
    assert {
        ("guest-credentials", "broker_url"),
        ("plaintext-transport", "broker_url"),
        ("no-effect-setting", "worker_port"),
        ("not-a-security-control", "worker_hijack_root_logger"),
        ("not-a-security-control", "task_create_missing_queues"),
    } <= found


def test_app_object_is_not_a_setting() -> None:
    codes = {c for c, s in _findings(str(CORPUS / "seed_app" / "proj_celery.py")) if s == "app"}
    assert codes == set()


def test_celery_constructor_broker_is_the_broker_url() -> None:
    conf = read_config(str(CORPUS / "seed_app" / "proj_celery.py"))
    assert conf.settings["broker_url"].startswith("amqp://guest:guest@")


# --------------------------------------------------------------------------- Django


def test_django_settings_are_named_as_written() -> None:
    found = _findings(str(CORPUS / "django_docs" / "proj" / "celery.py"))
    assert ("tls-verification-disabled", "CELERY_BROKER_USE_SSL") in found
    assert ("missing-credentials", "CELERY_BROKER_URL") in found


def test_namespaced_settings_are_never_unknown_or_unset() -> None:
    codes = {c for c, _ in _findings(str(CORPUS / "django_docs" / "proj" / "celery.py"))}
    assert {"no-effect-setting", "broker-url-unset", "deprecated-setting-name"} & codes == set()


def test_a_settings_module_read_directly_gets_the_celery_namespace() -> None:
    conf = read_config(str(CORPUS / "django_docs" / "proj" / "settings.py"))
    assert conf.namespace == "CELERY"
    assert any("namespace 'CELERY'" in note for note in format_notes(conf))


def test_django_names_outside_the_namespace_are_not_celery_settings() -> None:
    conf = read_config(str(CORPUS / "django_docs" / "proj" / "settings.py"))
    assert {"SECRET_KEY", "EMAIL_HOST", "INSTALLED_APPS", "REDIS_URL"} & set(conf.settings) == set()


def test_namespace_option_reads_a_custom_prefix(tmp_path: Path) -> None:
    target = _write(tmp_path, "TASKS_BROKER_URL = 'redis://h:6379/0'\nOTHER = 1\n")
    found = _findings(target, namespace="TASKS")
    assert ("plaintext-transport", "TASKS_BROKER_URL") in found
    assert not any(code == "no-effect-setting" for code, _ in found)


def test_unknown_name_inside_the_namespace_is_reported_as_written(tmp_path: Path) -> None:
    target = _write(tmp_path, "CELERY_BROKER_URL = 'amqps://u:p@h//'\nCELERY_BROKR_USE_SSL = 1\n")
    assert ("no-effect-setting", "CELERY_BROKR_USE_SSL") in _findings(target, namespace="CELERY")


def test_split_settings_follow_star_imports() -> None:
    conf = read_config(str(CORPUS / "split_settings" / "config" / "celery_app.py"))
    assert conf.settings["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert conf.settings["CELERY_TASK_EAGER_PROPAGATES"] is True


# --------------------------------------------------------------------------- environment


def test_an_environment_value_is_used_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://:pw@cache.example:6380/0")
    target = CORPUS / "split_settings" / "config" / "celery_app.py"
    findings = audit_config(read_config(str(target)))
    verification = [f for f in findings if f.code == "tls-verification-disabled"]
    assert {f.setting for f in verification} == {
        "CELERY_BROKER_USE_SSL", "CELERY_REDIS_BACKEND_USE_SSL"
    }
    assert all("from environment variable REDIS_URL" in f.reason for f in verification)


def test_the_default_of_an_unset_variable_is_used_and_named() -> None:
    findings = audit_config(read_config(str(CORPUS / "env_driven" / "celery_settings.py")))
    creds = [f for f in findings if f.code == "missing-credentials" and f.setting == "broker_url"]
    assert creds and "default of environment variable REDIS_URL" in creds[0].reason


def test_celery_broker_url_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest@other//")
    target = _write(tmp_path, "broker_url = 'amqps://u:p@h//'\n")
    conf = read_config(target)
    assert conf.settings["broker_url"] == "amqp://guest@other//"
    assert "CELERY_BROKER_URL" in conf.origins["broker_url"]


def test_an_unset_variable_without_default_is_unresolved_not_unset(tmp_path: Path) -> None:
    target = _write(tmp_path, "import os\nbroker_url = os.environ['BROKER_URL']\n")
    conf = read_config(target)
    assert isinstance(conf.settings["broker_url"], Unresolved)
    assert "broker-url-unset" not in {f.code for f in audit_config(conf)}
    assert format_notes(conf) == [
        (
            f"could not resolve broker_url at {target}:2: "
            "environment variable BROKER_URL is not set here and has no default"
        )
    ]


def test_fstring_with_an_unknown_part_keeps_the_known_scheme(tmp_path: Path) -> None:
    target = _write(tmp_path, "import os\nbroker_url = f\"redis://:{os.environ['PW']}@h:6379/0\"\n")
    found = _findings(target)
    assert ("plaintext-transport", "broker_url") in found
    assert ("missing-credentials", "broker_url") not in found


# --------------------------------------------------------------------------- what is not a setting


def test_helper_names_the_settings_are_built_from_are_not_settings(tmp_path: Path) -> None:
    target = _write(tmp_path, "REDIS_HOST = 'h'\nbroker_url = f'rediss://:p@{REDIS_HOST}/0'\n")
    assert "REDIS_HOST" not in read_config(target).settings


def test_unknown_lower_case_setting_is_still_reported(tmp_path: Path) -> None:
    target = _write(tmp_path, "broker_url = 'amqps://u:p@h//'\nworker_port = 1\n")
    assert ("no-effect-setting", "worker_port") in _findings(target)


def test_conf_update_settings_are_read() -> None:
    conf = read_config(str(CORPUS / "app_conf_update" / "worker.py"))
    assert conf.settings["accept_content"] == ["json", "pickle"]
    assert conf.settings["task_serializer"] == "pickle"


def test_unknown_condition_is_named_in_the_reason() -> None:
    findings = audit_config(read_config(str(CORPUS / "rediss_conditional" / "celery.py")))
    off = [f for f in findings if f.code == "tls-verification-disabled"]
    assert off and all("if redis_url.startswith('rediss://')" in f.reason for f in off)


# --------------------------------------------------------------------------- safety and errors


def test_reading_does_not_run_the_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()\nbroker_url = 'amqps://u:p@h//'\n"
    target = _write(tmp_path, source)
    read_config(target)
    assert not marker.exists()


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    target = _write(tmp_path, "broker_url = 'x'\nx = (\n")
    with pytest.raises(ProvisionError, match="syntax error at line") as info:
        read_config(target)
    assert target in str(info.value) and "\n" not in str(info.value)


def test_undecodable_file_is_one_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_bytes(b"broker_url = '\xff\xfe'\n")
    with pytest.raises(ProvisionError, match="cannot read it"):
        read_config(str(path))


@pytest.mark.parametrize("target", ["no_such_pkg_xyz.celeryconfig", "/nonexistent/celeryconfig.py"])
def test_missing_target_is_named(target: str) -> None:
    with pytest.raises(ProvisionError, match="no such") as info:
        read_config(target)
    assert info.value.where == target


# --------------------------------------------------------------------------- the command line


def test_cli_bad_target_is_one_line_and_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    target = _write(tmp_path, "x = (\n")
    assert cli.main(["audit", target]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and target in err and "line 1" in err


def test_cli_notes_go_to_stderr_and_json_stays_json(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json

    target = _write(tmp_path, "import os\nbroker_url = os.environ['BROKER_URL']\n")
    cli.main(["audit", target, "--json"])
    out, err = capsys.readouterr()
    assert isinstance(json.loads(out), list)
    assert "note: could not resolve broker_url" in err


def test_cli_import_option_runs_the_module(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    target = _write(tmp_path, "raise RuntimeError('ran')\n")
    assert cli.main(["audit", target, "--import"]) == 2
    assert "RuntimeError" in capsys.readouterr().err


def test_cli_namespace_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _write(tmp_path, "APP_BROKER_URL = 'amqp://guest@h//'\n")
    assert cli.main(["audit", target, "--namespace", "APP"]) == 1
    assert "APP_BROKER_URL" in capsys.readouterr().out


def test_cli_suggest_needs_an_inventory_and_a_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", str(CORPUS / "seed_app" / "proj_celery.py"), "--suggest"]) == 2
    assert "--suggest needs -i INVENTORY and --host HOST" in capsys.readouterr().err


def test_cli_suggest_prints_the_rendered_secure_config(
    write_inventory, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = write_inventory()
    argv = ["audit", str(CORPUS / "seed_app" / "proj_celery.py"), "--suggest",
            "-i", str(inv), "--host", "worker-1"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    suggestion = out[out.index("# Secure equivalent for worker-1"):]
    assert "amqps://" in suggestion or "rediss://" in suggestion
    assert "task_serializer" in suggestion


def test_constructs_the_reader_does_not_model_are_not_a_crash(tmp_path: Path) -> None:
    source = (
        "import os\n"
        "x = ', '.join([os.environ.get('A')])\n"
        "y = '{name}'.format()\n"
        "z = [i for i in range(3)]\n"
        "f = lambda: 1\n"
        "while False:\n    pass\n"
        "del z\n"
        "broker_url = 'amqps://u:p@h//'\n"
    )
    conf = read_config(_write(tmp_path, source))
    assert conf.settings["broker_url"] == "amqps://u:p@h//"


def test_installed_libraries_are_not_read(tmp_path: Path) -> None:
    source = "import celery.app.base\nfrom kombu import Queue\nbroker_url = 'amqps://u:p@h//'\n"
    target = _write(tmp_path, source)
    assert read_config(target).files == [str(Path(target).resolve())]
