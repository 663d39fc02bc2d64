"""Partitioners: split a central training set's sample indices across clients.

Every partitioner is a pure function of (options, labels, num_clients, seed): its random stream is
keyed by ``SeedSequence([seed, Purpose.PARTITION, <scheme constant>])``, so a partition never
shares random numbers with other uses of the experiment seed. No sample is given to two clients,
and every client's indices are sorted ascending.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from fedsim.data.base import Partition
from fedsim.options import ConfigError, at_least, check, finite, non_negative, positive
from fedsim.registry import PARTITIONERS
from fedsim.rng import Purpose, generator

__all__ = [
    "DirichletOptions",
    "IIDOptions",
    "NaturalOptions",
    "QuantitySkewOptions",
    "ShardsOptions",
    "dirichlet",
    "iid",
    "natural",
    "natural_partition",
    "partition_from_owner",
    "quantity_skew",
    "shards",
]

# One constant per scheme, so schemes draw independent streams from the same experiment seed.
# Changing one changes every partition of that scheme.
_IID_STREAM = 1
_SHARDS_STREAM = 2
_DIRICHLET_STREAM = 3
_QUANTITY_STREAM = 4


def _rng(seed: int, stream: int) -> np.random.Generator:
    return generator(seed, Purpose.PARTITION, stream)


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"partition.{key}: {message}")


def _check_options(options: object) -> None:
    """Run the field checks also when options were built directly rather than from TOML."""
    for f in dataclasses.fields(options):  # type: ignore[arg-type]
        for chk in f.metadata.get("checks", ()):
            err = chk(getattr(options, f.name))
            if err:
                raise _fail(f.name, err)


def _check_labels(labels: np.ndarray, num_clients: int, scheme: str | None = None) -> np.ndarray:
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


def _equal_sizes(total: int, num_clients: int) -> np.ndarray:
    """``total`` split into ``num_clients`` sizes differing by at most 1 (larger ones first)."""
    sizes = np.full(num_clients, total // num_clients, dtype=np.int64)
    sizes[: total % num_clients] += 1
    return sizes


def _skewed_sizes(weights: np.ndarray, total: int, min_samples: int) -> np.ndarray:
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


def _total_samples(samples_per_client: int, num_clients: int, n: int) -> int:
    """Number of samples to hand out: all of them, or ``num_clients * samples_per_client``."""
    if samples_per_client == 0:
        return n
    total = num_clients * samples_per_client
    if total > n:
        raise _fail(
            "samples_per_client",
            f"{num_clients} clients x {samples_per_client} = {total} samples, "
            f"but the dataset has only {n}",
        )
    return total


def _assign_in_order(sample_order: np.ndarray, sizes: np.ndarray, n: int) -> Partition:
    """Client k gets the next ``sizes[k]`` samples of ``sample_order``; the rest are unassigned."""
    owner = np.full(n, -1, dtype=np.int64)
    owner[sample_order[: int(sizes.sum())]] = np.repeat(np.arange(len(sizes)), sizes)
    return partition_from_owner(owner, len(sizes))


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
    _check_options(options)
    labels = _check_labels(labels, num_clients)
    n = len(labels)
    total = _total_samples(options.samples_per_client, num_clients, n)
    if total < num_clients:
        raise _fail(
            "samples_per_client",
            f"0 (all samples) splits {n} samples across {num_clients} clients, leaving some empty",
        )
    rng = _rng(seed, _IID_STREAM)
    return _assign_in_order(rng.permutation(n), _equal_sizes(total, num_clients), n)


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
    _check_options(options)
    labels = _check_labels(labels, num_clients, "shards")
    n = len(labels)
    needed = num_clients * options.shards_per_client
    if options.num_shards != needed:
        raise _fail(
            "num_shards",
            f"must equal num_clients x shards_per_client = {num_clients} x "
            f"{options.shards_per_client} = {needed}, got {options.num_shards}",
        )
    shard_size = n // options.num_shards
    if shard_size == 0:
        raise _fail("num_shards", f"{options.num_shards} shards of {n} samples would be empty")
    rng = _rng(seed, _SHARDS_STREAM)
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
        sizes = _equal_sizes(total, num_clients)
        if sizes.min() < min_samples:
            raise _fail(
                "min_samples",
                f"{total} samples over {num_clients} clients give {sizes.min()} each, "
                f"below the floor of {min_samples}",
            )
        return sizes
    if num_clients * min_samples > total:
        raise _fail(
            "min_samples",
            f"{num_clients} clients x {min_samples} = {num_clients * min_samples} samples, "
            f"but only {total} are handed out",
        )
    return _skewed_sizes(rng.lognormal(0.0, sigma, num_clients), total, min_samples)


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
    _check_options(options)
    labels = _check_labels(labels, num_clients, "dirichlet")
    n = len(labels)
    total = _total_samples(options.samples_per_client, num_clients, n)
    rng = _rng(seed, _DIRICHLET_STREAM)

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
    _check_options(options)
    labels = _check_labels(labels, num_clients)
    n = len(labels)
    total = _total_samples(options.samples_per_client, num_clients, n)
    if num_clients * options.min_samples > total:
        raise _fail(
            "min_samples",
            f"{num_clients} clients x {options.min_samples} = "
            f"{num_clients * options.min_samples} samples, but only {total} are handed out",
        )
    rng = _rng(seed, _QUANTITY_STREAM)
    if options.law == "lognormal":
        weights = rng.lognormal(0.0, options.sigma, num_clients)
    else:
        # numpy's pareto(a) is Lomax; +1 gives the classic Pareto with density a / w^(a + 1).
        weights = rng.pareto(options.exponent - 1.0, num_clients) + 1.0
    if not np.isfinite(weights.sum()):
        raise _fail("exponent", f"{options.exponent} is so close to 1 that sizes overflow")
    sizes = _skewed_sizes(weights, total, options.min_samples)
    return _assign_in_order(rng.permutation(n), sizes, n)


# --- natural -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NaturalOptions:
    """Options of the ``natural`` scheme: a CSV column naming each training sample's client.

    Both keys are needed only when the dataset is partitioned; datasets that are already one
    client per device take ``scheme = "natural"`` without them.
    """

    csv: str = ""
    column: str = ""


def natural_partition(groups: np.ndarray, num_clients: int, *, key: str = "column") -> Partition:
    """One client per distinct value of ``groups`` (one value per sample), in sorted value order."""
    codes, uniques = pd.factorize(pd.Series(groups), sort=True)
    if (codes < 0).any():
        raise _fail(key, f"{int((codes < 0).sum())} samples have no group value")
    if len(uniques) != num_clients:
        raise _fail(
            key,
            f"{len(uniques)} distinct values make {len(uniques)} clients, "
            f"population.num_clients is {num_clients}",
        )
    return partition_from_owner(codes.astype(np.int64), num_clients)


@PARTITIONERS.register("natural", NaturalOptions)
def natural(options: NaturalOptions, labels: np.ndarray, num_clients: int, seed: int) -> Partition:
    """Clients from a grouping column: ``csv`` has one row per training sample, in sample order."""
    labels = _check_labels(labels, num_clients)
    if not options.csv:
        raise _fail("csv", "required for a dataset that is not already split by device")
    if not options.column:
        raise _fail("column", "required: the CSV column that names each sample's client")
    path = Path(options.csv).expanduser()
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise _fail("csv", f"no such file {path}") from None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise _fail("csv", f"cannot read {path}: {err}") from None
    if options.column not in table.columns:
        known = ", ".join(str(c) for c in table.columns)
        raise _fail("column", f"{options.column!r} is not a column of {path} (columns: {known})")
    if len(table) != len(labels):
        raise _fail(
            "csv", f"{path} has {len(table)} rows, the dataset has {len(labels)} training samples"
        )
    try:
        return natural_partition(table[options.column].to_numpy(), num_clients)
    except TypeError as err:
        raise _fail("column", f"values of {options.column!r} cannot be sorted: {err}") from None
