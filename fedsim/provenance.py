"""How a result was made: code version, libraries, machine, BLAS threads, command line.

Written into every run's ``summary.json`` (key ``provenance``), so a number in a table can be
traced to the code and the machine that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Libraries whose versions can change results; those not installed are left out.
LIBRARIES = ("numpy", "pandas", "ray", "torch", "dp-accounting", "scipy", "threadpoolctl")


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """A JSON-ready record of the code, libraries, machine and command of this process."""
    from threadpoolctl import threadpool_info

    versions = {}
    for name in ("fedsim", *LIBRARIES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    blas = [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
        for info in threadpool_info()
    ]
    return {
        "fedsim_commit": git_commit(),
        "python": platform.python_version(),
        "versions": versions,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "blas": blas,  # this process's; training and evaluation pin BLAS to one thread
        "training_blas_threads": 1,
        "command": portable_command(sys.argv if argv is None else argv),
    }


def portable_command(argv: list[str]) -> list[str]:
    """The command line as anyone can repeat it: the program by its name (``fedsim``, not the
    path of this machine's install), paths under the working directory relative to it."""
    if not argv:
        return []
    program = Path(argv[0]).name
    if program == "__main__.py":
        program = "fedsim"
    cwd = Path.cwd()
    out = [program]
    for arg in argv[1:]:
        path = Path(arg)
        if path.is_absolute() and path.is_relative_to(cwd):
            arg = str(path.relative_to(cwd))
        out.append(arg)
    return out


def git_commit() -> str | None:
    """The commit of the fedsim checkout this code runs from, ``+dirty`` if it has changes."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None  # an installed package, not a checkout
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
