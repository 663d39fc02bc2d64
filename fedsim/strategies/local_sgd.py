"""Stacked local SGD: the default client update (FedAvg, FedProx and the server optimisers)."""

from __future__ import annotations

import numpy as np

from fedsim.models.base import Model
from fedsim.strategies.contract import ClientBatch, ClientOutput, ClientUpdate


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
    correction: np.ndarray | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch SGD from ``w_global`` for C clients with n samples each, all at once.

    x: (C, n, *input_shape); y: (C, n); batch_size 0 = full batch; ``orders`` (C, epochs, n)
    gives each client's sample order per epoch (None = data order). With ``mu > 0`` the
    gradient gains FedProx's proximal term mu * (w - w_global) (Li et al. 2020);
    ``correction`` (C, P) is added to every gradient (SCAFFOLD's c - c_i).
    ``weight_decay`` adds wd * w to the gradient and ``momentum`` keeps a velocity
    v = momentum * v + g, w -= lr * v (PyTorch's SGD without dampening or Nesterov); the
    velocity starts at zero every round.
    Returns (parameters (C, P) float32, mean minibatch loss over all steps (C,) float64).
    """
    c, n = y.shape
    bs = n if batch_size <= 0 else min(batch_size, n)
    w = np.repeat(w_global[None, :], c, axis=0)
    lr = np.float32(learning_rate)
    mu32 = np.float32(mu)
    wd, beta = np.float32(weight_decay), np.float32(momentum)
    velocity = np.zeros_like(w) if momentum else None
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
            if correction is not None:
                grad += correction
            if weight_decay:
                grad += wd * w
            if velocity is not None:
                velocity *= beta
                velocity += grad
                w -= lr * velocity
            else:
                grad *= lr  # the same float32 product as lr * grad, without a temporary
                w -= grad
    return w, loss_sum / (epochs * n)


def local_steps(num_samples: int, epochs: int, batch_size: int) -> int:
    """How many SGD steps :func:`local_sgd` takes on ``num_samples`` samples."""
    bs = num_samples if batch_size <= 0 else min(batch_size, num_samples)
    return epochs * -(-num_samples // bs)


def sgd_on(
    batch: ClientBatch,
    mu: float = 0.0,
    correction: np.ndarray | None = None,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`local_sgd` on a :class:`ClientBatch` with the round's batch size and rate."""
    return local_sgd(
        batch.model,
        batch.w_global,
        batch.x,
        batch.y,
        epochs=batch.epochs,
        batch_size=batch.ctx.batch_size,
        learning_rate=batch.ctx.learning_rate,
        mu=mu,
        orders=batch.orders,
        correction=correction,
        momentum=momentum,
        weight_decay=weight_decay,
    )


class LocalSGD(ClientUpdate):
    """Minibatch SGD on the client's data, with FedProx's proximal term for ``mu > 0``.

    ``momentum`` and ``weight_decay`` as in :func:`local_sgd` (client momentum restarts at
    zero each round: nothing is kept between rounds).
    """

    def __init__(self, mu: float = 0.0, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.mu, self.momentum, self.weight_decay = mu, momentum, weight_decay

    def __call__(self, batch: ClientBatch) -> ClientOutput:
        return ClientOutput(
            *sgd_on(batch, self.mu, momentum=self.momentum, weight_decay=self.weight_decay)
        )
