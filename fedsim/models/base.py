"""The model contract: a flat float32 parameter vector, evaluated for many clients at once.

Every method that trains takes a leading *client axis*: ``w`` has shape (C, P) and a batch
has shape (C, B, *input_shape), so clients with the same batch schedule are trained together by
one vectorised kernel (C = 1 is the plain case). The same code path serves every C, so a
client's result does not depend on which other clients it was stacked with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import numpy as np

from fedsim.models import scoring

#: What a model predicts: class logits (integer labels, cross-entropy) or one real value
#: (float targets, mean squared error).
Task = Literal["classification", "regression"]

#: Parameter bytes a stack of clients should hold at most. A step reads and writes every
#: stacked client's parameters and gradient; past a few MiB they no longer stay in the CPU's
#: caches between a step's layers, and a larger stack trains slower per sample, not faster
#: (McMahan's 2NN, 0.8 MB per client, one BLAS thread: 34, 24 and 36 us per sample in stacks
#: of 1, 4 and 20 clients; see benchmarks/stacking.py).
STACK_BYTES = 4 << 20


def stack_limit(num_parameters: int, default: int = 64) -> int:
    """Most clients of ``num_parameters`` float32 parameters in a stack: as many as fit
    :data:`STACK_BYTES`, at least 1 and at most ``default``."""
    return max(1, min(default, STACK_BYTES // (4 * num_parameters)))


class Model(ABC):
    input_shape: tuple[int, ...]
    num_classes: int
    num_parameters: int
    task: Task = "classification"
    #: Most clients trained at once in one stacked call. A model whose kernels gain nothing
    #: from a stack (convolutions on a CPU, a per-client loop inside) sets 1: its clients then
    #: train one after the other, each client's parameters staying in cache for all its steps.
    max_stack: int = 64

    @abstractmethod
    def init(self, seed: int) -> np.ndarray:
        """Initial parameters, float32 of shape (P,), a pure function of ``seed``."""

    @abstractmethod
    def loss_and_grad(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss over each client's batch and its gradient.

        The loss is cross-entropy for classification (y: (C, B) int64 labels) and the mean
        squared error for regression (y: (C, B) float32 targets).
        w: (C, P) float32; x: (C, B, *input_shape) float32.
        Returns (loss of shape (C,) float64, grad of shape (C, P) float32).
        """

    @abstractmethod
    def logits(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Outputs for one parameter vector w (P,) on x (n, *input_shape).

        Classification: logits (n, num_classes); regression: predictions (n, 1).
        """

    @property
    def model_bytes(self) -> int:
        """Size of the parameters on the wire (float32)."""
        return 4 * self.num_parameters

    def evaluate(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray, batch_size: int = 2048
    ) -> tuple[float, float]:
        """(mean loss, accuracy) of parameters w on (x, y); accuracy is NaN for regression."""
        found = self.metrics(w, x, y, batch_size)
        return found["loss"], found.get("accuracy", float("nan"))

    def metrics(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray, batch_size: int = 2048
    ) -> dict[str, float]:
        """Mean loss and the task's scores of w on (x, y), see :data:`scoring.SCORES`.

        Classification: ``loss`` (cross-entropy), ``accuracy``; regression: ``loss`` (mean
        squared error), ``mae``, ``rmse``. All NaN when y is empty.
        """
        sums: dict[str, float] | None = None
        for start in range(0, len(y), batch_size):
            part = scoring.batch_sums(
                self.task,
                self.logits(w, x[start : start + batch_size]),
                y[start : start + batch_size],
            )
            sums = part if sums is None else {k: sums[k] + v for k, v in part.items()}
        return scoring.finish(self.task, sums, len(y))
