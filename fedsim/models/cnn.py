"""The CNN of McMahan et al. (2017) for small grey images, in numpy, for many clients at once.

Two "same" convolutions (default 5x5 with 32 and 64 channels), each followed by ReLU and 2x2
max pooling, a fully connected ReLU layer (default 512 units) and a linear softmax output, as in
"Communication-Efficient Learning of Deep Networks from Decentralized Data" (AISTATS 2017).
On 28x28 inputs with 10 classes it has 1,663,370 parameters.

Activations are channels-last, (C, B, H, W, channels), with the client axis C first, so each
convolution is one batched matmul of im2col patches (C, B*H*W, k*k*c_in) with the clients'
kernels (C, k*k*c_in, c_out). Training passes hold one client and at most ``GRAD_CHUNK``
samples (see there); evaluation passes are chunked by buffer size.

The flat parameter vector holds, layer by layer, the weight as a (fan_in, fan_out) matrix
followed by its bias; a kernel's fan-in is ordered (row offset, column offset, input channel)
and the fully connected layer's fan-in is the pooled map flattened as (row, column, channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fedsim.models.base import Model, stack_limit
from fedsim.models.images import image_size
from fedsim.models.scoring import log_softmax
from fedsim.options import ConfigError, check, each, positive
from fedsim.registry import MODELS

# Upper bound on the im2col buffer of one evaluation chunk in :meth:`Cnn.logits` (floats);
# 2**23 floats = 32 MiB keeps evaluation cache-friendly without starving the matmuls.
_EVAL_PATCH_FLOATS = 2**23

# Most samples in one forward/backward pass of :meth:`Cnn.loss_and_grad`. Measured on one core
# (28x28, default sizes): about 1.2-1.4 ms per sample up to 100 samples, 2.4 ms at 200 and 4 ms
# at 600, when the im2col buffers (0.6 MB per sample) fall out of cache; stacking clients costs
# the same way (10 clients of 10 samples: 3 ms per sample). So clients are computed one at a
# time and a larger batch in chunks of at most this many samples.
GRAD_CHUNK = 100


@dataclass(frozen=True)
class CnnOptions:
    """Options of the ``cnn`` model; ``backend = "torch"`` builds it in PyTorch (same layout)."""

    channels: tuple[int, int] = field(default=(32, 64), metadata=check(each(positive)))
    hidden: int = field(default=512, metadata=check(positive))
    kernel: int = field(default=5, metadata=check(positive))
    backend: Literal["numpy", "torch"] = "numpy"

    def validate(self) -> str | None:
        """Error text if the options are inconsistent, else None."""
        if len(self.channels) != 2:
            return f"channels: must have 2 entries, got {list(self.channels)!r}"
        return None


class Cnn(Model):
    """conv-ReLU-pool, conv-ReLU-pool, dense-ReLU, dense; softmax cross-entropy loss."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 512,
        kernel: int = 5,
    ) -> None:
        if len(channels) != 2 or min(channels) <= 0 or hidden <= 0 or kernel <= 0:
            raise ConfigError(
                f"model.cnn: need 2 positive channel counts and positive hidden and kernel, "
                f"got channels={channels!r}, hidden={hidden!r}, kernel={kernel!r}"
            )
        if num_classes < 2:
            raise ConfigError(f"model.cnn: need at least 2 classes, got {num_classes}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.height, self.width = image_size(self.input_shape)
        self.channels = (int(channels[0]), int(channels[1]))
        self.hidden = int(hidden)
        self.kernel = int(kernel)
        if self.kernel > min(self.height, self.width):
            # Padded to keep the size, a larger kernel would mostly see padding (and cost
            # kernel^2 floats per pixel for nothing).
            raise ConfigError(
                f"model.kernel: must be at most the image's side ({min(self.height, self.width)})"
                f", got {self.kernel}"
            )
        k, (c1, c2) = self.kernel, self.channels
        flat = (self.height // 4) * (self.width // 4) * c2
        # (weight shape, bias length) per layer; fan-in is the weight's first dimension.
        layers = [((k * k, c1), c1), ((k * k * c1, c2), c2), ((flat, hidden), hidden)]
        layers.append(((hidden, num_classes), num_classes))
        self._blocks: list[tuple[int, int, tuple[int, ...]]] = []
        offset = 0
        for wshape, blen in layers:
            for shape in (wshape, (blen,)):
                size = math.prod(shape)
                self._blocks.append((offset, offset + size, shape))
                offset += size
        self.num_parameters = offset
        # Floats of the larger of the two im2col buffers per sample, to size evaluation chunks.
        self._patch_floats = max(
            self.height * self.width * k * k, (self.height // 2) * (self.width // 2) * k * k * c1
        )

    @property
    def max_stack(self) -> int:  # type: ignore[override]
        """Clients are computed one at a time inside a step, so a stack only adds memory: as
        many as fit :data:`~fedsim.models.base.STACK_BYTES` (1 for the default sizes, 6.7 MB a
        client), so that each client's parameters stay in cache for all its steps."""
        return stack_limit(self.num_parameters, Model.max_stack)

    def init(self, seed: int) -> np.ndarray:
        """He-normal weights (std sqrt(2 / fan_in)) and zero biases, float32 of shape (P,)."""
        rng = np.random.default_rng(seed)
        w = np.zeros(self.num_parameters, dtype=np.float32)
        for start, stop, shape in self._blocks[0::2]:
            std = math.sqrt(2.0 / shape[0])
            w[start:stop] = rng.standard_normal(stop - start) * std
        return w

    def unflatten(self, w: np.ndarray) -> list[np.ndarray]:
        """Views (C, *shape) into w (C, P): [w1, b1, w2, b2, w3, b3, w4, b4] as documented above."""
        c = w.shape[0]
        return [w[:, start:stop].reshape(c, *shape) for start, stop, shape in self._blocks]

    def loss_and_grad(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean cross-entropy per client (C,) float64 and its gradient (C, P).

        w: (C, P); x: (C, B, *input_shape); y: (C, B) int64. Computes in float32, or in float64
        when w is float64 (used for gradient checks); the gradient has w's dtype.
        """
        dtype = _compute_dtype(w)
        w = np.ascontiguousarray(w, dtype=dtype)
        if w.ndim != 2 or w.shape[1] != self.num_parameters:
            raise ValueError(f"w must have shape (C, {self.num_parameters}), got {w.shape}")
        n_clients, batch = y.shape
        if x.shape != (n_clients, batch, *self.input_shape):
            raise ValueError(
                f"x must have shape {(n_clients, batch, *self.input_shape)}, got {x.shape}"
            )
        loss = np.zeros(n_clients, dtype=np.float64)
        # One chunk per client (the usual minibatch) writes its gradient in place; several add.
        one_chunk = batch <= GRAD_CHUNK
        grad = np.empty_like(w) if one_chunk else np.zeros_like(w)
        part = None if one_chunk else np.empty((1, self.num_parameters), dtype=dtype)
        for k in range(n_clients):
            params = self.unflatten(w[k : k + 1])
            for start in range(0, batch, GRAD_CHUNK):
                stop = min(start + GRAD_CHUNK, batch)
                xb = x[k : k + 1, start:stop].astype(dtype, copy=False)
                out = grad[k : k + 1] if part is None else part
                loss[k] += self._chunk_loss_and_grad(
                    params, xb, y[k : k + 1, start:stop], batch, out
                )
                if part is not None:
                    grad[k] += part[0]
        return loss, grad

    def _chunk_loss_and_grad(
        self,
        params: list[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        batch: int,
        out: np.ndarray,
    ) -> float:
        """One client's summed cross-entropy over a chunk of its batch, divided by the whole
        batch's size ``batch``; writes the gradient of that quantity into ``out`` (1, P)."""
        cache = self._forward(params, x, keep=True)
        logp = log_softmax(cache["logits"], axis=2)
        picked = np.take_along_axis(logp, y[:, :, None], axis=2)[:, :, 0]
        # d(mean cross-entropy)/d(logits) = (softmax - onehot) / B
        probs = np.exp(logp)
        np.put_along_axis(probs, y[:, :, None], np.exp(picked)[:, :, None] - 1.0, axis=2)
        dlogits = (probs / batch).astype(out.dtype)
        self._backward(params, cache, dlogits, self.unflatten(out))
        return float(-picked.sum() / batch)

    def logits(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits (n, num_classes) of parameters w (P,) on x (n, *input_shape), in chunks."""
        dtype = _compute_dtype(w)
        params = self.unflatten(np.asarray(w, dtype=dtype).reshape(1, -1))
        n = x.shape[0]
        out = np.empty((n, self.num_classes), dtype=dtype)
        chunk = max(1, _EVAL_PATCH_FLOATS // self._patch_floats)
        for start in range(0, n, chunk):
            xb = x[None, start : start + chunk].astype(dtype, copy=False)
            out[start : start + chunk] = self._forward(params, xb, keep=False)["logits"][0]
        return out

    def _forward(
        self, params: list[np.ndarray], x: np.ndarray, keep: bool
    ) -> dict[str, np.ndarray]:
        """Logits for x of shape (C, B, *input_shape), plus (if ``keep``) the activations and
        pooling masks the backward pass needs."""
        w1, b1, w2, b2, w3, b3, w4, b4 = params
        n_clients, batch = x.shape[:2]
        h, w = self.height, self.width
        c1, c2 = self.channels
        cols1 = self._im2col(x.reshape(n_clients, batch, h, w, 1))
        z1 = np.matmul(cols1, w1)
        z1 += b1[:, None, :]
        a1, masks1 = _pool_relu(z1.reshape(n_clients, batch, h, w, c1), keep)
        cols2 = self._im2col(a1)
        z2 = np.matmul(cols2, w2)
        z2 += b2[:, None, :]
        a2, masks2 = _pool_relu(z2.reshape(n_clients, batch, h // 2, w // 2, c2), keep)
        flat = a2.reshape(n_clients, batch, -1)
        hid = np.matmul(flat, w3)
        hid += b3[:, None, :]
        np.maximum(hid, 0, out=hid)
        logits = np.matmul(hid, w4)
        logits += b4[:, None, :]
        if not keep:
            return {"logits": logits}
        return {
            "cols1": cols1,
            "a1": a1,
            "masks1": masks1,
            "cols2": cols2,
            "a2": a2,
            "masks2": masks2,
            "flat": flat,
            "hid": hid,
            "logits": logits,
        }

    def _backward(
        self,
        params: list[np.ndarray],
        cache: dict[str, np.ndarray],
        dlogits: np.ndarray,
        grads: list[np.ndarray],
    ) -> None:
        """Write the gradient of every block into ``grads`` (views of the gradient vector)."""
        _, _, w2, _, w3, _, w4, _ = params
        g_w1, g_b1, g_w2, g_b2, g_w3, g_b3, g_w4, g_b4 = grads
        n_clients = dlogits.shape[0]
        c1, c2 = self.channels
        hid = cache["hid"]
        g_w4[...] = np.matmul(hid.transpose(0, 2, 1), dlogits)
        g_b4[...] = dlogits.sum(axis=1)
        dhid = np.matmul(dlogits, w4.transpose(0, 2, 1))
        dhid *= hid > 0
        g_w3[...] = np.matmul(cache["flat"].transpose(0, 2, 1), dhid)
        g_b3[...] = dhid.sum(axis=1)
        da2 = np.matmul(dhid, w3.transpose(0, 2, 1))
        a2 = cache["a2"]
        dz2 = _unpool_relu(da2.reshape(a2.shape), a2, cache["masks2"])
        dz2 = dz2.reshape(n_clients, -1, c2)
        g_w2[...] = np.matmul(cache["cols2"].transpose(0, 2, 1), dz2)
        g_b2[...] = dz2.sum(axis=1)
        dcols2 = np.matmul(dz2, w2.transpose(0, 2, 1))
        a1 = cache["a1"]
        da1 = self._col2im(dcols2, a1.shape)
        dz1 = _unpool_relu(da1, a1, cache["masks1"]).reshape(n_clients, -1, c1)
        g_w1[...] = np.matmul(cache["cols1"].transpose(0, 2, 1), dz1)
        g_b1[...] = dz1.sum(axis=1)

    def _pads(self) -> tuple[int, int]:
        """Zero padding (before, after) per spatial side for a "same" convolution."""
        before = (self.kernel - 1) // 2
        return before, self.kernel - 1 - before

    def _im2col(self, a: np.ndarray) -> np.ndarray:
        """Patches (C, B*H*W, k*k*c) of a channels-last map a (C, B, H, W, c), zero padded."""
        n_clients, batch, h, w, c = a.shape
        k = self.kernel
        before, _ = self._pads()
        padded = np.zeros((n_clients, batch, h + k - 1, w + k - 1, c), dtype=a.dtype)
        padded[:, :, before : before + h, before : before + w] = a
        windows = sliding_window_view(padded, (k, k), axis=(2, 3))  # (C, B, H, W, c, k, k)
        cols = np.ascontiguousarray(windows.transpose(0, 1, 2, 3, 5, 6, 4))
        return cols.reshape(n_clients, batch * h * w, k * k * c)

    def _col2im(self, dcols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Adjoint of :meth:`_im2col`: gradient (C, B, H, W, c) of the map from its patches'."""
        n_clients, batch, h, w, c = shape
        k = self.kernel
        before, _ = self._pads()
        d = dcols.reshape(n_clients, batch, h, w, k, k, c)
        dpadded = np.zeros((n_clients, batch, h + k - 1, w + k - 1, c), dtype=dcols.dtype)
        # k*k shifted adds: each kernel offset touches every pixel once, in a fixed order.
        for i in range(k):
            for j in range(k):
                dpadded[:, :, i : i + h, j : j + w] += d[:, :, :, :, i, j]
        return dpadded[:, :, before : before + h, before : before + w]


_QUARTERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _pool_relu(z: np.ndarray, masks: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """ReLU of 2x2 max pooling of z (C, B, H, W, c) and, if ``masks``, one boolean mask per
    window position marking where each window's maximum was taken (one position per window)."""
    quarters = [z[:, :, i::2, j::2] for i, j in _QUARTERS]
    pooled = np.maximum(np.maximum(quarters[0], quarters[1]), np.maximum(quarters[2], quarters[3]))
    # Ties go to the first position, so the gradient of a window is routed exactly once.
    hits = []
    if masks:
        free = np.ones(pooled.shape, dtype=bool)
        for quarter in quarters:
            hit = (quarter == pooled) & free
            free &= ~hit
            hits.append(hit)
    # relu(maxpool(z)) == maxpool(relu(z)), and the ReLU is 4x cheaper after pooling.
    np.maximum(pooled, 0, out=pooled)
    return pooled, hits


def _unpool_relu(dpooled: np.ndarray, pooled: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Backward of :func:`_pool_relu`: gradient (C, B, H, W, c) of its input z."""
    g = dpooled * (pooled > 0)
    n_clients, batch, h2, w2, c = pooled.shape
    dz = np.empty((n_clients, batch, 2 * h2, 2 * w2, c), dtype=dpooled.dtype)
    for (i, j), mask in zip(_QUARTERS, masks, strict=True):
        np.multiply(g, mask, out=dz[:, :, i::2, j::2])
    return dz


def _compute_dtype(w: np.ndarray) -> type:
    """float64 if w is float64 (gradient checks), float32 otherwise."""
    return np.float64 if np.asarray(w).dtype == np.float64 else np.float32


@MODELS.register("cnn", CnnOptions)
def make_cnn(options: CnnOptions, input_shape: tuple[int, ...], num_classes: int) -> Model:
    """The McMahan et al. (2017) CNN for images of ``input_shape`` and ``num_classes`` classes."""
    err = options.validate()
    if err:
        raise ConfigError(f"model.{err}")
    model = Cnn(
        input_shape,
        num_classes,
        channels=options.channels,
        hidden=options.hidden,
        kernel=options.kernel,
    )
    if options.backend == "numpy":
        return model
    from fedsim.models.torch_models import torch_builtin

    kwargs = {"input_shape": model.input_shape, "num_classes": model.num_classes}
    kwargs.update(channels=model.channels, hidden=model.hidden, kernel=model.kernel)
    return torch_builtin("McMahanCnn", model.input_shape, model.num_classes, kwargs, model.init)
