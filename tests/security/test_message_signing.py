"""Forged, altered and replayed Celery messages, published straight to the task queue by a
client holding a real broker login (mutual TLS + password, the client's own account): the
worker must refuse each (the signed envelope, celery_provision.runtime), and the task must
never run.

The canary task `touch(path)` creates *path*, `mark(dir, key)` leaves one file per execution;
every probe waits until the worker is done with its message (a signed sentinel sent after it
has run and the queue is drained: tasks are acknowledged late) and then checks the files.
Each family of probes has a control: the same message minus its hostile part runs.
"""

from __future__ import annotations

import datetime as dt
import pickle
import time
import uuid
from pathlib import Path

import pytest
from celery.exceptions import SecurityError

import secprobe
from secprobe import WAIT
from celery_provision import canary
from celery_provision.runtime import Signer


class _CreatesFileWhenUnpickled:
    """A pickle gadget: unpickling it calls `open(path, "a")`, i.e. creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "a"))


def pickled(wire, target: Path, unpickled: Path):
    """*wire* with a pickle body that carries the gadget (creates *unpickled* when loaded)."""
    body = [[str(target)], {}, {"probe": _CreatesFileWhenUnpickled(unpickled)}]
    return wire.with_body(pickle.dumps(body, protocol=2), "application/x-python-serialize", "binary")


def refused(sender, task_id: str, *paths: Path) -> None:
    sender.settle()
    ran = [str(p) for p in paths if p.exists()]
    assert not ran, f"the forged message had effects {ran}; worker log:\n{sender.log_lines(task_id)}"


def ran(sender, task_id: str, path: Path) -> None:
    sender.settle()
    assert path.exists(), f"the genuine message did not run; worker log:\n{sender.log_lines(task_id)}"


def iso(seconds_from_now: float) -> str:
    """An ETA/expires header value, as Celery writes them."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)).isoformat()


@pytest.fixture
def target(probe_dir: Path) -> Path:
    return probe_dir / f"touched-{uuid.uuid4().hex}"


@pytest.fixture
def key() -> str:
    """A fresh execution counter for `mark`."""
    return f"mark-{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- controls


def test_control_a_correctly_signed_touch_creates_the_file(sender, target: Path) -> None:
    """The genuine path of every forgery below: the client's signing key, its broker login."""
    wire = sender.sign(sender.forge(canary.TOUCH, str(target)))
    ran(sender, sender.publish(wire), target)


# --------------------------------------------------------------------------- no envelope, not JSON


@pytest.mark.probe
def test_pickle_payload_is_neither_unpickled_nor_run(sender, target: Path, probe_dir: Path) -> None:
    unpickled = probe_dir / f"unpickled-{uuid.uuid4().hex}"
    wire = pickled(sender.forge(canary.TOUCH, str(target)), target, unpickled)
    refused(sender, sender.publish(wire), target, unpickled)


@pytest.mark.probe
def test_signed_pickle_payload_is_neither_unpickled_nor_run(sender, target: Path, probe_dir: Path) -> None:
    """Signed by the client itself: the envelope never makes pickle acceptable."""
    unpickled = probe_dir / f"unpickled-{uuid.uuid4().hex}"
    wire = sender.sign(pickled(sender.forge(canary.TOUCH, str(target)), target, unpickled))
    refused(sender, sender.publish(wire), target, unpickled)


@pytest.mark.probe
def test_unsigned_json_message_is_not_run(sender, target: Path) -> None:
    refused(sender, sender.publish(sender.forge(canary.TOUCH, str(target))), target)


# --------------------------------------------------------------------------- who signed


def _leaf(live, name: str, issuer, *, days_from: int, days_to: int, common_name: str | None = None,
          kind: str = "signing") -> Signer:
    """A copy of the client's *kind* certificate (new key) from *issuer*, as a signer."""
    from cryptography import x509

    template = x509.load_pem_x509_certificate(live.layout.cert(live.client, kind).read_bytes())
    now = secprobe.now()
    cert, key = secprobe.derive_leaf(template, issuer, not_before=now + dt.timedelta(days=days_from),
                                     not_after=now + dt.timedelta(days=days_to), common_name=common_name)
    secprobe.write_pair(live.tmp / name, kind, cert, key)
    return Signer(common_name or live.client, key, cert)


@pytest.mark.probe
def test_message_signed_by_a_key_outside_the_cert_store_is_not_run(live, sender, target: Path) -> None:
    """A signing certificate issued by the deployment's own CA, with the client's very name,
    that is not in the worker's signer store."""
    stranger = _leaf(live, "stranger-signer", live.issuer(), days_from=-1, days_to=30)
    refused(sender, sender.publish(sender.sign(sender.forge(canary.TOUCH, str(target)), stranger)), target)


