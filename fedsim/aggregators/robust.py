"""Byzantine-robust aggregation rules over the round's per-client updates.

- ``median``: the coordinate-wise median (Yin et al. 2018).
- ``trimmed_mean``: per coordinate, drop the ``b = floor(trim_fraction * K)`` largest and
  ``b`` smallest values and average the rest (Yin et al. 2018).
- ``krum`` / ``multi_krum``: score each update by the sum of squared distances to its
  ``K - f - 2`` nearest others and keep the lowest-scoring one (Krum), or average the
  ``multi_krum_m`` lowest-scoring ones (Multi-Krum; 0 = ``K - f``) (Blanchard et al. 2017).
- ``norm_bounded_mean``: clip every update to L2 norm ``norm_bound``, then take the
  sample-weighted mean (Sun et al. 2019).

Weighting: the median, trimmed mean and Krum rules are unweighted, as in the papers (a weight
would let one client claim a large share by claiming many samples). The norm-bounded mean keeps
FedAvg's sample weights: clipping already bounds what one client can move.

Option checks that depend on the cohort (``check_cohort``) run at load time against
``server.clients_per_round``. A round where fewer updates arrive (dropouts, rejections) still
aggregates: Krum then scores with at least one neighbour, and Multi-Krum averages at most the
updates it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedsim.aggregators.base import Aggregator, PerClientAggregator
from fedsim.options import check, finite, in_range, non_negative, positive
from fedsim.registry import AGGREGATORS


class MedianAggregator(PerClientAggregator):
    """The coordinate-wise median of the updates (unweighted)."""

    def combine(self, updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        # Each coordinate's values contiguous: a faster partition than along axis 0.
        return np.median(np.ascontiguousarray(updates.T, dtype=np.float64), axis=1)


class TrimmedMeanAggregator(PerClientAggregator):
    """The coordinate-wise mean after dropping the ``b`` largest and ``b`` smallest values."""

    def __init__(self, trim_fraction: float) -> None:
        self.trim_fraction = trim_fraction

    def combine(self, updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        k = len(updates)
        b = math.floor(self.trim_fraction * k)
        if b == 0:
            return updates.astype(np.float64).mean(axis=0)
        part = np.partition(updates.astype(np.float64), (b, k - b - 1), axis=0)
        return part[b : k - b].mean(axis=0)


def krum_scores(updates: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Krum's score of each update: its summed squared distance to its nearest neighbours.

    ``K - f - 2`` neighbours (Blanchard et al. 2017), at least one when the round has fewer
    updates than the rule was configured for. A single update scores 0.
    """
    k = len(updates)
    if k == 1:
        return np.zeros(1)
    x = updates.astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, np.inf)
    neighbours = min(max(k - num_byzantine - 2, 1), k - 1)
    return np.partition(d2, neighbours - 1, axis=1)[:, :neighbours].sum(axis=1)


class KrumAggregator(PerClientAggregator):
    """The Multi-Krum mean of the ``m`` lowest-scoring updates; ``m = 1`` is Krum."""

    def __init__(self, num_byzantine: int, m: int) -> None:
        self.num_byzantine, self.m = num_byzantine, m  # m = 0: K - f, as in the paper

    def selected(self, updates: np.ndarray) -> np.ndarray:
        """Row indices of the chosen updates (ties broken by the lower row: client id)."""
        k = len(updates)
        m = self.m or k - self.num_byzantine
        scores = krum_scores(updates, self.num_byzantine)
        return np.argsort(scores, kind="stable")[: min(max(m, 1), k)]

    def combine(self, updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return updates[self.selected(updates)].astype(np.float64).mean(axis=0)


class NormBoundedMeanAggregator(PerClientAggregator):
    """The sample-weighted mean of the updates, each first clipped to L2 norm ``bound``."""

    def __init__(self, bound: float) -> None:
        self.bound = bound

    def combine(self, updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        x = updates.astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        scale = np.minimum(1.0, self.bound / np.maximum(norms, np.finfo(np.float64).tiny))
        w = np.asarray(weights, dtype=np.float64) * scale
        return (w @ x) / float(np.sum(weights))


def per_client_mean() -> PerClientAggregator:
    """The plain sample-weighted mean, formed from per-client updates (an unbounded clip)."""
    return NormBoundedMeanAggregator(math.inf)


@dataclass(frozen=True)
class MedianOptions:
    pass


@dataclass(frozen=True)
class TrimmedMeanOptions:
    trim_fraction: float = field(default=0.1, metadata=check(in_range(0, 0.5, hi_open=True)))


@dataclass(frozen=True)
class KrumOptions:
    num_byzantine: int = field(default=0, metadata=check(non_negative))

    def check_cohort(self, k: int) -> str | None:
        return _krum_cohort(self.num_byzantine, k)


@dataclass(frozen=True)
class MultiKrumOptions:
    num_byzantine: int = field(default=0, metadata=check(non_negative))
    multi_krum_m: int = field(default=0, metadata=check(non_negative))  # 0: K - f

    def check_cohort(self, k: int) -> str | None:
        err = _krum_cohort(self.num_byzantine, k)
        if err is None and self.multi_krum_m > k - self.num_byzantine:
            return (
                f"multi_krum_m: must be <= server.clients_per_round - num_byzantine "
                f"({k - self.num_byzantine}), got {self.multi_krum_m}"
            )
        return err


@dataclass(frozen=True)
class NormBoundedMeanOptions:
    norm_bound: float = field(default=1.0, metadata=check(positive, finite))


def _krum_cohort(f: int, k: int) -> str | None:
    if k > 2 * f + 2:
        return None
    return (
        f"num_byzantine: Krum needs server.clients_per_round > 2 * num_byzantine + 2; "
        f"with {k} clients per round num_byzantine must be <= {max((k - 3) // 2, 0)}, got {f}"
    )


@AGGREGATORS.register("median", MedianOptions)
def make_median(options: MedianOptions) -> Aggregator:
    return MedianAggregator()


@AGGREGATORS.register("trimmed_mean", TrimmedMeanOptions)
def make_trimmed_mean(options: TrimmedMeanOptions) -> Aggregator:
    return TrimmedMeanAggregator(options.trim_fraction)


@AGGREGATORS.register("krum", KrumOptions)
def make_krum(options: KrumOptions) -> Aggregator:
    return KrumAggregator(options.num_byzantine, 1)


@AGGREGATORS.register("multi_krum", MultiKrumOptions)
def make_multi_krum(options: MultiKrumOptions) -> Aggregator:
    return KrumAggregator(options.num_byzantine, options.multi_krum_m)


@AGGREGATORS.register("norm_bounded_mean", NormBoundedMeanOptions)
def make_norm_bounded_mean(options: NormBoundedMeanOptions) -> Aggregator:
    return NormBoundedMeanAggregator(options.norm_bound)
