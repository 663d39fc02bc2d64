"""One local Ray instance for the whole test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # Four logical CPUs so four one-CPU workers can be scheduled on a two-core machine.
        ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
