"""One local Ray instance for the whole test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Every Ray instance of the tests (and the subprocesses they start) listens on loopback only.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # Four logical CPUs so four one-CPU workers can be scheduled on a two-core machine.
        ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
