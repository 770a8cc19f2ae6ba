"""AMQP 0-9-1 login on the wire: which SASL mechanisms a server offers, and what it answers
to a client that insists on one.

A real client (py-amqp, kombu) never sends a mechanism the server did not offer: it gives up
on its own side ("Couldn't find appropriate auth mechanism"), so it cannot show what the
server would do. `attempt` speaks the handshake itself: it reads Connection.Start, sends
Connection.Start-Ok with the mechanism it was told to use, offered or not, and reports the
server's next move. Only the frames of that handshake are built here; field tables, short and
long strings are py-amqp's own encoding (`amqp.serialization`). No other dependency, so the
Molecule verify step runs this very file on its test hosts.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from amqp.serialization import dumps, loads

__all__ = ["HEADER", "Answer", "attempt"]

HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_METHOD, _FRAME_END = 1, b"\xce"
_START, _START_OK, _SECURE, _TUNE, _CLOSE = (10, 10), (10, 11), (10, 20), (10, 30), (10, 50)
_NAMES = {_SECURE: "secure", _TUNE: "tune", _CLOSE: "close"}


@dataclass(frozen=True)
class Answer:
    """The server's side of one login attempt.

    `offered`: the mechanisms of Connection.Start, in the server's order. `reply`: what came
    after our Start-Ok: "tune" (the login was accepted: the next step is Tune-Ok/Open),
    "secure" (the mechanism was accepted and the server sent a challenge), "close" (a
    Connection.Close, with `code` and `text`) or "eof" (the server closed the connection
    without a word). `seconds`: how long that answer took."""

    offered: tuple[str, ...]
    mechanism: str
    reply: str
    code: int | None = None
    text: str = ""
    seconds: float = 0.0

    @property
    def logged_in(self) -> bool:
        return self.reply == "tune"

    def __str__(self) -> str:
        said = f"Connection.Close {self.code} {self.text!r}" if self.reply == "close" else \
            {"eof": "closed without a Connection.Close", "tune": "Connection.Tune (logged in)",
             "secure": "Connection.Secure (a challenge: mechanism accepted)"}[self.reply]
        return (f"offered {' '.join(self.offered) or '(none)'}; {self.mechanism} answered with "
                f"{said} after {self.seconds:.1f} s")


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_method(sock: socket.socket) -> tuple[tuple[int, int], bytes] | None:
    """The next method frame on channel 0 as ((class, method), arguments), or None at EOF."""
    while True:
        head = _read_exact(sock, 7)
        if head is None:
            return None
        kind, channel, size = struct.unpack(">BHI", head)
        payload = _read_exact(sock, size + 1)
        if payload is None:
            return None
        if payload[-1:] != _FRAME_END:
            raise ValueError(f"not an AMQP frame (frame end {payload[-1:]!r})")
        if kind == _FRAME_METHOD and channel == 0:
            class_id, method_id = struct.unpack(">HH", payload[:4])
            return (class_id, method_id), payload[4:-1]


def _send_method(sock: socket.socket, method: tuple[int, int], argsig: str, args: list) -> None:
    payload = struct.pack(">HH", *method) + dumps(argsig, args)
    sock.sendall(struct.pack(">BHI", _FRAME_METHOD, 0, len(payload)) + payload + _FRAME_END)


def attempt(sock: socket.socket, mechanism: str, response: bytes = b"") -> Answer:
    """On a connected *sock* (plain or TLS): the protocol header, then Start-Ok with
    *mechanism* and its initial *response* (ANONYMOUS sends none). The client announces
    `authentication_failure_close`, so a refused login is a Connection.Close 403, not silence."""
    sock.sendall(HEADER)
    start = _read_method(sock)
    if start is None:
        raise ConnectionError("the server closed the connection before Connection.Start")
    method, args = start
    if method != _START:
        raise ConnectionError(f"expected Connection.Start, got class/method {method}")
    (_major, _minor, _properties, mechanisms, _locales), _ = loads("ooFSS", args, 0)
    offered = tuple(mechanisms.split()) if isinstance(mechanisms, str) else \
        tuple(m.decode() for m in mechanisms.split())
    properties = {"product": "celery-provision security probe",
                  "capabilities": {"authentication_failure_close": True}}
    began = time.monotonic()
    _send_method(sock, _START_OK, "FsSs", [properties, mechanism, response, "en_US"])
    try:
        answer = _read_method(sock)
    except ConnectionResetError:
        answer = None
    seconds = time.monotonic() - began
    if answer is None:
        return Answer(offered, mechanism, "eof", seconds=seconds)
    method, args = answer
    if method == _CLOSE:
        (code, text, _class, _method), _ = loads("BsBB", args, 0)
        return Answer(offered, mechanism, "close", code, text, seconds)
    if method in _NAMES:
        return Answer(offered, mechanism, _NAMES[method], seconds=seconds)
    raise ConnectionError(f"unexpected answer to Connection.Start-Ok: class/method {method}")
