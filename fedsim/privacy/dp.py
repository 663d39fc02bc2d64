"""Client-level differential privacy for federated averaging: clipping, noise, sampling.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"):
each sampled client's update (model delta) is clipped to L2 norm C in the worker; the server adds
Gaussian noise N(0, (z C)^2 I) to the sum of the clipped updates once per round and divides by
the *expected* cohort size q N, never by the number that reported, so that adding or removing one
client moves the average by at most C / (q N) whatever the cohort. The cohort is a Poisson sample
(each client independently with probability q), which is what the subsampled-Gaussian accountant
in :mod:`fedsim.privacy.accounting` assumes.

Adaptive clipping follows Andrew et al. 2021 ("Differentially Private Learning with Adaptive
Clipping"): the clip norm tracks a target quantile of the update norms by a geometric step on a
noised count of the clients whose update was not clipped.

Every draw is keyed by (seed, purpose, round, client id), so DP runs are deterministic and do
not depend on which worker handled which client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fedsim.privacy.purpose import PrivacyPurpose
from fedsim.rng import generator, uniform

#: Clipping scales to (1 - CLIP_MARGIN) * C: float rounding of any norm computation (pairwise
#: sums, BLAS dot) is far below this, so a clipped update's norm never reads above C.
CLIP_MARGIN = 1e-12


def clip_updates(deltas: np.ndarray, clip_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale each update (row) to L2 norm at most ``clip_norm``.

    ``deltas`` is one update (P,) or a stack (K, P). Returns the clipped updates in float64 and
    each update's norm before clipping (what adaptive clipping counts). Updates already within
    the bound are returned unchanged.
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}")
    d = np.asarray(deltas, dtype=np.float64)
    rows = np.atleast_2d(d)
    norms = np.linalg.norm(rows, axis=1)
    bound = clip_norm * (1.0 - CLIP_MARGIN)
    over = norms > bound
    scale = np.ones(len(rows))
    scale[over] = bound / norms[over]
    clipped = rows * scale[:, None]
    return clipped.reshape(d.shape), norms.reshape(d.shape[:-1])


def gaussian_noise(
    shape: int | tuple[int, ...], stddev: float, seed: int, *keys: int
) -> np.ndarray:
    """Gaussian noise N(0, stddev^2) of ``shape``, determined by ``(seed, *keys)`` alone."""
    if stddev < 0:
        raise ValueError(f"stddev must be >= 0, got {stddev!r}")
    return stddev * generator(seed, *keys).standard_normal(shape)


def central_noise(
    num_parameters: int, noise_multiplier: float, clip_norm: float, seed: int, round_: int
) -> np.ndarray:
    """The server's noise on the round's clipped sum: N(0, (z C)^2) per coordinate."""
    return gaussian_noise(
        num_parameters, noise_multiplier * clip_norm, seed, PrivacyPurpose.CENTRAL_NOISE, round_
    )


def client_noise(
    client_ids: np.ndarray,
    num_parameters: int,
    stddev: float,
    seed: int,
    round_: int,
    purpose: int = PrivacyPurpose.LOCAL_NOISE,
) -> np.ndarray:
    """Each client's own noise vector (K, P), keyed by its id: the same on any worker.

    ``purpose`` is ``LOCAL_NOISE`` for local DP, ``DISTRIBUTED_NOISE`` for a client's share of
    the central noise under secure aggregation.
    """
    ids = np.asarray(client_ids, dtype=np.int64)
    out = np.empty((len(ids), num_parameters), dtype=np.float64)
    for i, cid in enumerate(ids):
        out[i] = gaussian_noise(num_parameters, stddev, seed, purpose, round_, int(cid))
    return out


def distributed_noise_stddev(noise_multiplier: float, clip_norm: float, min_clients: int) -> float:
    """Per-client noise so that any ``min_clients`` reports sum to noise of std >= z C.

    Gaussians add in variance: m >= min_clients clients each adding N(0, (z C)^2 / min_clients)
    give N(0, (z C)^2 m / min_clients). Under secure aggregation, make ``min_clients`` the least
    number of masked inputs a round may unmask (``secagg.unmask(..., min_inputs=min_clients)``
    aborts below it), so the accountant's z is a lower bound on every released round's.
    """
    if min_clients < 1:
        raise ValueError(f"min_clients must be >= 1, got {min_clients!r}")
    return noise_multiplier * clip_norm / math.sqrt(min_clients)


def noisy_average(
    clipped_sum: np.ndarray,
    *,
    noise_multiplier: float,
    clip_norm: float,
    expected_cohort: float,
    seed: int,
    round_: int,
) -> np.ndarray:
    """DP-FedAvg's server step: (sum of clipped updates + N(0, (z C)^2 I)) / (q N).

    The denominator is the expected cohort size q N, fixed for the run (McMahan et al. 2018,
    the "fixed-denominator" estimator), so the sensitivity of the average is C / (q N).
    """
    if not expected_cohort > 0:
        raise ValueError(f"expected_cohort must be > 0, got {expected_cohort!r}")
    total = np.asarray(clipped_sum, dtype=np.float64)
    noise = central_noise(total.size, noise_multiplier, clip_norm, seed, round_)
    return (total + noise.reshape(total.shape)) / expected_cohort


def poisson_sample(candidates: np.ndarray, rate: float, seed: int, round_: int) -> np.ndarray:
    """The clients of ``candidates`` included this round, each independently with prob ``rate``.

    A client's inclusion depends only on (seed, round, its id): never on the other candidates,
    their order, or the worker. Returns the included ids in the order given.
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    ids = np.asarray(candidates, dtype=np.int64)
    return ids[uniform(seed, round_, PrivacyPurpose.POISSON, ids) < rate]


