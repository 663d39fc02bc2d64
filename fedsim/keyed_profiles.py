"""Keyed device profiles: a client's attributes as pure functions of (seed, client id).

With ``population.draws = "keyed"`` nothing is stored per client: the tier, speed, bandwidths,
dropout rate, availability parameters and periodic phase of a client are computed from its id
when a round asks for them, so a population of any size costs what its cohort costs, and a
client's value never depends on the population's size or on which other clients were asked.

Keys (:func:`fedsim.rng.uniform`, round slot used as the attribute's index): attribute column
``i`` (0-5, the order of ``_ATTRIBUTES`` in :mod:`fedsim.population`) draws from
``(seed, i, PROFILE, id)``, the device tier from ``(seed, 100, PROFILE, id)``, the device type
of a profiles CSV with a ``weight`` column from ``(seed, 101, PROFILE, id)`` and the periodic
phase from ``(seed, 0, PHASE, id)``. A lognormal's normal is Box-Muller on two such uniforms,
clipped to ``|z| <= 8`` (the bound the config validates float32 ranges with).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedsim.config_population import _Z_MAX, Dist
from fedsim.rng import Purpose, normal, uniform

#: Round slots of the keyed tier and device-type draws (the columnar draws use the same keys).
TIER_KEY, DEVICE_TYPE_KEY = 100, 101


def categorical(seed: int, key: int, weights: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Category index (uint8) of each client, with probabilities proportional to ``weights``."""
    w = np.asarray(weights, dtype=np.float64)
    cum = np.cumsum(w / w.sum())
    u = uniform(seed, key, Purpose.PROFILE, ids)
    return np.minimum(np.searchsorted(cum, u, side="right"), len(w) - 1).astype(np.uint8)


def draw(
    dist: Dist,
    seed: int,
    key: int,
    ids: np.ndarray,
    tier_of: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The float32 value of one attribute for clients ``ids`` (``tier_of`` gives their tiers)."""
    if dist.dist == "constant":
        return np.full(len(ids), dist.value, dtype=np.float32)
    if dist.dist == "uniform":
        u = uniform(seed, key, Purpose.PROFILE, ids)
        return (dist.low + (dist.high - dist.low) * u).astype(np.float32)
    if dist.dist == "lognormal":
        z = np.clip(normal(seed, key, Purpose.PROFILE, ids), -_Z_MAX, _Z_MAX)
        return (dist.median * np.exp(dist.sigma * z)).astype(np.float32)
    return np.asarray(dist.values, dtype=np.float32)[tier_of(ids)]


def phase(seed: int, ids: np.ndarray) -> np.ndarray:
    """Each client's position in the periodic availability cycle, float32 in [0, 1)."""
    return uniform(seed, 0, Purpose.PHASE, ids).astype(np.float32)
