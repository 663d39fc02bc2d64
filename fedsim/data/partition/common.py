"""Machinery shared by the partition schemes: keyed streams, checks, sizes and assignment."""

from __future__ import annotations

import dataclasses

import numpy as np

from fedsim.data.base import Partition
from fedsim.options import ConfigError
from fedsim.rng import Purpose, generator

# One constant per scheme, so schemes draw independent streams from the same experiment seed.
# Changing one changes every partition of that scheme.
IID_STREAM = 1
SHARDS_STREAM = 2
DIRICHLET_STREAM = 3
QUANTITY_STREAM = 4


def scheme_rng(seed: int, stream: int) -> np.random.Generator:
    """The random stream of one scheme, keyed by the experiment seed and the scheme constant."""
    return generator(seed, Purpose.PARTITION, stream)


def partition_error(key: str, message: str) -> ConfigError:
    """A config error naming the key ``partition.<key>``."""
    return ConfigError(f"partition.{key}: {message}")


def check_options(options: object) -> None:
    """Run the field checks also when options were built directly rather than from TOML."""
    for f in dataclasses.fields(options):  # type: ignore[arg-type]
        for chk in f.metadata.get("checks", ()):
            err = chk(getattr(options, f.name))
            if err:
                raise partition_error(f.name, err)


def check_labels(labels: np.ndarray, num_clients: int, scheme: str | None = None) -> np.ndarray:
    """Labels as int64; ``scheme`` names a scheme that splits by class (real targets refused).

    Schemes that only count samples (``scheme=None``) accept regression targets too.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    if num_clients < 1:
        raise ConfigError(f"population.num_clients: must be >= 1, got {num_clients}")
    if len(labels) and labels.dtype.kind == "f":
        if scheme is not None:
            raise ConfigError(
                f"partition.scheme: {scheme!r} splits by class, but the dataset has real-valued "
                "(regression) targets; use iid or quantity_skew"
            )
        return labels
    if len(labels) and labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) and labels.min() < 0:
        raise ValueError("labels must be >= 0")
    return labels.astype(np.int64, copy=False)


def partition_from_owner(owner: np.ndarray, num_clients: int) -> Partition:
    """Partition from ``owner[i]`` = client of sample i (or -1: unassigned); indices ascending."""
    owner = np.asarray(owner, dtype=np.int64)
    samples = np.flatnonzero(owner >= 0)
    # A stable sort by owner keeps each client's sample indices in ascending order.
    order = samples[np.argsort(owner[samples], kind="stable")]
    sizes = np.bincount(owner[samples], minlength=num_clients)
    if len(sizes) > num_clients:
        raise ValueError(f"owner names client {len(sizes) - 1}, only {num_clients} clients")
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return Partition(offsets, order)


def equal_sizes(total: int, num_clients: int) -> np.ndarray:
    """``total`` split into ``num_clients`` sizes differing by at most 1 (larger ones first)."""
    sizes = np.full(num_clients, total // num_clients, dtype=np.int64)
    sizes[: total % num_clients] += 1
    return sizes


def skewed_sizes(weights: np.ndarray, total: int, min_samples: int) -> np.ndarray:
    """``min_samples`` each plus the rest of ``total`` shared in proportion to ``weights``.

    Shares are rounded down, and the leftover units go to the largest fractional parts, so the
    sizes sum to exactly ``total``.
    """
    extra = total - min_samples * len(weights)
    share = weights / weights.sum() * extra
    base = np.floor(share).astype(np.int64)
    leftover = extra - int(base.sum())
    base[np.argsort(base - share, kind="stable")[:leftover]] += 1
    return base + min_samples


def total_samples(samples_per_client: int, num_clients: int, n: int) -> int:
    """Number of samples to hand out: all of them, or ``num_clients * samples_per_client``."""
    if samples_per_client == 0:
        return n
    total = num_clients * samples_per_client
    if total > n:
        raise partition_error(
            "samples_per_client",
            f"{num_clients} clients x {samples_per_client} = {total} samples, "
            f"but the dataset has only {n}",
        )
    return total


def assign_in_order(sample_order: np.ndarray, sizes: np.ndarray, n: int) -> Partition:
    """Client k gets the next ``sizes[k]`` samples of ``sample_order``; the rest are unassigned."""
    owner = np.full(n, -1, dtype=np.int64)
    owner[sample_order[: int(sizes.sum())]] = np.repeat(np.arange(len(sizes)), sizes)
    return partition_from_owner(owner, len(sizes))