@pytest.mark.probe
def test_message_from_a_signer_name_not_in_the_store_is_not_run(live, sender, target: Path) -> None:
    """A signer the deployment never had (`mallory`), its certificate from the own CA."""
    mallory = _leaf(live, "mallory", live.issuer(), days_from=-1, days_to=30, common_name="mallory")
    refused(sender, sender.publish(sender.sign(sender.forge(canary.TOUCH, str(target)), mallory)), target)


@pytest.mark.probe
def test_message_signed_under_a_foreign_ca_is_not_run(live, sender, target: Path) -> None:
    """The client's name and extensions, from a CA of the attacker's own."""
    foreign = _leaf(live, "foreign-signer", secprobe.self_signed_ca("celery-provision root CA"),
                    days_from=-1, days_to=30)
    refused(sender, sender.publish(sender.sign(sender.forge(canary.TOUCH, str(target)), foreign)), target)


@pytest.mark.probe
def test_message_signed_by_an_expired_signing_certificate_is_not_run(live, sender, target: Path) -> None:
    expired = _leaf(live, "expired-signer", live.issuer(), days_from=-400, days_to=-1)
    refused(sender, sender.publish(sender.sign(sender.forge(canary.TOUCH, str(target)), expired)), target)


@pytest.mark.probe
def test_message_signed_with_the_clients_tls_key_is_not_run(sender, target: Path) -> None:
    """The client's TLS client key and certificate (EKU clientAuth), not its signing pair."""
    tls = sender.signer(kind="client")
    refused(sender, sender.publish(sender.sign(sender.forge(canary.TOUCH, str(target)), tls)), target)


@pytest.mark.probe
def test_client_claiming_to_be_the_worker_is_not_run(live, sender, target: Path) -> None:
    """The client signs with its own key under the worker's name (whose allow-list is wider)."""
    claimed = sender.signer()
    claimed = Signer(live.worker, claimed.key, claimed.cert)
    refused(sender, sender.publish(sender.sign(sender.forge(canary.ADMIN_TOUCH, str(target)), claimed)), target)


# --------------------------------------------------------------------------- altered after signing


@pytest.mark.probe
def test_signed_ping_relabelled_as_touch_is_not_run(sender, target: Path) -> None:
    """The issue's scenario: the client signs `ping(path)`, then re-publishes the very message
    with its own broker account and the `task` header changed to `touch`."""
    wire = sender.sign(sender.forge(canary.PING, str(target)))
    refused(sender, sender.publish(wire.relabelled(task=canary.TOUCH)), target)


@pytest.mark.probe
def test_signed_message_with_altered_args_is_not_run(sender, target: Path, probe_dir: Path) -> None:
    """Signed to touch one file, altered to touch another: neither may appear."""
    altered = probe_dir / f"altered-{uuid.uuid4().hex}"
    wire = sender.sign(sender.forge(canary.TOUCH, str(target)))
    assert str(target).encode() in wire.body
    forged = wire.with_body(wire.body.replace(str(target).encode(), str(altered).encode()))
    refused(sender, sender.publish(forged.relabelled(argsrepr=repr((str(altered),)))), target, altered)


@pytest.mark.probe
def test_signed_message_with_its_eta_moved_earlier_is_not_run(sender, target: Path) -> None:
    """Signed to run in a day; the ETA header moved to now would run it at once."""
    wire = sender.sign(sender.forge(canary.TOUCH, str(target), eta=iso(86400)))
    refused(sender, sender.publish(wire.relabelled(eta=iso(-1))), target)


def test_control_a_message_signed_with_a_past_eta_runs(sender, target: Path) -> None:
    wire = sender.sign(sender.forge(canary.TOUCH, str(target), eta=iso(-1)))
    ran(sender, sender.publish(wire), target)


@pytest.mark.probe
def test_signed_message_with_its_expiry_extended_is_not_run(sender, target: Path) -> None:
    """Signed with an expiry that has passed (the worker would drop it); extended by a day."""
    wire = sender.sign(sender.forge(canary.TOUCH, str(target), expires=iso(-3600)))
    refused(sender, sender.publish(wire.relabelled(expires=iso(86400))), target)


def test_control_a_message_signed_with_a_future_expiry_runs(sender, target: Path) -> None:
    wire = sender.sign(sender.forge(canary.TOUCH, str(target), expires=iso(86400)))
    ran(sender, sender.publish(wire), target)


# --------------------------------------------------------------------------- when it was signed


