"""Per-client accuracy percentiles for fairness (fedsim.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsim.data.arrays import ArrayDataset
from fedsim.data.base import CentralData, FederatedDataset, Partition
from fedsim.data.synthetic import SyntheticDataset, SyntheticOptions
from fedsim.evaluation import (
    client_accuracies,
    client_accuracy_percentiles,
    sample_eval_clients,
)
from fedsim.models.base import Model
from fedsim.models.softmax import SoftmaxRegression


class OneHotModel(Model):
    """Logits are the input itself: a sample [0, 1] is predicted as class 1."""

    def __init__(self, num_classes: int = 2) -> None:
        self.input_shape = (num_classes,)
        self.num_classes = num_classes
        self.num_parameters = 1

    def init(self, seed: int) -> np.ndarray:
        return np.zeros(1, np.float32)

    def loss_and_grad(self, w, x, y):  # pragma: no cover - not used here
        raise NotImplementedError

    def logits(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        return x


class HeldOut(FederatedDataset):
    """Client k's held-out samples are all predicted as class 0; ``correct[k]`` of them are."""

    def __init__(self, correct: list[int], totals: list[int], held_out: bool = True) -> None:
        self.correct, self.totals, self.held_out = correct, totals, held_out
        self.num_clients, self.num_classes, self.input_shape = len(totals), 2, (2,)

    def client_sizes(self) -> np.ndarray:
        return np.array(self.totals, dtype=np.int64)

    def _data(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.tile(np.array([1.0, 0.0], np.float32), (self.totals[k], 1))
        y = np.ones(self.totals[k], np.int64)
        y[: self.correct[k]] = 0
        return x, y

    def client_train(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        return self._data(client_id)

    def client_test(self, client_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self._data(client_id) if self.held_out else None

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        return self._data(0)


def test_percentiles_of_known_client_accuracies() -> None:
    # Accuracies 0, 0.25, 0.5, 0.75, 1 (clients of different sizes count once each).
    ds = HeldOut(correct=[0, 1, 4, 3, 10], totals=[4, 4, 8, 4, 10])
    out = client_accuracy_percentiles(OneHotModel(), np.zeros(1), ds, np.arange(5))
    assert out == pytest.approx(
        {
            "client_acc_p10": 0.1,
            "client_acc_p50": 0.5,
            "client_acc_p90": 0.9,
            "client_acc_mean": 0.5,
        }
    )


def test_datasets_without_held_out_data_report_train_accuracy() -> None:
    ds = HeldOut(correct=[0, 1, 4, 3, 10], totals=[4, 4, 8, 4, 10], held_out=False)
    out = client_accuracy_percentiles(OneHotModel(), np.zeros(1), ds, np.arange(5))
    assert list(out) == [
        "client_train_acc_p10",
        "client_train_acc_p50",
        "client_train_acc_p90",
        "client_train_acc_mean",
    ]
    assert out["client_train_acc_p90"] == pytest.approx(0.9)


def test_clients_without_samples_are_left_out() -> None:
    ds = HeldOut(correct=[0, 0, 2], totals=[4, 0, 2])
    ids, acc, held_out = client_accuracies(OneHotModel(), np.zeros(1), ds, np.arange(3))
    assert ids.tolist() == [0, 2] and acc.tolist() == [0.0, 1.0] and held_out
    empty = client_accuracy_percentiles(OneHotModel(), np.zeros(1), ds, np.array([1]))
    assert all(math.isnan(v) for v in empty.values()) and len(empty) == 4


def test_synthetic_uses_each_devices_held_out_data() -> None:
    ds = SyntheticDataset(SyntheticOptions(alpha=1, beta=1, max_samples=400), 300, seed=2)
    model = SoftmaxRegression(ds.input_shape, ds.num_classes)
    w = _fit(model, ds, range(100))
    ids = sample_eval_clients(2, ds.num_clients, 40)
    out = client_accuracy_percentiles(model, w, ds, ids)
    by_hand = np.array([model.evaluate(w, *ds.client_test(int(k)))[1] for k in ids])
    np.testing.assert_allclose(
        [out["client_acc_p10"], out["client_acc_p50"], out["client_acc_p90"]],
        np.percentile(by_hand, [10, 50, 90]),
        rtol=1e-12,
    )
    assert out["client_acc_mean"] == pytest.approx(by_hand.mean(), rel=1e-12)
    # One global model for devices with their own labelling functions: some devices are fitted
    # well, others badly.
    assert out["client_acc_p90"] - out["client_acc_p10"] > 0.3
    assert 0 <= out["client_acc_p10"] <= out["client_acc_p50"] <= out["client_acc_p90"] <= 1


def _fit(model: SoftmaxRegression, ds: FederatedDataset, clients: range) -> np.ndarray:
    """A global model: full-batch gradient descent on the pooled data of ``clients``."""
    parts = [ds.client_train(k) for k in clients]
    x = np.concatenate([p[0] for p in parts])[None]
    y = np.concatenate([p[1] for p in parts])[None]
    w = model.init(0)[None]
    for _ in range(100):
        _, grad = model.loss_and_grad(w, x, y)
        w = w - 0.5 * grad
    return w[0]


def test_partitioned_dataset_evaluates_training_data_across_batches() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000, 6)).astype(np.float32)
    y = rng.integers(0, 3, 5000)
    central = CentralData(x, y, x[:10], y[:10])
    # Client 1 has 2500 samples, so it straddles evaluation batches of 2048.
    part = Partition.from_lists([np.arange(0, 1000), np.arange(1000, 3500), np.arange(3500, 3501)])
    ds = ArrayDataset(central, part)
    assert ds.client_test(0) is None
    model = SoftmaxRegression((6,), 3)
    w = rng.normal(size=model.num_parameters).astype(np.float32)
    ids, acc, held_out = client_accuracies(model, w, ds, np.array([0, 1, 2]))
    assert not held_out and ids.tolist() == [0, 1, 2]
    by_hand = [model.evaluate(w, *ds.client_train(k))[1] for k in range(3)]
    np.testing.assert_allclose(acc, by_hand, rtol=1e-12)


def test_eval_sample_is_seeded_sorted_and_distinct() -> None:
    a = sample_eval_clients(3, 1_000_000, 100)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert a.min() >= 0 and a.max() < 1_000_000
    np.testing.assert_array_equal(a, sample_eval_clients(3, 1_000_000, 100))
    assert not np.array_equal(a, sample_eval_clients(4, 1_000_000, 100))
    np.testing.assert_array_equal(sample_eval_clients(3, 50, 100), np.arange(50))
    # Independent of the synthetic test-set devices drawn from the same seed.
    ds = SyntheticDataset(SyntheticOptions(eval_clients=100), 100_000, seed=3)
    assert len(np.intersect1d(ds.eval_client_ids(), sample_eval_clients(3, 100_000, 100))) < 5
