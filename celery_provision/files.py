"""Safe file handling: atomic writes with restrictive modes, private directories, a run lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import ProvisionError

__all__ = ["write_atomic", "private_dir", "locked", "read_bytes"]


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create *path* (and parents) if missing; a new directory gets *mode*."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:  # one stat when it already exists
        missing.append(probe)
        probe = probe.parent
    try:
        for directory in reversed(missing):  # parents too: mkdir(parents=True) ignores mode for them
            directory.mkdir(mode=mode, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot create directory: {exc.strerror}", where=str(path)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ProvisionError("directory is not writable", where=str(path))
    return path


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, durable: bool | None = None) -> None:
    """Write *data* to *path* through a temp file in the same directory, then rename.

    The temp file is created with *mode* from the start, so a key is never readable by
    others, and a crash leaves either the old file or the new one, never half of either.
    *durable* (default: for secrets, i.e. modes without group/other bits) fsyncs before the
    rename; callers that can regenerate a file (leaf keys, checked against state.json on
    the next run) pass False, since one fsync per file dominates bulk issuance.
    """
    if durable is None:
        durable = mode & 0o077 == 0
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:  # make it durable before it replaces anything
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ProvisionError(f"cannot write file: {exc.strerror}", where=str(path)) from None


def read_bytes(path: Path, what: str) -> bytes:
    """Read a file the user gave us, turning OS errors into one readable line."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProvisionError(f"{what} not found", where=str(path)) from None
    except IsADirectoryError:
        raise ProvisionError(f"{what} is a directory, expected a file", where=str(path)) from None
    except OSError as exc:
        raise ProvisionError(f"cannot read {what}: {exc.strerror}", where=str(path)) from None


#: The lock files this process holds: `locked` is re-entrant, so an operation holding the PKI's
#: lock may call one that takes the credentials' lock even when both are one directory.
_HELD: set[Path] = set()


@contextlib.contextmanager
def locked(directory: Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold an exclusive lock on *directory* so two runs cannot interleave their writes."""
    lock_path = directory / ".lock"
    held = lock_path.resolve()
    if held in _HELD:
        yield
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ProvisionError(f"cannot create lock file: {exc.strerror}", where=str(lock_path)) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise ProvisionError(
                        "another celery-provision run holds the lock", where=str(lock_path)
                    ) from None
                time.sleep(0.05)
        _HELD.add(held)
        try:
            yield
        finally:
            _HELD.discard(held)
    finally:
        os.close(fd)  # closing releases the lock
