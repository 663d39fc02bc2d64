"""Fully connected networks on flattened inputs: dense layers with ReLU between them.

The parameter vector holds, layer after layer, the weight matrix (fan_in, fan_out) in row-major
order followed by the bias (fan_out,) unless the network has none. Every layer's weights and
bias are views into that one vector, so the forward and backward passes never copy parameters.
With hidden = (200, 200) on 28x28 inputs and 10 classes this is the "2NN" of McMahan et al.
2017 (199,210 parameters); with no hidden layer it is multinomial logistic regression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

from fedsim.models.base import Model, Task, stack_limit
from fedsim.options import ConfigError, check, each, positive
from fedsim.registry import MODELS


@dataclass(frozen=True)
class MlpOptions:
    """Widths of the hidden layers, input side first; empty means softmax regression.

    ``task = "regression"``: one linear output trained with the mean squared error.
    ``backend = "torch"`` builds the same network (same parameter layout) in PyTorch.
    """

    hidden: tuple[int, ...] = field(default=(200, 200), metadata=check(each(positive)))
    task: Task = "classification"
    backend: Literal["numpy", "torch"] = "numpy"


@lru_cache(maxsize=64)
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A cached read-only vector of n ones, used to reduce through BLAS instead of ``sum``."""
    out = np.ones(n, dtype=dtype)
    out.flags.writeable = False
    return out


