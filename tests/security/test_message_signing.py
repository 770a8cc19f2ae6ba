"""Forged Celery messages, published straight to the task queue by a client holding a real
broker login (mutual TLS + password): the worker must refuse each, and the task must never run.

The canary task `touch(path)` creates *path*; every probe waits until the worker is done with
its message (a signed sentinel sent after it has run and the queue is drained: tasks are
acknowledged late) and then checks that the file does not exist. The control sends a correctly
signed `touch` the same way and sees the file appear.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import uuid
from pathlib import Path

import pytest

import secprobe


class _CreatesFileWhenUnpickled:
    """A pickle gadget: unpickling it calls `open(path, "a")`, i.e. creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "a"))


def refused(sender, task_id: str, *paths: Path) -> None:
    sender.settle()
    ran = [str(p) for p in paths if p.exists()]
    assert not ran, f"the forged message had effects {ran}; worker log:\n{sender.log_lines(task_id)}"


@pytest.fixture
def target(probe_dir: Path) -> Path:
    return probe_dir / f"touched-{uuid.uuid4().hex}"


def test_control_a_correctly_signed_touch_creates_the_file(sender, target: Path) -> None:
    task_id = sender.send_signed(target)
    sender.settle()
    assert target.exists(), f"the signed task did not run; worker log:\n{sender.log_lines(task_id)}"


@pytest.mark.probe
def test_pickle_payload_is_neither_unpickled_nor_run(sender, target: Path, probe_dir: Path) -> None:
    unpickled = probe_dir / f"unpickled-{uuid.uuid4().hex}"
    task_id, headers, body = sender.message(target, extra_embed={"probe": _CreatesFileWhenUnpickled(unpickled)})
    sender.publish(task_id, headers, pickle.dumps(body, protocol=2), "application/x-python-serialize", "binary")
    refused(sender, task_id, target, unpickled)


@pytest.mark.probe
def test_unsigned_json_message_is_not_run(sender, target: Path) -> None:
    task_id, headers, body = sender.message(target)
    sender.publish(task_id, headers, json.dumps(body).encode(), "application/json", "utf-8")
    refused(sender, task_id, target)


@pytest.fixture(scope="module")
def stranger_signer(live) -> tuple[Path, Path]:
    """A signing certificate issued by the deployment's own CA, with the client's very name,
    that is not in the worker's cert store."""
    from cryptography import x509

    template = x509.load_pem_x509_certificate(live.layout.cert(live.client, "signing").read_bytes())
    now = secprobe.now()
    cert, key = secprobe.derive_leaf(template, live.issuer(), not_before=now - dt.timedelta(hours=1),
                                     not_after=now + dt.timedelta(days=30))
    return secprobe.write_pair(live.tmp / "stranger-signer", "signing", cert, key)


@pytest.mark.probe
def test_message_signed_by_a_key_outside_the_cert_store_is_not_run(sender, target: Path, stranger_signer) -> None:
    cert, key = stranger_signer
    task_id, headers, body = sender.message(target)
    sender.publish(task_id, headers, sender.signed(body, key, cert), "application/data", "utf-8")
    refused(sender, task_id, target)


@pytest.mark.probe
def test_signed_message_altered_after_signing_is_not_run(live, sender, target: Path, probe_dir: Path) -> None:
    """Signed to touch one file, altered to touch another: neither may appear."""
    from celery.utils.serialization import b64decode, b64encode

    task_id, headers, body = sender.message(target)
    layout = live.layout
    signed = sender.signed(body, layout.key(live.client, "signing"), layout.cert(live.client, "signing"))
    altered_target = probe_dir / f"altered-{uuid.uuid4().hex}"
    raw = b64decode(signed)
    assert str(target).encode() in raw
    tampered = b64encode(raw.replace(str(target).encode(), str(altered_target).encode()))
    headers["argsrepr"] = repr((str(altered_target),))
    sender.publish(task_id, headers, tampered, "application/data", "utf-8")
    refused(sender, task_id, target, altered_target)
