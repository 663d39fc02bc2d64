"""Starting or reaching the Ray instance the workers run on (loopback only when local)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from fedsim.options import ConfigError
from fedsim.runtime.address import probe_address


def use_loopback_for_local_ray() -> None:
    """Make a Ray instance started from this process listen on 127.0.0.1 only.

    On Linux Ray otherwise registers its nodes under the machine's network address; a local
    simulation has no reason to use anything but loopback. Ray reads the switch from the
    environment (inherited by its own processes) and from a module constant in this process.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def ensure_ray(address: str = "") -> None:
    """Connect to ``address`` or start a local, loopback-only Ray instance, unless one runs."""
    if not address:
        use_loopback_for_local_ray()
    else:
        probe_address(address)  # even with Ray running here: the config names a dead address
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if address:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:
            raise ConfigError(f"runtime.address: cannot connect to {address!r} ({err})") from None
    else:
        # "local": always a new instance, never a cluster that happens to run on this machine.
        # Ray runs its workers at niceness 15 by default, so on a shared machine training
        # yielded to any other process (two workers measured no faster than one): use 0.
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 1,
            _system_config={"worker_niceness": 0},
            **kwargs,
        )
