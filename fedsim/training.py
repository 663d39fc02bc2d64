"""Local training of a group of clients that share a batch schedule, stacked on a client axis."""

from __future__ import annotations

import numpy as np

from fedsim.models.base import Model


def local_sgd(
    model: Model,
    w_global: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    mu: float = 0.0,
    orders: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch SGD from ``w_global`` for C clients with n samples each, all at once.

    x: (C, n, *input_shape); y: (C, n); batch_size 0 = full batch; ``orders`` (C, epochs, n)
    gives each client's sample order per epoch (None = data order). With ``mu > 0`` the
    gradient gains FedProx's proximal term mu * (w - w_global) (Li et al. 2020).
    Returns (parameters (C, P) float32, mean minibatch loss over all steps (C,) float64).
    """
    c, n = y.shape
    bs = n if batch_size <= 0 else min(batch_size, n)
    w = np.repeat(w_global[None, :], c, axis=0)
    lr = np.float32(learning_rate)
    mu32 = np.float32(mu)
    rows = np.arange(c)[:, None]
    loss_sum = np.zeros(c, dtype=np.float64)
    for e in range(epochs):
        for start in range(0, n, bs):
            stop = min(start + bs, n)
            if orders is None:
                xb, yb = x[:, start:stop], y[:, start:stop]
            else:
                idx = orders[:, e, start:stop]
                xb, yb = x[rows, idx], y[rows, idx]
            loss, grad = model.loss_and_grad(w, xb, yb)
            loss_sum += loss * (stop - start)
            if mu:
                grad += mu32 * (w - w_global)
            w -= lr * grad
    return w, loss_sum / (epochs * n)
