"""Synthetic(alpha, beta) of Li et al. 2020 (FedProx), Appendix C.1, generated lazily per device.

Device k draws u_k ~ N(0, alpha) and B_k ~ N(0, beta) (alpha, beta are standard deviations),
W_k ~ N(u_k, 1) of shape (d, c), b_k ~ N(u_k, 1), v_k ~ N(B_k, 1) elementwise, then samples
x ~ N(v_k, Sigma) with Sigma diagonal, Sigma_jj = (j + 1)^-1.2, and labels
y = argmax(softmax(x W_k + b_k)). It has int(lognormal(4, 2)) + 50 samples, the first
int(0.9 n) for training and the rest held out. ``iid = true``: one W, b ~ N(0, 1) for every
device and v_k = B_k in every coordinate (as the reference generator does; with beta = 0 that is
v = 0, the paper's Synthetic-IID, and with beta > 0 a pure covariate shift across devices).

All draws of device k come from a generator keyed by (seed, k), so a device's data exists only
while it is used and does not depend on the order in which devices are generated. The sample
counts of all devices come from one keyed stream (a vectorised draw), so the clock can plan a
round without generating any data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsim import memory
from fedsim.data.base import FederatedDataset
from fedsim.options import check, finite, in_range, non_negative, positive
from fedsim.registry import DATASETS
from fedsim.rng import Purpose, generator

_IID_MODEL_KEY = 2**40
MAX_SAMPLES = 2**30


@dataclass(frozen=True)
class SyntheticOptions:
    alpha: float = field(default=1.0, metadata=check(non_negative, finite))
    beta: float = field(default=1.0, metadata=check(non_negative, finite))
    iid: bool = False
    num_features: int = field(default=60, metadata=check(positive))
    num_classes: int = field(default=10, metadata=check(positive))
    size_log_mean: float = field(default=4.0, metadata=check(finite))
    size_log_sigma: float = field(default=2.0, metadata=check(non_negative, finite))
    # Sample counts are stored as int32; half its range leaves room for their sums.
    min_samples: int = field(default=50, metadata=check(in_range(1, MAX_SAMPLES)))
    max_samples: int = field(default=0, metadata=check(in_range(0, MAX_SAMPLES)))
    train_fraction: float = field(default=0.9, metadata=check(in_range(0, 1, lo_open=True)))
    eval_clients: int = field(default=100, metadata=check(positive))


class SyntheticDataset(FederatedDataset):
    """One client per synthetic device; data generated from (seed, device id) on demand."""

    lazy = True

    def __init__(self, options: SyntheticOptions, num_clients: int, seed: int) -> None:
        self.options = options
        self.seed = seed
        self.num_clients = num_clients
        self.input_shape = (options.num_features,)
        self.num_classes = options.num_classes
        rng = generator(seed, Purpose.SIZES)
        total = rng.lognormal(options.size_log_mean, options.size_log_sigma, num_clients)
        total = np.minimum(total, np.iinfo(np.int32).max // 2).astype(np.int64)
        total += options.min_samples
        if options.max_samples:
            total = np.minimum(total, options.max_samples)
        self._total = total.astype(np.int32)
        largest = int(self._total.max()) if num_clients else 0
        d, c = options.num_features, options.num_classes
        # A client's samples are drawn as float64 (n, d) and projected through a (d, c) model.
        memory.require(
            "data.num_features",
            8 * (2 * largest * d + d * c + largest * c),
            f"the largest client's data ({largest} samples x {d} features, {c} classes)",
        )
        self._test: tuple[np.ndarray, np.ndarray] | None = None

    def _train_count(self, total: np.ndarray | int) -> np.ndarray | int:
        return np.maximum((np.asarray(total) * self.options.train_fraction).astype(np.int64), 1)

    def client_sizes(self) -> np.ndarray:
        return self._train_count(self._total)

    def _device(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        o = self.options
        d, c = o.num_features, o.num_classes
        n = int(self._total[k])
        rng = generator(self.seed, Purpose.DATA, k)
        u = rng.normal(0.0, o.alpha)
        big_b = rng.normal(0.0, o.beta)
        if o.iid:
            shared = generator(self.seed, Purpose.DATA, _IID_MODEL_KEY)
            w = shared.normal(0.0, 1.0, (d, c))
            b = shared.normal(0.0, 1.0, c)
            v = np.full(d, big_b)
        else:
            w = rng.normal(u, 1.0, (d, c))
            b = rng.normal(u, 1.0, c)
            v = rng.normal(big_b, 1.0, d)
        std = np.power(np.arange(1, d + 1, dtype=np.float64), -0.6)  # sqrt of (j+1)^-1.2
        x = v + std * rng.standard_normal((n, d))
        y = np.argmax(x @ w + b, axis=1).astype(np.int64)
        return x.astype(np.float32), y

    def client_train(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._device(client_id)
        m = int(self._train_count(int(self._total[client_id])))
        return x[:m], y[:m]

    def client_test(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._device(client_id)
        m = int(self._train_count(int(self._total[client_id])))
        return x[m:], y[m:]

    def eval_client_ids(self) -> np.ndarray:
        """The fixed sample of devices whose held-out data forms the central test set."""
        k = min(self.options.eval_clients, self.num_clients)
        rng = generator(self.seed, Purpose.EVAL_CLIENTS)
        return np.sort(rng.choice(self.num_clients, size=k, replace=False))

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        if self._test is None:
            parts = [self.client_test(int(k)) for k in self.eval_client_ids()]
            self._test = (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
        return self._test

    def train_eval_set(self, max_clients: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """The training data of the evaluation devices (the same devices as the test set)."""
        parts = [self.client_train(int(k)) for k in self.eval_client_ids()]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def __getstate__(self) -> dict:
        # The cached test set stays where it was built; workers never need it.
        state = dict(self.__dict__)
        state["_test"] = None
        return state


@DATASETS.register("synthetic", SyntheticOptions)
def make_synthetic(options: SyntheticOptions, *, num_clients: int, seed: int) -> SyntheticDataset:
    return SyntheticDataset(options, num_clients, seed)