@pytest.mark.probe
def test_message_signed_longer_ago_than_the_maximum_age_is_not_run(live, sender, target: Path) -> None:
    """Correctly signed by the client, but `at` lies before the deployment's maximum age."""
    at = time.time() - live.d.settings.message_max_age - 3600
    refused(sender, sender.publish(sender.sign(sender.forge(canary.TOUCH, str(target)), at=at)), target)


def test_control_a_message_signed_a_minute_ago_runs(sender, target: Path) -> None:
    ran(sender, sender.publish(sender.sign(sender.forge(canary.TOUCH, str(target)), at=time.time() - 60)), target)


# --------------------------------------------------------------------------- replays


def _run_once(sender, directory: Path, key: str):
    wire = sender.sign(sender.forge(canary.MARK, str(directory), key))
    sender.publish(wire)
    sender.settle()
    assert sender.executions(key) == 1, f"the genuine mark did not run once; worker log:\n" \
                                        f"{sender.log_lines(wire.task_id)}"
    return wire


@pytest.mark.probe
def test_replay_of_a_completed_message_does_not_run_again(sender, probe_dir: Path, key: str) -> None:
    wire = _run_once(sender, probe_dir, key)
    sender.publish(wire)
    sender.settle()
    assert sender.executions(key) == 1, f"the replay ran; worker log:\n{sender.log_lines(wire.task_id)}"


@pytest.mark.probe
def test_replay_after_a_worker_restart_does_not_run_again(live, sender, probe_dir: Path, key: str) -> None:
    """The record of completed tasks lives in the result backend, not in the worker's memory."""
    wire = _run_once(sender, probe_dir, key)
    live.handle.service(live.handle.worker_service, "restart")
    sender.settle()  # the restarted worker is consuming again
    sender.publish(wire)
    sender.settle()
    assert sender.executions(key) == 1, f"the replay ran; worker log:\n{sender.log_lines(wire.task_id)}"


def test_control_the_same_task_signed_again_under_a_new_id_runs_again(sender, probe_dir: Path, key: str) -> None:
    _run_once(sender, probe_dir, key)
    sender.publish(sender.sign(sender.forge(canary.MARK, str(probe_dir), key)))
    sender.settle()
    assert sender.executions(key) == 2


# --------------------------------------------------------------------------- allow-lists


@pytest.fixture(scope="module")
def worker_app(live):
    """The worker's own identity as a producer (its allow-list: every task)."""
    workdir = live.tmp / "worker-app"
    workdir.mkdir(exist_ok=True)
    app = live.handle.client_app(workdir, live.worker)
    yield app
    app.close()


@pytest.mark.probe
def test_client_calling_a_task_outside_its_allow_list_is_refused_and_told(sender, target: Path) -> None:
    """client-1 may call `celery_provision.canary.*` only: `admin.touch` is refused, and the
    caller's `.get()` says so (the signature held: the client really asked)."""
    result = sender.app.send_task(canary.ADMIN_TOUCH, args=[str(target)])
    with pytest.raises(SecurityError, match=rf"may not call {canary.ADMIN_TOUCH}"):
        result.get(timeout=WAIT)
    refused(sender, result.id, target)


@pytest.mark.probe
def test_chain_from_the_client_into_a_task_outside_its_allow_list_is_refused(sender, target: Path) -> None:
    """`ping | admin_touch`: the first step is allowed, the chain it carries is not."""
    app = sender.app
    chain = app.signature(canary.PING, args=["chain"]) | app.signature(canary.ADMIN_TOUCH, args=[str(target)],
                                                                       immutable=True)
    result = chain.apply_async()
    with pytest.raises(SecurityError, match=rf"may not call {canary.ADMIN_TOUCH}"):
        result.get(timeout=WAIT)
    refused(sender, result.id, target)


def test_control_the_worker_identity_may_call_the_admin_task(sender, worker_app, target: Path) -> None:
    assert worker_app.send_task(canary.ADMIN_TOUCH, args=[str(target)]).get(timeout=WAIT) == str(target)
    assert target.exists()


def test_control_a_chain_of_allowed_tasks_from_the_client_runs(sender, target: Path) -> None:
    app = sender.app
    chain = app.signature(canary.PING, args=["chain"]) | app.signature(canary.TOUCH, args=[str(target)],
                                                                       immutable=True)
    assert chain.apply_async().get(timeout=WAIT) == str(target)
    assert target.exists()


def test_refusals_are_logged_with_signer_and_reason(sender, target: Path) -> None:
    """What an operator sees in the worker log for a refused message."""
    wire = sender.sign(sender.forge(canary.PING, str(target)))
    task_id = sender.publish(wire.relabelled(task=canary.TOUCH))
    sender.settle()
    line = sender.log_lines(task_id)
    assert f"celery-provision refused task {canary.TOUCH}[{task_id}] from {sender.live.client}: " in line, line
