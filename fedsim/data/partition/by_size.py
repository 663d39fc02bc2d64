"""Schemes with IID labels: equal parts (``iid``) and heavy-tailed sizes (``quantity_skew``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedsim.data.base import Partition
from fedsim.data.partition.common import (
    IID_STREAM,
    QUANTITY_STREAM,
    assign_in_order,
    check_labels,
    check_options,
    equal_sizes,
    partition_error,
    scheme_rng,
    skewed_sizes,
    total_samples,
)
from fedsim.options import at_least, check, finite, non_negative
from fedsim.registry import PARTITIONERS

# --- iid -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IIDOptions:
    """Options of the ``iid`` scheme; ``samples_per_client = 0`` hands out every sample."""

    samples_per_client: int = field(default=0, metadata=check(non_negative))


@PARTITIONERS.register("iid", IIDOptions)
def iid(options: IIDOptions, labels: np.ndarray, num_clients: int, seed: int) -> Partition:
    """Uniformly shuffled samples in equal parts (McMahan et al. 2017: 100 clients x 600).

    With ``samples_per_client = 0`` all samples are split and sizes differ by at most 1;
    otherwise each client gets exactly ``samples_per_client`` and the rest stay unassigned.
    """
    check_options(options)
    labels = check_labels(labels, num_clients)
    n = len(labels)
    total = total_samples(options.samples_per_client, num_clients, n)
    if total < num_clients:
        raise partition_error(
            "samples_per_client",
            f"0 (all samples) splits {n} samples across {num_clients} clients, leaving some empty",
        )
    rng = scheme_rng(seed, IID_STREAM)
    return assign_in_order(rng.permutation(n), equal_sizes(total, num_clients), n)


# --- quantity_skew -------------------------------------------------------------------------------


def _above_one(v: float) -> str | None:
    return None if v > 1 else f"must be > 1, got {v!r}"


@dataclass(frozen=True)
class QuantitySkewOptions:
    """Options of the ``quantity_skew`` scheme: IID labels, sizes from a heavy-tailed law."""

    law: Literal["lognormal", "powerlaw"] = "lognormal"
    sigma: float = field(default=1.0, metadata=check(finite, non_negative))
    exponent: float = field(default=3.0, metadata=check(finite, _above_one))
    min_samples: int = field(default=10, metadata=check(at_least(1)))
    samples_per_client: int = field(default=0, metadata=check(non_negative))


@PARTITIONERS.register("quantity_skew", QuantitySkewOptions)
def quantity_skew(
    options: QuantitySkewOptions, labels: np.ndarray, num_clients: int, seed: int
) -> Partition:
    """IID labels with skewed client sizes.

    Every client gets ``min_samples`` plus a share of the remaining T - num_clients *
    min_samples samples proportional to a weight w_k (largest remainders round up), where T is
    all samples (``samples_per_client = 0``) or num_clients * samples_per_client, so sizes sum
    to exactly T <= len(labels). ``lognormal``: w_k ~ lognormal(0, sigma), so log(size -
    min_samples) has standard deviation ~ sigma. ``powerlaw``: w_k Pareto with density
    proportional to w^-exponent for w >= 1. Samples are a uniform shuffle cut into those sizes.
    """
    check_options(options)
    labels = check_labels(labels, num_clients)
    n = len(labels)
    total = total_samples(options.samples_per_client, num_clients, n)
    if num_clients * options.min_samples > total:
        raise partition_error(
            "min_samples",
            f"{num_clients} clients x {options.min_samples} = "
            f"{num_clients * options.min_samples} samples, but only {total} are handed out",
        )
    rng = scheme_rng(seed, QUANTITY_STREAM)
    if options.law == "lognormal":
        weights = rng.lognormal(0.0, options.sigma, num_clients)
    else:
        # numpy's pareto(a) is Lomax; +1 gives the classic Pareto with density a / w^(a + 1).
        weights = rng.pareto(options.exponent - 1.0, num_clients) + 1.0
    if not np.isfinite(weights.sum()):
        raise partition_error(
            "exponent", f"{options.exponent} is so close to 1 that sizes overflow"
        )
    sizes = skewed_sizes(weights, total, options.min_samples)
    return assign_in_order(rng.permutation(n), sizes, n)