def softmax_cross_entropy_(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean cross-entropy per client of logits z (C, B, K) for labels y (C, B); float64 (C,).

    Overwrites z with the gradient of that mean with respect to the logits, (softmax - onehot)/B.
    z must be C-contiguous. Every reduction is done per client (elementwise across columns or a
    BLAS call per client), so a client's numbers do not depend on C.
    """
    if not z.flags.c_contiguous:
        raise ValueError("softmax_cross_entropy_ overwrites z, which must be C-contiguous")
    num_clients, batch, k = z.shape
    zf = z.reshape(-1, k)
    # Column-wise maxima beat z.max(axis=-1), whose per-row overhead dominates for small K;
    # the maximum is exact, so the shift is the same whatever the order.
    shift = zf[:, 0].copy()
    for j in range(1, k):
        np.maximum(shift, zf[:, j], out=shift)
    zf -= shift[:, None]
    flat_label = np.arange(0, zf.size, k)
    flat_label += y.reshape(-1)
    z_label = zf.reshape(-1)[flat_label]
    np.exp(zf, out=zf)
    total = z @ _ones(k, z.dtype)  # (C, B): one small gemv per client
    per_sample = np.log(total)
    per_sample -= z_label.reshape(num_clients, batch)
    # Converted before summing so the float64 reduction runs unbuffered row by row.
    loss = per_sample.astype(np.float64).sum(axis=1)
    loss /= batch
    total *= batch
    z /= total[:, :, None]
    zf.reshape(-1)[flat_label] -= 1.0 / batch
    return loss


def squared_error_(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean squared error per client of predictions z (C, B, 1) for targets y (C, B); (C,).

    Overwrites z with the gradient of that mean with respect to the predictions, 2 (z - y) / B.
    The loss is summed in float64 per client, so a client's numbers do not depend on C.
    """
    num_clients, batch, _ = z.shape
    err = z[:, :, 0]
    err -= y
    loss = np.einsum("cb,cb->c", err.astype(np.float64), err.astype(np.float64))
    loss /= batch
    err *= 2.0 / batch
    return loss


class DenseNetwork(Model):
    """Dense layers of the given hidden widths with ReLU between them, then a linear output.

    Classification: ``num_classes`` logits and cross-entropy; regression (``task``): one output
    and the mean squared error (``num_classes`` is ignored).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: tuple[int, ...] = (),
        bias: bool = True,
        task: Task = "classification",
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.task = task
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes) if task == "classification" else 0
        self.hidden = tuple(int(h) for h in hidden)
        self.bias = bool(bias)
        outputs = self.num_classes if task == "classification" else 1
        if outputs < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(f"layer widths must be positive, got {self.hidden}, {num_classes}")
        self.num_features = int(np.prod(self.input_shape, dtype=np.int64))
        widths = (self.num_features, *self.hidden, outputs)
        # (weight start, bias start, bias end, fan_in, fan_out) of each layer in the flat vector.
        self._layers: list[tuple[int, int, int, int, int]] = []
        offset = 0
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            bias_start = offset + fan_in * fan_out
            bias_end = bias_start + (fan_out if self.bias else 0)
            self._layers.append((offset, bias_start, bias_end, fan_in, fan_out))
            offset = bias_end
        self.num_parameters = offset

    @property
    def max_stack(self) -> int:  # type: ignore[override]
        """As many clients as fit :data:`~fedsim.models.base.STACK_BYTES` (at least 1)."""
        return stack_limit(self.num_parameters, Model.max_stack)

    def init(self, seed: int) -> np.ndarray:
        """Fan-in scaled uniform weights (He for layers feeding a ReLU, LeCun for the logits)."""
        rng = np.random.default_rng(seed)
        w = np.zeros(self.num_parameters, dtype=np.float32)
        last = len(self._layers) - 1
        for i, (start, bias_start, _, fan_in, _) in enumerate(self._layers):
            gain_squared = 1.0 if i == last else 2.0
            bound = np.sqrt(3.0 * gain_squared / fan_in)
            w[start:bias_start] = rng.uniform(-bound, bound, size=bias_start - start)
        return w

    def _views(self, w: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Weights (C, fan_in, fan_out) and bias (C, 1, fan_out) of layer i, as views of w."""
        start, bias_start, bias_end, fan_in, fan_out = self._layers[i]
        num_clients = w.shape[0]
        weight = w[:, start:bias_start].reshape(num_clients, fan_in, fan_out)
        return weight, w[:, None, bias_start:bias_end]

    def _forward(self, w: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
        """Inputs of every layer then the logits, each (C, B, width); hidden ones post-ReLU."""
        num_clients, batch = x.shape[:2]
        a = np.ascontiguousarray(x, dtype=w.dtype).reshape(num_clients, batch, -1)
        acts = [a]
        last = len(self._layers) - 1
        for i in range(len(self._layers)):
            weight, bias = self._views(w, i)
            a = np.matmul(a, weight)
            if self.bias:
                a += bias
            if i < last:
                np.maximum(a, 0, out=a)
            acts.append(a)
        return acts

    def loss_and_grad(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss per client and its gradient, computed in the dtype of w.

        w: (C, P); x: (C, B, *input_shape); y: (C, B) integer labels (cross-entropy) or float
        targets (regression: mean squared error). Returns loss (C,) float64 and grad (C, P) in
        w's dtype (float32 in the simulator; float64 serves gradient checks).
        """
        acts = self._forward(w, x)
        delta = acts.pop()
        if self.task == "regression":
            loss = squared_error_(delta, np.asarray(y, dtype=delta.dtype))
        else:
            loss = softmax_cross_entropy_(delta, y)
        # C-ordered whatever w's layout, so that the layer views below never become copies.
        grad = np.empty(w.shape, dtype=w.dtype)
        ones_batch = _ones(delta.shape[1], delta.dtype)
        for i in range(len(self._layers) - 1, -1, -1):
            a_in = acts[i]
            grad_views = self._views(grad, i)
            np.matmul(a_in.transpose(0, 2, 1), delta, out=grad_views[0])
            if self.bias:
                np.matmul(ones_batch, delta, out=grad_views[1][:, 0, :])
            if i > 0:
                weight = self._views(w, i)[0]
                delta = np.matmul(delta, weight.transpose(0, 2, 1))
                # ReLU derivative: a_in is post-ReLU, so a_in > 0 exactly where it passed.
                np.multiply(delta, a_in > 0, out=delta)
        return loss, grad

    def logits(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Outputs for one parameter vector w (P,) on x (n, *input_shape): (n, outputs)."""
        return self._forward(w[None], x[None])[-1][0]


@MODELS.register("mlp", MlpOptions)
def make_mlp(options: MlpOptions, input_shape: tuple[int, ...], num_classes: int) -> Model:
    """Fully connected ReLU network with ``options.hidden`` widths on the flattened input."""
    model = DenseNetwork(input_shape, num_classes, options.hidden, task=options.task)
    return dense_in_torch(model) if options.backend == "torch" else model


def dense_in_torch(model: DenseNetwork) -> Model:
    """The same network in PyTorch, with the same layout and initial vectors as ``model``."""
    from fedsim.models.torch_models import torch_builtin

    if model.task != "classification":
        raise ConfigError("model.backend: the torch models are classifiers; use 'numpy' here")
    kwargs = {"num_features": model.num_features, "num_classes": model.num_classes}
    kwargs.update(hidden=model.hidden, bias=model.bias)
    return torch_builtin("DenseNet", model.input_shape, model.num_classes, kwargs, model.init)
