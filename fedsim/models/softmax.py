"""Multinomial logistic regression: logits = x W + b on the flattened input (a convex model).

With ``task = "regression"`` the same linear map has one output trained by least squares
(linear regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.models.base import Model, Task
from fedsim.models.mlp import DenseNetwork
from fedsim.registry import MODELS


@dataclass(frozen=True)
class SoftmaxOptions:
    """``bias = false`` drops the bias: logits = x W, P = D*K parameters.

    ``task = "regression"``: one output (K = 1) and the mean squared error.
    """

    bias: bool = True
    task: Task = "classification"


class SoftmaxRegression(DenseNetwork):
    """A dense network without hidden layers: P = D*K (+ K) parameters (W row-major, then b)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        bias: bool = True,
        task: Task = "classification",
    ) -> None:
        super().__init__(input_shape, num_classes, hidden=(), bias=bias, task=task)

    def init(self, seed: int) -> np.ndarray:
        """All zeros, whatever the seed: the loss is convex, so no symmetry needs breaking."""
        return np.zeros(self.num_parameters, dtype=np.float32)


@MODELS.register("softmax", SoftmaxOptions)
def make_softmax(options: SoftmaxOptions, input_shape: tuple[int, ...], num_classes: int) -> Model:
    """Softmax regression (with bias unless ``bias = false``) on the flattened input."""
    return SoftmaxRegression(input_shape, num_classes, bias=options.bias, task=options.task)
