"""The floor of the CNN benchmark: McMahan's CNN trained with FedAvg in one plain numpy loop.

One client after the other, one minibatch after the other, each convolution an im2col matrix
product on the batch's zero-padded patches, 2x2 max pooling by reshaping; no client axis, no
chunking, no framework. Run through :mod:`fedsim.bench.floors`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fedsim.bench.plain_loop import plain_fedavg
from fedsim.config import Config
from fedsim.models.images import image_size


def _im2col(a: np.ndarray, k: int) -> np.ndarray:
    """Patches (B*H*W, k*k*c) of a channels-last map a (B, H, W, c), zero padded ("same")."""
    b, h, w, c = a.shape
    p = (k - 1) // 2
    padded = np.zeros((b, h + k - 1, w + k - 1, c), a.dtype)
    padded[:, p : p + h, p : p + w] = a
    windows = sliding_window_view(padded, (k, k), axis=(1, 2))  # (B, H, W, c, k, k)
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(b * h * w, -1)


def _col2im(d: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    """The gradient of a map (B, H, W, c) from the gradient of its patches."""
    b, h, w, c = shape
    p = (k - 1) // 2
    d = d.reshape(b, h, w, k, k, c)
    out = np.zeros((b, h + k - 1, w + k - 1, c), d.dtype)
    for i in range(k):
        for j in range(k):
            out[:, i : i + h, j : j + w] += d[:, :, :, i, j]
    return out[:, p : p + h, p : p + w]


def _pool_relu(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ReLU of 2x2 max pooling of z (B, H, W, c), and where each window's maximum was."""
    b, h, w, c = z.shape
    windows = z.reshape(b, h // 2, 2, w // 2, 2, c)
    pooled = windows.max(axis=(2, 4))
    argmax = windows == pooled[:, :, None, :, None]
    return np.maximum(pooled, 0), argmax


def _unpool_relu(d: np.ndarray, pooled: np.ndarray, argmax: np.ndarray) -> np.ndarray:
    """Gradient (B, H, W, c) of the pooling's input from that of its output."""
    d = d * (pooled > 0)
    dz = argmax * d[:, :, None, :, None]
    b, h2, _, w2, _, c = dz.shape
    return dz.reshape(b, 2 * h2, 2 * w2, c)


def cnn_step(
    params: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: np.float32, k: int
) -> None:
    """One SGD step of mean cross-entropy on images x (B, H, W), in place on
    params = [W1, b1, W2, b2, W3, b3, W4, b4] (kernels as (k*k*c_in, c_out) matrices)."""
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    batch, h, w = x.shape
    cols1 = _im2col(x[..., None], k)
    a1, m1 = _pool_relu((cols1 @ w1 + b1).reshape(batch, h, w, -1))
    cols2 = _im2col(a1, k)
    a2, m2 = _pool_relu((cols2 @ w2 + b2).reshape(batch, h // 2, w // 2, -1))
    flat = a2.reshape(batch, -1)
    hid = np.maximum(flat @ w3 + b3, 0)
    z = hid @ w4 + b4
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(batch), y] -= 1
    d4 = p / np.float32(batch)
    d3 = (d4 @ w4.T) * (hid > 0)
    dz2 = _unpool_relu((d3 @ w3.T).reshape(a2.shape), a2, m2).reshape(-1, w2.shape[1])
    dz1 = _unpool_relu(_col2im(dz2 @ w2.T, a1.shape, k), a1, m1).reshape(-1, w1.shape[1])
    grads = [cols1.T @ dz1, dz1.sum(0), cols2.T @ dz2, dz2.sum(0)]
    grads += [flat.T @ d3, d3.sum(0), hid.T @ d4, d4.sum(0)]
    for param, grad in zip(params, grads, strict=True):
        param -= lr * grad


def cnn_floor(cfg: Config, rounds: int) -> tuple[list[float], list[np.ndarray]]:
    """McMahan's CNN (``model.channels``, ``hidden``, ``kernel``) trained with FedAvg, plainly
    (:func:`fedsim.bench.plain_loop.plain_fedavg`); He-normal weights, zero biases."""
    from fedsim.runner import prepare

    ds, opts = prepare(cfg).dataset, cfg.model.options
    (c1, c2), k = opts.channels, opts.kernel
    h, w = image_size(ds.input_shape)
    shapes = [(k * k, c1), (k * k * c1, c2), ((h // 4) * (w // 4) * c2, opts.hidden)]
    shapes.append((opts.hidden, ds.num_classes))
    rng = np.random.default_rng(cfg.experiment.seed)
    params = []
    for fan_in, fan_out in shapes:
        std = np.sqrt(2 / fan_in)
        params.append((rng.standard_normal((fan_in, fan_out)) * std).astype(np.float32))
        params.append(np.zeros(fan_out, np.float32))

    def step(local: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: np.float32) -> None:
        cnn_step(local, x.reshape(len(y), h, w), y, lr, k)

    return plain_fedavg(cfg, ds, params, step, rounds, rng)
