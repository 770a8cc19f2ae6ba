"""The signed envelope: what a sender signs, and what a receiver checks before it trusts a message.

Pure logic (no Celery): a `Signer` signs, a `Trust` verifies. A task message's envelope
binds the signer's name and key, the time it was signed, the message's headers (task name,
id, ETA, expiry, retries, parents, ...; every header but the envelope itself, the body's
compression and `x-*` annotations that brokers add in transit), its content type and
encoding, and a digest of the serialized body (args, kwargs and the canvas embed). Control
messages and results, whose body carries everything, are signed as a blob (`sign_blob`).
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DONE_PREFIX", "HEADER", "VERSION", "Refused", "Signer", "Trust", "may_call", "signatures",
           "task_payload", "timestamp"]

#: The key prefix of the record of completed task ids in the Redis result backend.
DONE_PREFIX = "celery-provision-done-"
#: The message header that carries a task message's envelope.
HEADER = "celery_provision_envelope"
VERSION = 1
#: How far in the future a signing time may lie (clocks that run a little ahead).
SKEW = 300.0
_TASK_CONTEXT = b"celery-provision/task/v1\0"
_BLOB_CONTEXT = b"celery-provision/blob/v1\0"
#: Headers that are not the sender's statement: the envelope, kombu's compression marker
#: (the digest is of the uncompressed body), kombu's Redis transport's mark of a message it
#: restored after a lost worker (`redelivered`) and what RabbitMQ adds in transit (`x-death`,
#: `x-delivery-count`, ...: every `x-*`).
_UNBOUND = frozenset({HEADER, "compression", "redelivered"})


class Refused(Exception):
    """A message that may not be trusted: *reason* says why, *signer* who claims to have
    signed it. *authentic* is true when the signature itself held (the signer really asked
    for this, but may not: an allow-list or age refusal), so its caller may be told."""

    def __init__(self, reason: str, signer: str = "?", *, authentic: bool = False,
                 task_ids: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason, self.signer, self.authentic, self.task_ids = reason, signer, authentic, task_ids

    def __str__(self) -> str:
        return f"signer {self.signer}: {self.reason}"


def _canonical(doc: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces (tuples and lists alike)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _bound_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in headers.items() if k not in _UNBOUND and not k.startswith("x-")}


def task_payload(envelope: Mapping[str, Any], headers: Mapping[str, Any], content_type: str,
                 content_encoding: str, body: bytes) -> bytes:
    """The bytes a task message's signature covers."""
    doc = {"v": envelope["v"], "signer": envelope["signer"], "kid": envelope["kid"], "at": envelope["at"],
           "headers": _bound_headers(headers), "content_type": content_type,
           "content_encoding": content_encoding, "body": hashlib.sha256(body).hexdigest()}
    return _TASK_CONTEXT + _canonical(doc)


def _kid(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:32]


def _sign(key: Any, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH), hashes.SHA256())
    raise TypeError(f"unsupported signing key {type(key).__name__}")


def _verify(public: Any, signature: bytes, data: bytes) -> None:
    """Raises InvalidSignature (or TypeError for a key type we do not sign with)."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, data)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256())
    else:
        raise TypeError(f"unsupported signing key {type(public).__name__}")


@dataclass
class Signer:
    """One identity's signing key and certificate (its `signing.key` and `signing.pem`)."""

    name: str
    key: Any
    cert: x509.Certificate
    kid: str = ""

    def __post_init__(self) -> None:
        self.kid = _kid(self.cert)

    @classmethod
    def load(cls, name: str, key_file: str | os.PathLike[str], cert_file: str | os.PathLike[str]) -> Signer:
        """The signer *name* from its key and certificate files."""
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        return cls(name, key, cert)

    def _envelope(self, at: float | None) -> dict[str, Any]:
        return {"v": VERSION, "signer": self.name, "kid": self.kid, "at": round(time.time() if at is None else at, 3)}

    def sign_task(self, headers: Mapping[str, Any], content_type: str, content_encoding: str, body: bytes,
                  *, at: float | None = None) -> dict[str, Any]:
        """The envelope of a task message (to be put in its headers under `HEADER`)."""
        env = self._envelope(at)
        env["sig"] = base64.b64encode(_sign(self.key, task_payload(env, headers, content_type,
                                                                    content_encoding, body))).decode()
        return env

    def sign_blob(self, data: bytes, *, at: float | None = None) -> bytes:
        """*data* wrapped in a signed envelope (control messages and results)."""
        env = self._envelope(at)
        env["data"] = data.decode()
        env["sig"] = base64.b64encode(_sign(self.key, _BLOB_CONTEXT + _canonical(env))).decode()
        return _canonical(env)


