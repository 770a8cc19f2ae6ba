"""Filters of the celery_worker role: what the host already has, compared on the controller.

One ``ansible.builtin.find`` lists the configuration and application directories (mode,
owner, group, SHA-1 of every file); ``celery_worker_pending`` compares that with what the
role places there, so ``copy`` and ``file`` run only for what is missing or differs (the
checks ``copy`` makes itself: content, mode, owner, group), not once per file per run.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["FilterModule"]


def celery_worker_at(items, directory, mode, name=None, kind="file"):
    """Entries ``{path, src, mode, kind, label}`` for controller files placed in ``directory``:
    ``items`` are paths (placed under their base name) or dicts with ``src`` and ``name``."""
    out = []
    for item in items or []:
        if isinstance(item, str):
            src, rel = item, os.path.basename(item)
        else:
            src, rel = item["src"], item[name]
        out.append({"path": os.path.join(directory, rel), "src": src, "mode": mode, "kind": kind, "label": rel})
    return out


def _sha1(entry):
    if "content" in entry:
        return hashlib.sha1(str(entry["content"]).encode("utf-8")).hexdigest()
    try:
        with open(entry["src"], "rb") as f:
            return hashlib.sha1(f.read()).hexdigest()
    except OSError:
        return None  # copy reports the missing source itself


def celery_worker_pending(found, files, dirs, owner, group):
    """Paths among ``files`` (entries with path, mode, src or content) and ``dirs``
    ({path: mode}) that are missing on the host or differ from what the role places,
    given ``found`` (the ``files`` of a find with get_checksum)."""
    have = {f["path"]: f for f in found or []}

    def same(entry, path, mode, isdir):
        return (entry is not None and bool(entry.get("isdir")) == isdir and not entry.get("islnk")
                and entry.get("mode") == mode and entry.get("pw_name") == owner and entry.get("gr_name") == group)

    pending = [p for p, mode in dirs.items() if not same(have.get(p), p, mode, True)]
    for f in files:
        entry = have.get(f["path"])
        if not same(entry, f["path"], f["mode"], False) or entry.get("checksum") != _sha1(f):
            pending.append(f["path"])
    return pending


class FilterModule:
    def filters(self):
        return {"celery_worker_at": celery_worker_at, "celery_worker_pending": celery_worker_pending}
