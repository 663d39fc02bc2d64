"""Label-skew schemes: McMahan et al.'s label-sorted ``shards`` and Hsu et al.'s ``dirichlet``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedsim.data.base import Partition
from fedsim.data.partition.common import (
    DIRICHLET_STREAM,
    SHARDS_STREAM,
    check_labels,
    check_options,
    equal_sizes,
    partition_error,
    partition_from_owner,
    scheme_rng,
    skewed_sizes,
    total_samples,
)
from fedsim.options import at_least, check, finite, non_negative, positive
from fedsim.registry import PARTITIONERS

# --- shards --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardsOptions:
    """Options of the ``shards`` scheme; ``num_shards`` must be num_clients * shards_per_client."""

    num_shards: int = field(default=200, metadata=check(positive))
    shards_per_client: int = field(default=2, metadata=check(positive))


@PARTITIONERS.register("shards", ShardsOptions)
def shards(options: ShardsOptions, labels: np.ndarray, num_clients: int, seed: int) -> Partition:
    """Pathological non-IID split of McMahan et al. 2017: label-sorted shards, a few per client.

    Samples are sorted by label (ties in a seeded random order, not index order), cut into
    ``num_shards`` consecutive shards of ``len(labels) // num_shards`` samples, and every client
    gets ``shards_per_client`` shards drawn without replacement. The last
    ``len(labels) % num_shards`` samples of the sorted order (from the largest labels) are
    left unassigned.
    """
    check_options(options)
    labels = check_labels(labels, num_clients, "shards")
    n = len(labels)
    needed = num_clients * options.shards_per_client
    if options.num_shards != needed:
        raise partition_error(
            "num_shards",
            f"must equal num_clients x shards_per_client = {num_clients} x "
            f"{options.shards_per_client} = {needed}, got {options.num_shards}",
        )
    shard_size = n // options.num_shards
    if shard_size == 0:
        raise partition_error(
            "num_shards", f"{options.num_shards} shards of {n} samples would be empty"
        )
    rng = scheme_rng(seed, SHARDS_STREAM)
    shuffled = rng.permutation(n)
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shard_owner = np.empty(options.num_shards, dtype=np.int64)
    shard_owner[rng.permutation(options.num_shards)] = np.repeat(
        np.arange(num_clients), options.shards_per_client
    )
    owner = np.full(n, -1, dtype=np.int64)
    owner[by_label[: options.num_shards * shard_size]] = np.repeat(shard_owner, shard_size)
    return partition_from_owner(owner, num_clients)


# --- dirichlet -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirichletOptions:
    """Options of the ``dirichlet`` label-skew scheme (Hsu et al. 2019)."""

    alpha: float = field(default=0.5, metadata=check(finite, positive))
    sizes: Literal["equal", "lognormal"] = "equal"
    size_sigma: float = field(default=1.0, metadata=check(finite, non_negative))
    min_samples: int = field(default=10, metadata=check(at_least(1)))
    samples_per_client: int = field(default=0, metadata=check(non_negative))


def _client_sizes(
    law: str, sigma: float, min_samples: int, total: int, num_clients: int, rng: np.random.Generator
) -> np.ndarray:
    """Equal sizes, or ``min_samples`` plus a lognormal(0, sigma)-proportional share of the rest."""
    if law == "equal":
        sizes = equal_sizes(total, num_clients)
        if sizes.min() < min_samples:
            raise partition_error(
                "min_samples",
                f"{total} samples over {num_clients} clients give {sizes.min()} each, "
                f"below the floor of {min_samples}",
            )
        return sizes
    if num_clients * min_samples > total:
        raise partition_error(
            "min_samples",
            f"{num_clients} clients x {min_samples} = {num_clients * min_samples} samples, "
            f"but only {total} are handed out",
        )
    return skewed_sizes(rng.lognormal(0.0, sigma, num_clients), total, min_samples)


@PARTITIONERS.register("dirichlet", DirichletOptions)
def dirichlet(
    options: DirichletOptions, labels: np.ndarray, num_clients: int, seed: int
) -> Partition:
    """Label skew of Hsu et al. 2019: client k's label mix q_k ~ Dir(alpha * p).

    Algorithm, in the order random numbers are drawn:

    1. p = the global label frequencies; for every client draw q_k ~ Dir(alpha * p) over the
       classes present in ``labels`` (small alpha: few labels per client; large: close to p).
    2. Sizes: T = all samples (``samples_per_client = 0``) or num_clients * samples_per_client.
       ``equal``: T split with sizes differing by at most 1 (each must reach ``min_samples``);
       ``lognormal``: each client gets ``min_samples`` plus a share of the remaining
       T - num_clients * min_samples proportional to a lognormal(0, size_sigma) draw (largest
       remainders round up), so sizes sum to exactly T.
    3. Each class's samples are shuffled into a pool (one permutation of all samples, then a
       stable sort by label).
    4. Clients are visited in a random order. Client k draws its class counts
       ~ Multinomial(size_k, q_k); counts above what a class has left are cut to what is left,
       and the cut amount is drawn again from q_k renormalised over the classes that still
       have samples, until size_k is reached (if q_k is zero on all of those, in proportion to
       what is left). Its samples are then taken from the front of each class pool.

    Samples are taken without replacement, so none belongs to two clients; with T = all
    samples every sample belongs to exactly one client. Clients visited late can get a mix
    further from q_k when their preferred classes have run out.
    """
    check_options(options)
    labels = check_labels(labels, num_clients, "dirichlet")
    n = len(labels)
    total = total_samples(options.samples_per_client, num_clients, n)
    rng = scheme_rng(seed, DIRICHLET_STREAM)

    class_sizes = np.bincount(labels)
    num_classes = len(class_sizes)
    present = np.flatnonzero(class_sizes)
    q = np.zeros((num_clients, num_classes))
    if len(present):
        concentration = options.alpha * class_sizes[present] / n
        q[:, present] = rng.dirichlet(concentration, size=num_clients)

    sizes = _client_sizes(
        options.sizes, options.size_sigma, options.min_samples, total, num_clients, rng
    )
    shuffled = rng.permutation(n)
    # Class c's pool is pools[pool_start[c] : pool_start[c + 1]], in random order.
    pools = shuffled[np.argsort(labels[shuffled], kind="stable")]
    pool_start = np.concatenate([[0], np.cumsum(class_sizes)])
    visit = rng.permutation(num_clients)

    left = class_sizes.astype(np.int64)
    counts = np.zeros((num_clients, num_classes), dtype=np.int64)
    for k in visit:
        need = int(sizes[k])
        got = np.zeros(num_classes, dtype=np.int64)
        while need > 0:
            room = left - got
            weights = np.where(room > 0, q[k], 0.0)
            mass = weights.sum()
            if not mass > 0:
                weights, mass = room.astype(np.float64), float(room.sum())
            # Cutting at ``room`` exhausts at least one class whenever need stays unmet, so the
            # loop runs at most num_classes times.
            draw = np.minimum(rng.multinomial(need, weights / mass), room)
            got += draw
            need -= int(draw.sum())
        counts[k] = got
        left -= got

    owner = np.full(n, -1, dtype=np.int64)
    for c in range(num_classes):
        taken = counts[visit, c]
        start = pool_start[c]
        owner[pools[start : start + int(taken.sum())]] = np.repeat(visit, taken)
    return partition_from_owner(owner, num_clients)