def update_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """Noise multiplier z_delta left for the update when adaptive clipping spends some budget.

    Andrew et al. 2021 (Sec. 3): releasing the clipped count with noise std sigma_b and the update
    with z_delta is, for the accountant, one Gaussian mechanism of noise multiplier
    z = (z_delta^-2 + (2 sigma_b)^-2)^(-1/2); solved for z_delta. Needs 2 sigma_b > z.
    """
    if noise_multiplier == 0:
        return 0.0
    if not 2 * count_stddev > noise_multiplier:
        raise ValueError(
            f"adaptive clipping needs 2 * count_stddev > noise_multiplier, got count_stddev "
            f"{count_stddev!r} and noise_multiplier {noise_multiplier!r}"
        )
    return (noise_multiplier**-2 - (2 * count_stddev) ** -2) ** -0.5


@dataclass(frozen=True)
class AdaptiveClip:
    """Adaptive clip norm of Andrew et al. 2021: tracks the ``target_quantile`` of update norms.

    Each round, b = (#clients with norm <= C + N(0, sigma_b^2)) / (q N) estimates the fraction
    unclipped, and C <- C exp(-eta (b - gamma)) (their geometric update, Alg. 1). The count's
    noise is keyed by the round, so the sequence of clip norms is deterministic.
    """

    clip_norm: float
    target_quantile: float = 0.5  # gamma
    learning_rate: float = 0.2  # eta_C
    count_stddev: float = 0.0  # sigma_b; the paper suggests expected cohort / 20

    def update(
        self, count_unclipped: int, expected_cohort: float, seed: int, round_: int
    ) -> AdaptiveClip:
        """The state for the next round, from this round's count of unclipped updates."""
        noise = gaussian_noise((), self.count_stddev, seed, PrivacyPurpose.CLIP_COUNT_NOISE, round_)
        fraction = (count_unclipped + float(noise)) / expected_cohort
        step = math.exp(-self.learning_rate * (fraction - self.target_quantile))
        return replace(self, clip_norm=self.clip_norm * step)


def count_unclipped(norms: np.ndarray, clip_norm: float) -> int:
    """Number of updates whose norm was within ``clip_norm`` (the clipped-count query's input)."""
    return int(np.count_nonzero(np.asarray(norms) <= clip_norm))
