"""The model contract: a flat float32 parameter vector, evaluated for many clients at once.

Every method that trains takes a leading *client axis*: ``w`` has shape (C, P) and a batch
has shape (C, B, *input_shape), so clients with the same batch schedule are trained together by
one vectorised kernel (C = 1 is the plain case). The same code path serves every C, so a
client's result does not depend on which other clients it was stacked with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Model(ABC):
    input_shape: tuple[int, ...]
    num_classes: int
    num_parameters: int

    @abstractmethod
    def init(self, seed: int) -> np.ndarray:
        """Initial parameters, float32 of shape (P,), a pure function of ``seed``."""

    @abstractmethod
    def loss_and_grad(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean cross-entropy over each client's batch and its gradient.

        w: (C, P) float32; x: (C, B, *input_shape) float32; y: (C, B) int64.
        Returns (loss of shape (C,) float64, grad of shape (C, P) float32).
        """

    @abstractmethod
    def logits(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits for one parameter vector w (P,) on x (n, *input_shape): (n, num_classes)."""

    @property
    def model_bytes(self) -> int:
        """Size of the parameters on the wire (float32)."""
        return 4 * self.num_parameters

    def evaluate(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray, batch_size: int = 2048
    ) -> tuple[float, float]:
        """(mean cross-entropy loss, accuracy) of parameters w on (x, y)."""
        if len(y) == 0:
            return float("nan"), float("nan")
        loss_sum = 0.0
        correct = 0
        for start in range(0, len(y), batch_size):
            z = self.logits(w, x[start : start + batch_size]).astype(np.float64)
            yb = y[start : start + batch_size]
            z -= z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            loss_sum -= logp[np.arange(len(yb)), yb].sum()
            correct += int((z.argmax(axis=1) == yb).sum())
        return loss_sum / len(y), correct / len(y)
