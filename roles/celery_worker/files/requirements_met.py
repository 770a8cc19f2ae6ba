"""Exit 0 if this interpreter's environment meets every requirement given, with the
dependencies of each (extras included), as pip would find them already satisfied; else
print the first unmet one and exit 1. Run by the celery_worker role with the virtualenv's
python before pip, which it then skips when nothing is missing (a pip run costs seconds)."""

import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors packaging; a venv made with `-m venv` has pip
    from pip._vendor.packaging.requirements import Requirement


def unmet(req, extra="", seen=None):
    seen = set() if seen is None else seen
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
        return None
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        return f"{req} (not installed)"
    if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
        return f"{req} (installed: {dist.version})"
    key = (dist.metadata["Name"].lower(), tuple(sorted(req.extras)))
    if key in seen:
        return None
    seen.add(key)
    for dep in dist.requires or []:
        dep = Requirement(dep)
        for wanted in [""] + sorted(req.extras):
            if dep.marker is None or dep.marker.evaluate({"extra": wanted}):
                why = unmet(Requirement(str(dep).split(";", maxsplit=1)[0]), "", seen)
                if why:
                    return why
                break
    return None


for arg in sys.argv[1:]:
    why = unmet(Requirement(arg))
    if why:
        print(why)
        sys.exit(1)
