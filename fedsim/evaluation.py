"""Per-client evaluation of the global model, for fairness: percentiles of client accuracy.

The central test accuracy averages over samples, so a model can look good while a tail of
clients does badly. Here every client in a fixed seeded sample is evaluated on its own data and
the spread of those per-client accuracies is reported (each client counts once, whatever its
size), as in the fairness evaluations of Li et al. 2020 (q-FFL).

Clients are evaluated on their own held-out data where the dataset has it
(``FederatedDataset.client_test``, e.g. the 10% held out of every synthetic device); the keys
are then ``client_acc_*``. Datasets split from one central set have no per-client held-out data,
so there each client's *training* data is used and the keys are ``client_train_acc_*``: they
measure how well the global model fits each client's data, not how it generalises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedsim.data.base import FederatedDataset
from fedsim.models.base import Model
from fedsim.rng import Purpose, generator

if TYPE_CHECKING:
    from fedsim.config_sections import ServerConfig

__all__ = [
    "CLIENTS",
    "CLIENT_ACC_COLUMNS",
    "EVALUATIONS",
    "PERCENTILES",
    "TEST",
    "TRAIN",
    "Schedule",
    "check_evaluations",
    "client_accuracies",
    "client_accuracy_percentiles",
    "sample_eval_clients",
]

PERCENTILES = (10, 50, 90)
#: The rounds.csv columns of the per-client spread, whichever data the dataset offers.
CLIENT_ACC_COLUMNS = ("client_acc_p10", "client_acc_p50", "client_acc_p90", "client_acc_mean")
# Sub-key under EVAL_CLIENTS: the synthetic test-set devices use the bare key, and this sample
# must be independent of them.
_SAMPLE_STREAM = 1
_BATCH = 2048

#: The evaluations a round can run, by name, where the model is (the server): the central test
#: set (``test_*`` columns), the global objective on training data (``global_train_*``) and the
#: per-client spread (``client_acc_*``). A schedule names the ones due each round.
TEST, TRAIN, CLIENTS = "test", "train", "clients"
EVALUATIONS = (TEST, TRAIN, CLIENTS)


@dataclass(frozen=True)
class Schedule:
    """When each evaluation runs: the ``[server]`` keys ``eval_every``, ``eval_train``,
    ``client_eval_every``. The test set (and, with ``train``, the global objective) is scored
    every ``every`` rounds and after round ``rounds``; the per-client spread every
    ``clients_every`` rounds (0: never) and after round ``rounds``.
    """

    every: int = 1
    train: bool = False
    clients_every: int = 0
    rounds: int = 0  # the run's last round; 0: no last-round evaluation

    @classmethod
    def from_config(cls, srv: ServerConfig) -> Schedule:
        """The schedule of a ``[server]`` section."""
        return cls(srv.eval_every, srv.eval_train, srv.client_eval_every, srv.rounds)

    def due(self, r: int) -> tuple[str, ...]:
        """The evaluations due after round ``r``, in :data:`EVALUATIONS` order."""
        last = r == self.rounds
        out: list[str] = []
        if (self.every and r % self.every == 0) or last:
            out += [TEST, TRAIN] if self.train else [TEST]
        if self.clients_every and (r % self.clients_every == 0 or last):
            out.append(CLIENTS)
        return tuple(out)


def check_evaluations(names: Iterable[str], who: str) -> tuple[str, ...]:
    """``names`` as a tuple in :data:`EVALUATIONS` order, duplicates dropped; ValueError naming
    ``who`` for a name that is not an evaluation."""
    wanted = set(names)
    unknown = sorted(wanted - set(EVALUATIONS))
    if unknown:
        raise ValueError(
            f"{who}: asked for evaluation {unknown[0]!r}; the evaluations are "
            + ", ".join(EVALUATIONS)
        )
    return tuple(e for e in EVALUATIONS if e in wanted)


def sample_eval_clients(seed: int, num_clients: int, k: int) -> np.ndarray:
    """The fixed, sorted sample of ``min(k, num_clients)`` client ids evaluated every time."""
    k = min(int(k), int(num_clients))
    if k < 0:
        raise ValueError(f"sample size must be >= 0, got {k}")
    rng = generator(seed, Purpose.EVAL_CLIENTS, _SAMPLE_STREAM)
    return np.sort(rng.choice(num_clients, size=k, replace=False)).astype(np.int64)


def client_accuracies(
    model: Model, w: np.ndarray, dataset: FederatedDataset, client_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Accuracy of ``w`` on each client's own data.

    Returns ``(client ids, accuracies, held_out)``: clients with no samples to evaluate are left
    out; ``held_out`` is False when the dataset has no per-client held-out data and training
    data was used instead.
    """
    ids = np.asarray(client_ids, dtype=np.int64).reshape(-1)
    held_out = True
    xs, ys, kept = [], [], []
    for k in ids:
        data = dataset.client_test(int(k)) if held_out else None
        if data is None:
            if held_out and kept:
                raise ValueError(f"client {int(k)} has no held-out data but others have")
            held_out = False
            data = dataset.client_train(int(k))
        x, y = data
        if len(y):
            xs.append(x)
            ys.append(y)
            kept.append(int(k))
    if not kept:
        return np.zeros(0, np.int64), np.zeros(0), held_out
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    # One pass over all samples in fixed-size batches: many small clients would otherwise each
    # pay a separate model call.
    correct = np.empty(len(y_all), dtype=np.int64)
    for start in range(0, len(y_all), _BATCH):
        logits = model.logits(w, x_all[start : start + _BATCH])
        correct[start : start + _BATCH] = logits.argmax(axis=1) == y_all[start : start + _BATCH]
    sizes = np.array([len(y) for y in ys], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    accuracy = np.add.reduceat(correct, starts) / sizes
    return np.array(kept, dtype=np.int64), accuracy, held_out


def client_accuracy_percentiles(
    model: Model, w: np.ndarray, dataset: FederatedDataset, client_ids: np.ndarray
) -> dict[str, float]:
    """The 10th, 50th and 90th percentile and the mean of per-client accuracy.

    Keys ``client_acc_p10, client_acc_p50, client_acc_p90, client_acc_mean`` on held-out data,
    or ``client_train_acc_*`` when the dataset has none (see the module docstring). Percentiles
    interpolate linearly between clients; values are NaN when no client has data.
    """
    _, accuracy, held_out = client_accuracies(model, w, dataset, client_ids)
    prefix = "client_acc" if held_out else "client_train_acc"
    if accuracy.size == 0:
        values = [math.nan] * (len(PERCENTILES) + 1)
    else:
        values = [*np.percentile(accuracy, PERCENTILES), accuracy.mean()]
    keys = [f"{prefix}_p{p}" for p in PERCENTILES] + [f"{prefix}_mean"]
    return {k: float(v) for k, v in zip(keys, values, strict=True)}
