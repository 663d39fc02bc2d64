"""Memory a run will need, checked before anything is allocated: sizes refused with the size named.

The estimates are lower bounds of what the arrays take (temporary copies come on top), so a
refused size could never have run here; a size just under the limit may still fail later.
"""

from __future__ import annotations

import math
import os
from typing import Any

from fedsim.options import ConfigError

#: Bytes per client of the per-client arrays a dataset builds besides the population's columns
#: (sample counts drawn as float64, then cut and stored as integers).
DATASET_BYTES_PER_CLIENT = 24


def machine_bytes() -> int:
    """Physical memory of this machine in bytes (a large number where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 1 << 50


def format_bytes(n: float) -> str:
    """``1.5 GB``-style size (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"


def require(key: str, nbytes: float, what: str) -> None:
    """ConfigError naming ``key`` if ``nbytes`` (for ``what``) exceed this machine's memory."""
    limit = machine_bytes()
    if not math.isfinite(nbytes) or nbytes > limit:
        raise ConfigError(
            f"{key}: {what} would take {format_bytes(nbytes)}, more than this machine's memory "
            f"({format_bytes(limit)})"
        )


def population_bytes(
    num_clients: int,
    drawn_columns: int,
    tiers: bool,
    periodic: bool,
    dataset_bytes_per_client: int = DATASET_BYTES_PER_CLIENT,
) -> int:
    """Bytes of a population's stored columns: float32 per drawn attribute, uint8 tier,
    float32 phase, plus what the dataset keeps per client (0 for data made from the id)."""
    per_client = 4 * drawn_columns + (1 if tiers else 0) + (4 if periodic else 0)
    return num_clients * (per_client + dataset_bytes_per_client)


def model_bytes(num_parameters: int, stacked_clients: int) -> int:
    """Bytes of one training step: the float32 global model, ``stacked_clients`` float32
    copies being trained together, and float64 sums for aggregation."""
    return num_parameters * (4 + 4 * stacked_clients + 2 * 8)


def check_model(cfg: Any, model: Any) -> None:
    """Refuse a model (of a Config's run) whose training step cannot fit in memory, before its
    first array: the global model, a chunk's stacked clients and the float64 sums."""
    cohort = math.ceil(cfg.server.clients_per_round * cfg.server.over_selection)
    stacked = max(1, math.ceil(cohort / cfg.runtime.chunks))
    require(
        "model",
        model_bytes(model.num_parameters, stacked),
        f"{cfg.model.name!r} with {model.num_parameters} parameters ({stacked} clients a chunk)",
    )


#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(trim_bytes: int = 256 << 20, mmap_bytes: int = 32 << 20) -> bool:
    """Let this process's allocator reuse freed memory instead of returning it to the OS.

    A worker allocates and frees the same large temporaries every call (a stack's data, its
    models); glibc's adaptive thresholds can hand them back to the OS after each use, so every
    call faults them in again (W2 on one worker: 384,000 minor page faults in 12 rounds
    against 28,000 with fixed thresholds, about a fifth of its training time). Fixed thresholds
    keep up to ``trim_bytes`` of freed memory per process for reuse. Returns whether they were
    set (False where the C library is not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_bytes)
    )
