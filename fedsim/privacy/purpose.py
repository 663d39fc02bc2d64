"""Keys of the privacy draws, so DP and secure-aggregation runs stay deterministic.

Every draw here is keyed like the rest of fedsim (``fedsim.rng``): by (seed, purpose, round,
client id). The values sit apart from :class:`fedsim.rng.Purpose` (1-99, and 1000 + those for
``rng.normal``) so that no privacy draw can coincide with a simulator draw.
"""

from __future__ import annotations

from enum import IntEnum


class PrivacyPurpose(IntEnum):
    POISSON = 101  # client-level Poisson sampling of the cohort
    CENTRAL_NOISE = 102  # the server's Gaussian noise on the clipped sum
    LOCAL_NOISE = 103  # a client's own noise (local DP)
    DISTRIBUTED_NOISE = 104  # a client's share of the central noise (under secure aggregation)
    CLIP_COUNT_NOISE = 105  # noise on the clipped-count query of adaptive clipping
    SECAGG_GRAPH = 106  # the SecAgg+ neighbour graph of a round
    SECAGG_KEYS = 107  # a client's key-agreement secret key and self-mask seed
    SECAGG_SHARES = 108  # the random coefficients of a client's Shamir polynomials