#: Celery's canvas tasks: they only call the signatures they are given (which are checked
#: like the rest), so whoever may call some task may call them.
CANVAS_BUILTINS = frozenset({"celery.chord_unlock", "celery.chord", "celery.group", "celery.chain",
                             "celery.accumulate", "celery.map", "celery.starmap", "celery.chunks"})


def may_call(name: str, patterns: Sequence[str]) -> bool:
    """Whether a signer allowed *patterns* may call task *name*."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns) or (bool(patterns) and name in CANVAS_BUILTINS)


def signatures(doc: Any) -> Iterator[tuple[str, str | None]]:
    """(task name, task id) of every signature a decoded message body holds besides its own:
    in its canvas embed (callbacks, errbacks, chain, chord) and in its arguments (a group's or
    chord's tasks), nested ones included. A signature is a mapping with `task` and
    `subtask_type`; its id, when it has one yet, is in its options."""
    if isinstance(doc, Mapping):
        if "subtask_type" in doc and isinstance(doc.get("task"), str):
            options = doc.get("options")
            task_id = options.get("task_id") if isinstance(options, Mapping) else None
            yield doc["task"], task_id if isinstance(task_id, str) else None
        for value in doc.values():
            yield from signatures(value)
    elif isinstance(doc, (list, tuple)):
        for value in doc:
            yield from signatures(value)


@dataclass
class _Known:
    cert: x509.Certificate
    public: Any


@dataclass
class Trust:
    """Whom a receiver believes: signers whose certificate is in the store directory
    (`<store>/<signer>.pem`, current and previous certificate during a rotation), issued by a
    CA of *ca_file* for code signing and valid now; and what each may call (*allowed*: signer
    name to glob patterns of task names; a signer without an entry may call nothing)."""

    store: Path
    ca_file: Path
    allowed: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_age: float = 86400.0
    _issuers: list[x509.Certificate] = field(default_factory=list, init=False, repr=False)
    _cache: dict[str, tuple[float, dict[str, _Known]]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.store, self.ca_file = Path(self.store), Path(self.ca_file)
        self._issuers = x509.load_pem_x509_certificates(self.ca_file.read_bytes())

    # -- who signed
    def _issued_here(self, cert: x509.Certificate, extra: Sequence[x509.Certificate] = ()) -> bool:
        for issuer in (*self._issuers, *extra):
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return False

    def _certs(self, signer: str) -> dict[str, _Known]:
        """The signer's trusted certificates by key id, re-read when the store file changes."""
        if not signer or "/" in signer or signer.startswith("."):
            raise Refused("not a signer name", signer)
        path = self.store / f"{signer}.pem"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise Refused("unknown signer (not in the signer store)", signer) from None
        cached = self._cache.get(signer)
        if cached and cached[0] == mtime:
            return cached[1]
        known: dict[str, _Known] = {}
        certs = x509.load_pem_x509_certificates(path.read_bytes())
        # The chain a signer's file carries: intermediates that a CA of ca.pem issued.
        chain = [c for c in certs if _is_ca(c) and self._issued_here(c)]
        for cert in certs:
            if not _is_ca(cert) and self._acceptable(cert, signer, chain):
                known[_kid(cert)] = _Known(cert, cert.public_key())
        self._cache[signer] = (mtime, known)
        return known

    def _acceptable(self, cert: x509.Certificate, signer: str, chain: Sequence[x509.Certificate]) -> bool:
        """Issued here (by a CA of ca.pem, or an intermediate it issued), to *signer*, for code
        signing (never a TLS certificate)."""
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cn or cn[0].value != signer or not self._issued_here(cert, chain):
            return False
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return False
        return ExtendedKeyUsageOID.CODE_SIGNING in eku and ExtendedKeyUsageOID.CLIENT_AUTH not in eku

    def _check(self, env: Mapping[str, Any], payload: Callable[[], bytes], now: float) -> str:
        """The signer of an envelope whose signature over *payload* holds, or Refused."""
        try:
            signer, kid, at, sig = env["signer"], env["kid"], float(env["at"]), base64.b64decode(env["sig"])
            if env["v"] != VERSION:
                raise Refused(f"envelope version {env['v']!r} is not {VERSION}", str(signer))
        except (KeyError, TypeError, ValueError):
            raise Refused("malformed envelope", str(env.get("signer", "?")) if isinstance(env, Mapping) else "?") from None
        known = self._certs(str(signer)).get(str(kid))
        if known is None:
            raise Refused("certificate not trusted (unknown key, not issued by the deployment's CA "
                          "for signing, or removed from the store)", signer)
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        if not known.cert.not_valid_before_utc <= moment <= known.cert.not_valid_after_utc:
            raise Refused("certificate expired or not yet valid", signer)
        try:
            _verify(known.public, sig, payload())
        except (InvalidSignature, TypeError):
            raise Refused("signature does not match the message (altered, or signed by someone else)", signer) from None
        if at > now + SKEW:
            raise Refused("signed in the future", signer, authentic=True)
        return str(signer)

    # -- task messages
    def verify_task(self, headers: Mapping[str, Any], content_type: str, content_encoding: str, body: bytes,
                    decoded: Any = None, *, now: float | None = None) -> str:
        """The signer of a task message that may run here, or Refused. *decoded* is its body
        (args, kwargs, embed): every task it asks for must be allowed too."""
        now = time.time() if now is None else now
        env = headers.get(HEADER)
        if not isinstance(env, Mapping):
            raise Refused("unsigned (no envelope)")
        signer = self._check(env, lambda: task_payload(env, headers, content_type, content_encoding, body), now)
        at = float(env["at"])
        patterns = self.allowed.get(signer, ())
        for name in (str(headers.get("task")), *(n for n, _ in signatures(decoded))):
            if not may_call(name, patterns):
                ids = tuple(i for _, i in signatures(decoded) if i)
                raise Refused(f"may not call {name}", signer, authentic=True, task_ids=ids)
        delay = max(0.0, timestamp(headers.get("eta")) - at) if headers.get("eta") else 0.0
        if now - at > self.max_age + delay:
            raise Refused(f"signed {now - at:.0f} s ago, more than the maximum age {self.max_age:.0f} s",
                          signer, authentic=True)
        return signer

    # -- blobs (control messages, results)
    def open_blob(self, data: bytes, *, max_age: float | None = None, signers: Sequence[str] | None = None,
                  now: float | None = None) -> tuple[str, bytes]:
        """(signer, data) of a signed blob, or Refused; *signers*: who may have signed it (None:
        any signer of the store)."""
        now = time.time() if now is None else now
        try:
            env = json.loads(data)
            if not isinstance(env, dict):
                raise TypeError
            inner = env.pop("data")
            sig = env.pop("sig")
        except (ValueError, TypeError, KeyError):
            raise Refused("malformed envelope") from None
        env_signed = {**env, "data": inner}
        signer = self._check({**env, "sig": sig}, lambda: _BLOB_CONTEXT + _canonical(env_signed), now)
        if signers is not None and signer not in signers:
            raise Refused("may not send this kind of message", signer, authentic=True)
        limit = self.max_age if max_age is None else max_age
        if now - float(env["at"]) > limit:
            raise Refused(f"signed more than {limit:.0f} s ago", signer, authentic=True)
        return signer, str(inner).encode()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def timestamp(value: Any) -> float:
    """A header's ISO 8601 time as a Unix time (naive means UTC); 0 when it is not one."""
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()

