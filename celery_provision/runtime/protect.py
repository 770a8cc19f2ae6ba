"""The envelope in a Celery app: signing what it sends, checking what its worker receives.

`secure(app)` is the one call an application makes after `app.config_from_object(...)`.
It reads `celery_provision_envelope` from the rendered configuration and

- wraps the app's task sender, so every task message (a producer's, and the chain steps,
  callbacks and retries a worker sends) carries an envelope signed with this identity's key;
- adds a worker consumer step that checks every task message before Celery sees it: a message
  that is unsigned, altered, re-labelled, signed by an unknown, removed or foreign signer, too
  old, a replay of a completed task, or asks for a task its signer may not call is
  acknowledged, logged with signer and reason, and never executed; where the signature held
  (the signer really asked), its caller gets a `SecurityError` result;
- records each completed task id in the Redis result backend (`DONE_PREFIX<id>`, kept as long
  as a message may be accepted), which is what makes replays fail across workers and restarts;
- registers the `celery-provision` serializer (a signed blob) for control messages and, where
  the configuration says so, results.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import bootsteps, signals, states
from celery.exceptions import ImproperlyConfigured, SecurityError
from celery.utils.imports import symbol_by_name
from kombu import serialization

from .envelope import DONE_PREFIX, HEADER, Refused, Signer, Trust, timestamp
from .transport import repair_redis_ack

__all__ = ["CONFIG", "CONTROL_MAX_AGE", "DONE_PREFIX", "RESULT_SERIALIZER", "SERIALIZER", "TASK_SERIALIZER",
           "secure"]

#: The configuration key the rendered module sets.
CONFIG = "celery_provision_envelope"
#: The serializer of task messages: JSON under a content type of its own, which only
#: `secure(app)` registers. An app that forgets the call cannot send (no such serializer)
#: and its worker does not start (it cannot accept it): the rendered configuration fails
#: closed rather than run unchecked JSON.
TASK_SERIALIZER = "celery-provision-json"
TASK_CONTENT_TYPE = "application/x-celery-provision-json"
#: The kombu serializers of signed blobs: control messages, and results where they are signed.
SERIALIZER = "celery-provision"
CONTENT_TYPE = "application/x-celery-provision"
RESULT_SERIALIZER = "celery-provision-result"
RESULT_CONTENT_TYPE = "application/x-celery-provision-result"
#: How long a worker waits before it requeues a message it cannot check yet.
REQUEUE_PAUSE = 1.0
#: How old a control message may be (a replayed `revoke` or `shutdown` is refused after it).
CONTROL_MAX_AGE = 300.0

log = logging.getLogger("celery_provision.runtime")


class RecordUnavailable(Exception):
    """The record of done tasks cannot be read now (the result backend is down): the message
    is neither run nor refused, but requeued."""


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} is not a list of names")
    return tuple(value)


def _policy(path: str, role: str) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...], tuple[str, ...]]:
    """The trust policy file of the deployment, as *role* uses it: what each signer may call
    (a worker's; others check no task), whose control messages and whose results it takes.
    A missing, unreadable or malformed file fails: there is no policy that trusts by default."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as exc:
        raise ValueError(f"policy {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"policy {path}: not JSON ({exc})") from None
    try:
        if not isinstance(doc, dict) or not isinstance(doc["allowed"], dict) or not isinstance(doc["control"], dict):
            raise ValueError("not a policy (allowed, control, results)")
        allowed = {str(k): _names(v, f"allowed[{k!r}]") for k, v in doc["allowed"].items()}
        control = _names(doc["control"].get(role, []), f"control[{role!r}]")
        results = _names(doc["results"], "results")
    except KeyError as exc:
        raise ValueError(f"policy {path}: lacks {exc.args[0]!r}") from None
    except ValueError as exc:
        raise ValueError(f"policy {path}: {exc}") from None
    return (allowed if role == "worker" else {}), control, results


class Runtime:
    """One app's signer, trust and record of completed tasks."""

    def __init__(self, app: Any, cfg: Mapping[str, Any]) -> None:
        try:
            self.signer = Signer.load(cfg["signer"], cfg["key"], cfg["cert"])
            allowed, control, results = _policy(cfg["policy"], str(cfg["role"]))
            self.trust = Trust(cfg["store"], cfg["ca"], allowed, float(cfg.get("max_age", 86400)))
            #: Who may sign what this host receives as control messages (a worker: operators'
            #: commands; an operator: workers' replies) and as signed results (workers).
            self.control, self.results = control, results
        except KeyError as exc:
            raise ImproperlyConfigured(f"{CONFIG} lacks {exc.args[0]!r}: render the configuration again") from None
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(f"{CONFIG}: {exc}") from None
        self.app = app

    # -- the record of completed task ids
    def _client(self) -> Any:
        backend = self.app.backend
        return getattr(backend, "client", None) if type(backend).__name__.startswith("Redis") else None

    def completed(self, task_id: str) -> str | None:
        """Why *task_id* may not run again on this deployment: `completed` (the record of done
        tasks, or a stored final result: Celery stores it before the record is written) or
        `revoked` (its stored result says so: Celery's revoke command stores it, and keeps the
        id in the worker's memory only); None when it may (and always without a Redis
        backend). One round trip."""
        client = self._client()
        if client is None:
            return None
        backend = self.app.backend
        try:
            done, meta = client.mget([DONE_PREFIX + task_id, backend.get_key_for_task(task_id)])
        except (OSError, *getattr(backend, "connection_errors", ())) as exc:
            raise RecordUnavailable(f"{type(exc).__name__}: {exc}") from None
        if done is not None:
            return "completed"
        if meta is not None:
            try:
                status = backend.decode_result(meta).get("status")
            except Exception:  # noqa: BLE001 - an unreadable result is no proof of revocation
                return None
            if status in states.READY_STATES:
                return "revoked" if status == states.REVOKED else "completed"
        return None

    def mark_completed(self, task_id: str, envelope: Any, eta: Any) -> None:
        """Record *task_id* as completed (or revoked) for as long as a replay of its message,
        signed in *envelope* with *eta*, could be accepted."""
        client = self._client()
        if client is None:
            return
        ttl = self.trust.max_age
        at = float(envelope.get("at", time.time())) if isinstance(envelope, Mapping) else time.time()
        if eta:
            ttl += max(0.0, timestamp(eta) - at)
        client.set(DONE_PREFIX + task_id, b"1", ex=max(1, int(ttl - (time.time() - at)) + 60))

    # -- refusal
    def refuse(self, message: Any, exc: Refused) -> None:
        """Log a refused task message and, when its signer really sent it, tell its caller."""
        headers = message.headers or {}
        task_id, name = headers.get("id", "?"), headers.get("task", "?")
        log.error("celery-provision refused task %s[%s] from %s: %s", name, task_id, exc.signer, exc.reason)
        if not (exc.authentic and task_id != "?" and not headers.get("ignore_result")):
            return
        from celery.app.task import Context

        props = message.properties or {}
        error = SecurityError(f"refused by {self.signer.name}: {exc}")
        # The caller may hold the id of a later step (a chain's last task): tell each.
        for tid in (task_id, *exc.task_ids):
            request = Context({"id": tid, "task": name, "reply_to": props.get("reply_to"),
                               "correlation_id": props.get("correlation_id") or task_id})
            try:
                self.app.backend.mark_as_failure(tid, error, request=request, call_errbacks=False)
            except Exception:  # noqa: BLE001 - the refusal stands even when the caller cannot be told
                log.exception("celery-provision could not store the refusal of %s", tid)

    def check(self, message: Any) -> None:
        """Refused unless the task message may run here."""
        headers = message.headers or {}
        body = message.body
        encoding = message.content_encoding or "utf-8"
        if isinstance(body, str):
            body = body.encode(encoding)
        if headers.get("compression"):
            from kombu.compression import decompress

            body = decompress(body, headers["compression"])
        if message.content_type != TASK_CONTENT_TYPE:
            raise Refused(f"content type {message.content_type!r} is not {TASK_CONTENT_TYPE}")
        try:
            decoded = json.loads(body)
        except ValueError:
            raise Refused("body is not valid JSON") from None
        signer = self.trust.verify_task(headers, message.content_type, encoding, body, decoded)
        task_id = headers.get("id")
        done = self.completed(str(task_id)) if task_id else None
        if done:
            raise Refused(f"replay: task {task_id} already {done}", signer)


def _sign_sends(amqp: Any, runtime: Runtime) -> None:
    """Make `amqp.send_task_message` the signing sender. A property of a subclass, not an
    instance attribute: Celery caches the sender in the instance, possibly while this very
    call runs (the configuration is read when the sender is first built)."""
    base = type(amqp)

    class SigningAMQP(base):  # type: ignore[misc, valid-type]
        @property
        def send_task_message(self) -> Callable[..., Any]:
            sender = self.__dict__.get("_celery_provision_sender")
            if sender is None:
                sender = _signed_sender(runtime, self._create_task_sender())
                self.__dict__["_celery_provision_sender"] = sender
            return sender

    SigningAMQP.__name__ = SigningAMQP.__qualname__ = f"Signing{base.__name__}"
    amqp.__class__ = SigningAMQP


def _signed_sender(runtime: Runtime, send: Callable[..., Any]) -> Callable[..., Any]:
    default_serializer = runtime.app.conf.task_serializer

    def send_task_message(producer: Any, name: str, message: Any, *args: Any, **kwargs: Any) -> Any:
        headers, _, body, _ = message
        extra = kwargs.pop("headers", None)
        if extra:
            headers.update(extra)
        content_type, encoding, data = serialization.dumps(body, kwargs.get("serializer") or default_serializer)
        if isinstance(data, str):
            data = data.encode(encoding)
        headers.pop(HEADER, None)
        headers[HEADER] = runtime.signer.sign_task(headers, content_type, encoding, data)
        return send(producer, name, message, *args, **kwargs)

    send_task_message.celery_provision = True  # type: ignore[attr-defined]
    return send_task_message


class EnvelopeStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker consumer step: every task message is checked before its task's strategy sees it."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        runtime: Runtime | None = getattr(c.app, "_celery_provision", None)
        if runtime is None:
            raise ImproperlyConfigured("celery_provision.runtime.secure(app) did not run: refusing to consume")
        for name, strategy in list(c.strategies.items()):
            if not getattr(strategy, "celery_provision", False):
                c.strategies[name] = _checked(runtime, strategy, c.connection_errors)


def _checked(runtime: Runtime, strategy: Callable[..., Any], errors: Any) -> Callable[..., Any]:
    def task_message_handler(message: Any, body: Any, ack: Callable[..., Any], reject: Any, callbacks: Any,
                             **kwargs: Any) -> Any:
        try:
            runtime.check(message)
        except Refused as exc:
            ack(log, errors)  # acknowledged: a refused message is never redelivered
            runtime.refuse(message, exc)
            return None
        except RecordUnavailable as exc:
            # Neither run unchecked nor lost: back to the queue, after a pause that keeps a
            # restart of the backend from becoming a busy loop of redeliveries.
            log.warning("celery-provision cannot read the record of done tasks (%s): task %s requeued",
                        exc, (message.headers or {}).get("id"))
            time.sleep(REQUEUE_PAUSE)
            reject(log, errors, True)
            return None
        return strategy(message, body, ack, reject, callbacks, **kwargs)

    task_message_handler.celery_provision = True  # type: ignore[attr-defined]
    return task_message_handler


def _register_serializers(runtime: Runtime) -> None:
    """`celery-provision-json` (task messages: JSON, the envelope is in their headers),
    `celery-provision` (control messages, at most `CONTROL_MAX_AGE` old) and
    `celery-provision-result` (results, as old as a task message may be): JSON signed as a
    blob by this process's identity. kombu's registry is per process: one identity each."""
    from kombu.utils.json import dumps, loads

    def encode(obj: Any) -> str:
        return runtime.signer.sign_blob(dumps(obj).encode()).decode()

    def decoder(max_age: float | None, signers: tuple[str, ...]) -> Callable[[Any], Any]:
        def decode(data: Any) -> Any:
            raw = data.encode() if isinstance(data, str) else bytes(data)
            try:
                _, inner = runtime.trust.open_blob(raw, max_age=max_age, signers=signers)
            except Refused as exc:
                log.error("celery-provision refused a signed message from %s: %s", exc.signer, exc.reason)
                raise SecurityError(str(exc)) from None
            return loads(inner)
        return decode

    serialization.register(TASK_SERIALIZER, dumps, loads, content_type=TASK_CONTENT_TYPE, content_encoding="utf-8")
    serialization.register(SERIALIZER, encode, decoder(CONTROL_MAX_AGE, runtime.control), content_type=CONTENT_TYPE,
                           content_encoding="utf-8")
    serialization.register(RESULT_SERIALIZER, encode, decoder(None, runtime.results), content_type=RESULT_CONTENT_TYPE,
                           content_encoding="utf-8")


def _install(app: Any) -> None:
    if getattr(app, "_celery_provision", None) is not None:
        return
    cfg = app.conf.get(CONFIG)
    if not isinstance(cfg, Mapping):
        raise ImproperlyConfigured(f"{CONFIG} is not set: use a configuration rendered by celery-provision")
    runtime = Runtime(app, cfg)
    app._celery_provision = runtime
    _sign_sends(app.amqp, runtime)
    _register_serializers(runtime)

    @signals.task_postrun.connect(weak=False)
    def _completed(sender: Any = None, task_id: str | None = None, state: str | None = None,
                   task: Any = None, **_: Any) -> None:
        if task is not None and task.app is app and task_id and state in states.READY_STATES:
            try:
                runtime.mark_completed(task_id, getattr(task.request, HEADER, None), task.request.eta)
            except Exception:  # noqa: BLE001 - a lost record weakens replay refusal, never the task
                log.exception("celery-provision could not record task %s as completed", task_id)

    @signals.task_revoked.connect(weak=False)
    def _revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
        """A revoked (or expired) task is done too: Celery's revoked ids live in the worker's
        memory only, so without a record a replay would run after a restart."""
        if sender is not None and getattr(sender, "app", None) is app and request is not None:
            try:
                # Celery sends the request's context (its headers as attributes).
                runtime.mark_completed(request.id, getattr(request, HEADER, None), getattr(request, "eta", None))
            except Exception:  # noqa: BLE001 - as above
                log.exception("celery-provision could not record task %s as revoked", request.id)


def _harden(control: Any) -> None:
    control.mailbox.serializer, control.mailbox.accept = SERIALIZER, [SERIALIZER]


def _sign_control(app: Any) -> None:
    """Control messages through the signed `celery-provision` serializer only. Celery builds
    the mailbox with the task serializer (plain JSON here) when `app.control` is first made,
    which may be while the configuration is read: the app's control class hardens every
    mailbox it makes, and one already made is hardened now."""
    existing = app.__dict__.get("control")
    if existing is not None:
        _harden(existing)
    base = symbol_by_name(app.control_cls)
    if getattr(base, "celery_provision", False):
        return

    class SigningControl(base):  # type: ignore[misc, valid-type]
        celery_provision = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _harden(self)

    app.control_cls = SigningControl


def secure(app: Any) -> None:
    """Sign every message *app* sends and check every task its worker receives, with the
    identity and trust of the rendered configuration (`celery_provision_envelope`). Call it
    once, after `app.config_from_object(...)`; where the configuration is not read yet, the
    rest waits for it."""
    if EnvelopeStep not in app.steps["consumer"]:
        app.steps["consumer"].add(EnvelopeStep)
    repair_redis_ack()  # a worker on Redis must get through a failover (transport.py)
    _sign_control(app)
    if app.configured:
        _install(app)
    else:
        app.on_after_configure.connect(lambda sender, **_: _install(sender), weak=False)
