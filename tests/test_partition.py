"""Partitioners (sizes, disjointness, label skew, seeding, errors) and ArrayDataset."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fedsim.data.arrays import ArrayDataset
from fedsim.data.base import CentralData, Partition
from fedsim.data.partition import (
    DirichletOptions,
    IIDOptions,
    NaturalOptions,
    QuantitySkewOptions,
    ShardsOptions,
    natural_partition,
    partition_from_owner,
)
from fedsim.options import ConfigError, build
from fedsim.registry import PARTITIONERS

# 60,000 labels sorted in 10 classes of 6,000, like the MNIST training set.
SORTED = np.repeat(np.arange(10), 6000)
# The same multiset of labels in a random order.
SHUFFLED = np.random.default_rng(0).permutation(SORTED)


def run(scheme: str, options, labels=SHUFFLED, num_clients: int = 100, seed: int = 0) -> Partition:
    return PARTITIONERS.get(scheme).factory(options, labels, num_clients, seed)


def assert_exact_cover(part: Partition, n: int) -> None:
    """Every sample index belongs to exactly one client."""
    np.testing.assert_array_equal(np.sort(part.indices), np.arange(n))


def assert_well_formed(part: Partition, num_clients: int, n: int) -> None:
    assert part.num_clients == num_clients
    assert part.offsets[0] == 0 and part.offsets[-1] == len(part.indices)
    assert len(np.unique(part.indices)) == len(part.indices)  # no sample in two clients
    assert part.indices.min() >= 0 and part.indices.max() < n
    for k in range(num_clients):
        assert np.all(np.diff(part.client(k)) > 0)  # ascending within a client


def label_hist(part: Partition, labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    owner = np.repeat(np.arange(part.num_clients), part.sizes())
    flat = np.bincount(owner * num_classes + labels[part.indices], minlength=part.num_clients * 10)
    return flat.reshape(part.num_clients, num_classes)


def mean_tv_to_global(part: Partition, labels: np.ndarray) -> float:
    """Mean over clients of the total-variation distance between its and the global label mix."""
    h = label_hist(part, labels)
    q = h / h.sum(axis=1, keepdims=True)
    p = np.bincount(labels, minlength=10) / len(labels)
    return float(0.5 * np.abs(q - p).sum(axis=1).mean())


# --- iid -----------------------------------------------------------------------------------------


def test_iid_mcmahan_100_by_600():
    part = run("iid", IIDOptions(samples_per_client=600))
    np.testing.assert_array_equal(part.sizes(), np.full(100, 600))
    assert_exact_cover(part, 60_000)
    assert_well_formed(part, 100, 60_000)
    # IID: every client's label mix is close to uniform (600 draws, 60 expected per class).
    h = label_hist(part, SHUFFLED)
    assert h.min() > 25 and h.max() < 100


def test_iid_all_samples_uneven():
    part = run("iid", IIDOptions(), labels=np.zeros(1003, np.int64), num_clients=10)
    sizes = part.sizes()
    assert sizes.sum() == 1003 and sizes.max() - sizes.min() == 1
    np.testing.assert_array_equal(sizes, [101, 101, 101, 100, 100, 100, 100, 100, 100, 100])
    assert_exact_cover(part, 1003)


def test_iid_subset():
    part = run("iid", IIDOptions(samples_per_client=50), num_clients=30)
    np.testing.assert_array_equal(part.sizes(), np.full(30, 50))
    assert_well_formed(part, 30, 60_000)


def test_iid_errors():
    with pytest.raises(ConfigError, match=r"^partition.samples_per_client: 100 clients x 601"):
        run("iid", IIDOptions(samples_per_client=601))
    with pytest.raises(ConfigError, match=r"^partition.samples_per_client: must be >= 0"):
        run("iid", IIDOptions(samples_per_client=-1))
    with pytest.raises(ConfigError, match=r"^partition.samples_per_client: .*leaving some empty"):
        run("iid", IIDOptions(), labels=np.zeros(5, np.int64), num_clients=6)


# --- shards --------------------------------------------------------------------------------------


def test_shards_200_by_300_two_labels_each():
    part = run("shards", ShardsOptions(num_shards=200, shards_per_client=2), labels=SORTED)
    np.testing.assert_array_equal(part.sizes(), np.full(100, 600))
    assert_exact_cover(part, 60_000)
    assert_well_formed(part, 100, 60_000)
    distinct = (label_hist(part, SORTED) > 0).sum(axis=1)
    assert distinct.max() <= 2
    # Two random shards share a class with probability ~19/199, so most clients see two labels.
    assert (distinct == 2).mean() > 0.75
    # Each client holds whole shards: per-label counts are multiples of the shard size, 300.
    h = label_hist(part, SORTED)
    assert np.all(h % 300 == 0)


def test_shards_on_shuffled_labels_same_skew():
    part = run("shards", ShardsOptions(), labels=SHUFFLED)
    assert_exact_cover(part, 60_000)
    assert (label_hist(part, SHUFFLED) > 0).sum(axis=1).max() <= 2


def test_shards_ties_are_not_in_index_order():
    # With one label everywhere, index-order ties would give shard j the indices 300j..300j+299.
    labels = np.zeros(600, np.int64)
    part = run("shards", ShardsOptions(num_shards=4, shards_per_client=2), labels, num_clients=2)
    first = part.client(0)
    assert len(first) == 300
    assert first.max() - first.min() > 400  # spread out, not two contiguous blocks of 150


def test_shards_leftover_unassigned():
    labels = np.repeat(np.arange(3), 341)  # 1023 samples, 10 shards of 102, 3 left over
    part = run("shards", ShardsOptions(num_shards=10, shards_per_client=2), labels, num_clients=5)
    np.testing.assert_array_equal(part.sizes(), np.full(5, 204))
    assert len(part.indices) == 1020
    assert_well_formed(part, 5, 1023)


def test_shards_count_must_match():
    with pytest.raises(ConfigError) as err:
        run("shards", ShardsOptions(num_shards=150, shards_per_client=2))
    msg = str(err.value)
    assert msg.startswith("partition.num_shards: ")
    assert "100 x 2 = 200" in msg and "150" in msg
    with pytest.raises(ConfigError, match=r"^partition.shards_per_client: must be > 0"):
        run("shards", ShardsOptions(num_shards=200, shards_per_client=0))
    with pytest.raises(ConfigError, match=r"^partition.num_shards: .*empty"):
        run("shards", ShardsOptions(), labels=np.zeros(100, np.int64))


# --- dirichlet -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_dirichlet_equal_sizes_cover_everything(alpha):
    part = run("dirichlet", DirichletOptions(alpha=alpha), labels=SHUFFLED)
    np.testing.assert_array_equal(part.sizes(), np.full(100, 600))
    assert_exact_cover(part, 60_000)
    assert_well_formed(part, 100, 60_000)


def test_dirichlet_uneven_total_and_unbalanced_classes():
    rng = np.random.default_rng(5)
    labels = rng.choice(7, size=5003, p=[0.4, 0.3, 0.1, 0.1, 0.05, 0.04, 0.01])
    part = run("dirichlet", DirichletOptions(alpha=0.2), labels=labels, num_clients=37)
    sizes = part.sizes()
    assert sizes.sum() == 5003 and sizes.max() - sizes.min() == 1
    assert_exact_cover(part, 5003)


def test_dirichlet_small_alpha_is_much_more_skewed():
    # Measured mean total-variation distance to the global mix (seeds 0-2): about 0.87 for
    # alpha = 0.1 and 0.14 for alpha = 100; an IID split of 600 samples gives about 0.05.
    small = [mean_tv_to_global(run("dirichlet", DirichletOptions(alpha=0.1), seed=s), SHUFFLED)
             for s in range(3)]  # fmt: skip
    large = [mean_tv_to_global(run("dirichlet", DirichletOptions(alpha=100.0), seed=s), SHUFFLED)
             for s in range(3)]  # fmt: skip
    assert min(small) > 0.75
    assert max(large) < 0.2
    # Fraction of a client's samples in its most common class: near 1 for small alpha.
    h = label_hist(run("dirichlet", DirichletOptions(alpha=0.1)), SHUFFLED)
    assert np.median(h.max(axis=1) / h.sum(axis=1)) > 0.85


def test_dirichlet_lognormal_sizes():
    opts = DirichletOptions(alpha=0.5, sizes="lognormal", size_sigma=1.0, min_samples=20)
    part = run("dirichlet", opts, num_clients=300)
    sizes = part.sizes()
    assert sizes.sum() == 60_000 and sizes.min() >= 20
    assert sizes.max() / np.median(sizes) > 4  # heavy tail, unlike equal sizes
    assert_exact_cover(part, 60_000)


def test_dirichlet_samples_per_client_subset():
    opts = DirichletOptions(alpha=1.0, samples_per_client=100)
    part = run("dirichlet", opts, num_clients=50)
    np.testing.assert_array_equal(part.sizes(), np.full(50, 100))
    assert_well_formed(part, 50, 60_000)


def test_dirichlet_errors():
    with pytest.raises(ConfigError, match=r"^partition.alpha: must be > 0"):
        run("dirichlet", DirichletOptions(alpha=0.0))
    with pytest.raises(ConfigError, match=r"^partition.alpha: must be > 0"):
        build(DirichletOptions, {"alpha": -1.0}, "partition")
    with pytest.raises(ConfigError, match=r"^partition.sizes: must be one of"):
        build(DirichletOptions, {"sizes": "zipf"}, "partition")
    with pytest.raises(ConfigError, match=r"^partition.min_samples: .* below the floor of 10"):
        run("dirichlet", DirichletOptions(), labels=np.zeros(900, np.int64))
    with pytest.raises(ConfigError, match=r"^partition.min_samples: 100 clients x 700"):
        run("dirichlet", DirichletOptions(sizes="lognormal", min_samples=700))
    with pytest.raises(ConfigError, match=r"^partition.samples_per_client: "):
        run("dirichlet", DirichletOptions(samples_per_client=1000))


# --- quantity_skew -------------------------------------------------------------------------------

MANY = np.random.default_rng(1).integers(0, 10, size=1_000_000)


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_quantity_skew_lognormal_sigma(sigma):
    opts = QuantitySkewOptions(law="lognormal", sigma=sigma, min_samples=10)
    part = run("quantity_skew", opts, labels=MANY, num_clients=1000)
    sizes = part.sizes()
    assert sizes.sum() == 1_000_000 and sizes.min() >= 10
    # Above the floor, sizes are proportional to lognormal(0, sigma) draws.
    spread = np.log(sizes - 10).std()
    assert abs(spread - sigma) < 0.08 * sigma + 0.02
    assert_exact_cover(part, 1_000_000)


def test_quantity_skew_powerlaw_exponent():
    opts = QuantitySkewOptions(law="powerlaw", exponent=3.0, min_samples=5)
    part = run("quantity_skew", opts, labels=MANY, num_clients=1000)
    x = (part.sizes() - 5).astype(float)
    # Hill estimate of the tail index a = exponent - 1 = 2 from all 1000 sizes.
    a_hat = (len(x) - 1) / np.log(x / x.min()).sum()
    assert abs(a_hat - 2.0) < 0.25
    assert part.sizes().sum() == 1_000_000


def test_quantity_skew_labels_stay_iid():
    opts = QuantitySkewOptions(sigma=1.0, samples_per_client=500)
    part = run("quantity_skew", opts, labels=SHUFFLED, num_clients=100)
    assert part.sizes().sum() == 50_000 and part.sizes().min() >= 10
    assert_well_formed(part, 100, 60_000)
    big = np.argsort(part.sizes())[-20:]
    h = label_hist(part, SHUFFLED)[big]
    q = h / h.sum(axis=1, keepdims=True)
    assert np.abs(q - 0.1).max() < 0.06  # large clients look like the global mix


def test_quantity_skew_errors():
    with pytest.raises(ConfigError, match=r"^partition.min_samples: 100 clients x 700"):
        run("quantity_skew", QuantitySkewOptions(min_samples=700))
    with pytest.raises(ConfigError, match=r"^partition.min_samples: must be >= 1"):
        run("quantity_skew", QuantitySkewOptions(min_samples=0))
    with pytest.raises(ConfigError, match=r"^partition.exponent: must be > 1"):
        run("quantity_skew", QuantitySkewOptions(law="powerlaw", exponent=1.0))
    with pytest.raises(ConfigError, match=r"^partition.sigma: must be >= 0"):
        build(QuantitySkewOptions, {"sigma": -0.5}, "partition")


# --- seeding -------------------------------------------------------------------------------------

SEEDED = [
    ("iid", IIDOptions(samples_per_client=600)),
    ("shards", ShardsOptions()),
    ("dirichlet", DirichletOptions(alpha=0.5)),
    ("dirichlet", DirichletOptions(alpha=0.5, sizes="lognormal")),
    ("quantity_skew", QuantitySkewOptions()),
    ("quantity_skew", QuantitySkewOptions(law="powerlaw")),
]


@pytest.mark.parametrize("scheme, options", SEEDED)
def test_same_seed_same_partition_other_seed_differs(scheme, options):
    a = run(scheme, options, seed=11)
    b = run(scheme, options, seed=11)
    c = run(scheme, options, seed=12)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not (np.array_equal(a.offsets, c.offsets) and np.array_equal(a.indices, c.indices))


# --- natural -------------------------------------------------------------------------------------


def test_natural_from_csv(tmp_path):
    users = np.array(["carol", "alice", "bob", "alice", "carol", "carol", "bob"])
    csv = tmp_path / "groups.csv"
    csv.write_text("user,other\n" + "".join(f"{u},{i}\n" for i, u in enumerate(users)))
    part = run("natural", NaturalOptions(csv=str(csv), column="user"), np.zeros(7, int), 3)
    # Clients in sorted value order: alice, bob, carol.
    np.testing.assert_array_equal(part.client(0), [1, 3])
    np.testing.assert_array_equal(part.client(1), [2, 6])
    np.testing.assert_array_equal(part.client(2), [0, 4, 5])
    assert_exact_cover(part, 7)


def test_natural_numeric_groups_sort_numerically():
    part = natural_partition(np.array([10, 2, 10, 33, 2]), 3)
    np.testing.assert_array_equal(part.sizes(), [2, 2, 1])
    np.testing.assert_array_equal(part.client(0), [1, 4])


def test_natural_errors(tmp_path):
    csv = tmp_path / "g.csv"
    csv.write_text("user\n1\n2\n2\n")
    labels = np.zeros(3, np.int64)
    with pytest.raises(ConfigError, match=r"^partition.column: 2 distinct values .* is 3"):
        run("natural", NaturalOptions(csv=str(csv), column="user"), labels, 3)
    with pytest.raises(ConfigError, match=r"^partition.column: 'device' is not a column"):
        run("natural", NaturalOptions(csv=str(csv), column="device"), labels, 2)
    with pytest.raises(ConfigError, match=r"^partition.csv: .*3 rows, the dataset has 4"):
        run("natural", NaturalOptions(csv=str(csv), column="user"), np.zeros(4, int), 2)
    with pytest.raises(ConfigError, match=r"^partition.csv: no such file"):
        run("natural", NaturalOptions(csv=str(tmp_path / "x.csv"), column="user"), labels, 2)
    with pytest.raises(ConfigError, match=r"^partition.csv: required"):
        run("natural", NaturalOptions(), labels, 2)
    # Per-device datasets take scheme "natural" with no keys, so building the options succeeds.
    assert build(NaturalOptions, {}, "partition") == NaturalOptions()


# --- ArrayDataset --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_dataset() -> tuple[CentralData, Partition, ArrayDataset]:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, size=3000)
    x = rng.random((3000, 2, 3)).astype(np.float32)
    central = CentralData(x, y, x[:100], y[:100])
    part = run("dirichlet", DirichletOptions(alpha=0.3, sizes="lognormal"), y, num_clients=40)
    return central, part, ArrayDataset(central, part)


def test_array_dataset_client_train_is_the_partition(small_dataset):
    central, part, ds = small_dataset
    assert ds.num_clients == 40 and ds.num_classes == 5 and ds.input_shape == (2, 3)
    np.testing.assert_array_equal(ds.client_sizes(), part.sizes())
    for k in range(40):
        x, y = ds.client_train(k)
        assert x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(x, central.x_train[part.client(k)])
        np.testing.assert_array_equal(y, central.y_train[part.client(k)])
    x_test, y_test = ds.test_set()
    np.testing.assert_array_equal(y_test, central.y_test)
    assert ds.client_test(0) is None
    with pytest.raises(IndexError):
        ds.client_train(40)


def test_array_dataset_label_counts_match_naive(small_dataset):
    _, _, ds = small_dataset
    ids = np.array([3, 0, 39, 3, 17])  # any order, repeats allowed
    naive = np.stack([np.bincount(ds.client_train(int(k))[1], minlength=5) for k in ids])
    got = ds.label_counts(ids)
    assert got.dtype == np.int64 and got.shape == (5, 5)
    np.testing.assert_array_equal(got, naive)
    full = ds.label_counts(np.arange(40))
    np.testing.assert_array_equal(full.sum(axis=1), ds.client_sizes())
    assert ds.label_counts(np.array([], dtype=np.int64)).shape == (0, 5)
    with pytest.raises(IndexError):
        ds.label_counts(np.array([-1]))


def test_array_dataset_pickles_to_equal_arrays(small_dataset):
    _, _, ds = small_dataset
    back = pickle.loads(pickle.dumps(ds))
    for name in ("x_train", "y_train", "x_test", "y_test", "offsets", "indices"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    np.testing.assert_array_equal(back.label_counts(np.arange(40)), ds.label_counts(np.arange(40)))


def test_partition_from_owner_orders_and_skips():
    part = partition_from_owner(np.array([2, -1, 0, 2, 0, -1, 1]), 4)
    np.testing.assert_array_equal(part.sizes(), [2, 1, 2, 0])
    np.testing.assert_array_equal(part.indices, [2, 4, 6, 0, 3])
