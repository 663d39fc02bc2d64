"""Federated transfer learning: two encoders into one space, trained on the shared samples.

Liu, Kang, Xing, Chen and Yang, "A Secure Federated Transfer Learning Framework", IEEE
Intelligent Systems 35(4), 2020 (arXiv:1812.03337), section 3. The source party A holds
samples ``x^A`` with labels ``y`` in {-1, +1}; the target party B holds samples ``x^B`` of
other features; some sample IDs are held by both (the overlap). Each party's encoder maps
its features into R^d: ``u^A = Net_A(x^A)``, ``u^B = Net_B(x^B)``. B's samples are scored by

    phi(u^B) = Phi_A . u^B,        Phi_A = (1/N_A) sum over A's samples i of y_i u_i^A

(their eq. 3, with the linear translator G(u) = u), and the objective (their eq. 6) is

    L = sum_c l1(y_c, phi(u_c^B)) + gamma sum_c l2(u_c^A, u_c^B)
        + lambda/2 (sum ||W^A||^2 + sum ||W^B||^2)

over overlap samples c, with the logistic loss ``l1(y, phi) = log(1 + exp(-y phi))`` (eq. 4)
and the alignment loss ``l2 = ||u^A - u^B||^2`` (eq. 5, the squared-distance choice). Here a
minibatch of overlap samples stands for the overlap, so the two sums are averaged over the
batch (the paper's objective divided by the batch size), ``Phi_A`` is recomputed over all of
A's samples at every step (their Algorithm 1), and the penalty is on weight matrices (the
encoders' biases are not penalised).

Plain exchange per step (the secure, Taylor-approximated Paillier variant is not built): B
sends ``u^B`` of the batch to A; A, which holds ``y``, ``u^A`` and ``Phi_A``, evaluates the
loss and returns ``dL/du^B``; each party back-propagates through its own encoder. For
prediction A sends ``Phi_A`` (d numbers) to B, which scores its own samples.

The baseline is B's encoder followed by a linear layer to one logit, trained with the
logistic loss on the overlap samples' labels alone: the same function family as
``Phi_A . Net_B(x)``, without A's samples.
"""

from __future__ import annotations

import numpy as np

from fedsim.vertical.logistic import signed_cross_entropy_and_residual
from fedsim.vertical.splitnn import Adam, Params, bottom_backward, bottom_forward, init_bottom


def _penalty(params: list[Params], lam: float) -> tuple[float, list[Params]]:
    """``lam/2 * sum ||W||^2`` over the weight matrices, and its gradients."""
    value, grads = 0.0, []
    for p in params:
        value += 0.5 * lam * sum(float(np.sum(v * v)) for k, v in p.items() if k[0] == "W")
        grads.append({k: lam * v if k[0] == "W" else np.zeros_like(v) for k, v in p.items()})
    return value, grads


def _add(a: Params, b: Params) -> Params:
    return {k: a[k] + b[k] for k in a}


def representation_gradients(
    u_all_a: np.ndarray,
    y_all: np.ndarray,
    batch_a: np.ndarray,
    u_b: np.ndarray,
    gamma: float,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The data part of the objective and its gradients with respect to the representations.

    ``u_all_a``: (N_A, d) A's representations of all its samples; ``y_all``: their labels in
    {-1, +1}; ``batch_a``: positions in A's samples of the batch's overlap samples; ``u_b``:
    (b, d) B's representations of the same samples, same order. Returns the loss, ``dL/du^A``
    for all of A's samples, ``dL/du^B`` for the batch (what A sends B) and ``phi``.
    """
    n_a, b = len(y_all), len(batch_a)
    phi_a = (y_all[:, None] * u_all_a).mean(axis=0)
    u_a, y = u_all_a[batch_a], y_all[batch_a]
    phi = u_b @ phi_a
    diff = u_a - u_b
    l1, residual = signed_cross_entropy_and_residual(phi, y)
    loss = l1 + float(gamma * np.mean(np.sum(diff * diff, 1)))
    dphi = residual / b  # d l1 / d phi, averaged over the batch
    d_ub = dphi[:, None] * phi_a[None, :] - (2.0 * gamma / b) * diff
    d_phi_a = dphi @ u_b
    d_ua = (y_all[:, None] / n_a) * d_phi_a[None, :]
    np.add.at(d_ua, batch_a, (2.0 * gamma / b) * diff)
    return loss, d_ua, d_ub, phi


class FTL:
    """The two encoders (A: source, B: target) and their Adam optimisers."""

    def __init__(
        self, dims: tuple[int, int], hidden: int, emb: int, lr: float, lam: float, gamma: float,
        rng: np.random.Generator,
    ) -> None:  # fmt: skip
        self.nets = [init_bottom(rng, d, hidden, emb) for d in dims]
        self.opts = [Adam(p, lr) for p in self.nets]
        self.lam, self.gamma = lam, gamma

    def gradients(
        self, x_a: np.ndarray, y_a: np.ndarray, batch_a: np.ndarray, x_b: np.ndarray
    ) -> tuple[float, list[Params]]:
        """Objective (with penalty) and both encoders' gradients, by the plain exchange.

        ``x_a``, ``y_a``: all of A's samples; ``batch_a``: positions among them of the batch's
        overlap samples; ``x_b``: B's features of the same samples, same order.
        """
        u_a, cache_a = bottom_forward(self.nets[0], x_a)
        u_b, cache_b = bottom_forward(self.nets[1], x_b)  # at B; u_b goes to A
        loss, d_ua, d_ub, _ = representation_gradients(u_a, y_a, batch_a, u_b, self.gamma)
        grads = [bottom_backward(self.nets[0], cache_a, d_ua),
                 bottom_backward(self.nets[1], cache_b, d_ub)]  # fmt: skip  # d_ub goes to B
        pen, pen_grads = _penalty(self.nets, self.lam)
        return loss + pen, [_add(g, p) for g, p in zip(grads, pen_grads, strict=True)]

    def step(self, x_a: np.ndarray, y_a: np.ndarray, batch_a: np.ndarray, x_b: np.ndarray) -> float:
        loss, grads = self.gradients(x_a, y_a, batch_a, x_b)
        for p, opt, g in zip(self.nets, self.opts, grads, strict=True):
            opt.step(p, g)
        return loss

    def phi_a(self, x_a: np.ndarray, y_a: np.ndarray) -> np.ndarray:
        """A's ``Phi_A`` from its current encoder (d numbers)."""
        return (y_a[:, None] * bottom_forward(self.nets[0], x_a)[0]).mean(axis=0)

    def scores(self, phi_a: np.ndarray, x_b: np.ndarray) -> np.ndarray:
        """B's ``phi(u^B)`` for its samples: a logit, positive for label +1."""
        return bottom_forward(self.nets[1], x_b)[0] @ phi_a

    def parameters(self) -> np.ndarray:
        return np.concatenate([v.ravel() for p in self.nets for v in p.values()]).astype(np.float32)


class TargetAlone:
    """The baseline: B's encoder and a linear logit, on the overlap's labels alone."""

    def __init__(
        self, dim: int, hidden: int, emb: int, lr: float, lam: float, rng: np.random.Generator
    ) -> None:
        self.net = init_bottom(rng, dim, hidden, emb)
        self.head = {"W": rng.normal(0.0, np.sqrt(1.0 / emb), emb), "b": np.zeros(())}
        self.opts = [Adam(self.net, lr), Adam(self.head, lr)]
        self.lam = lam

    def gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[Params]]:
        """Mean logistic loss (labels in {-1, +1}) plus penalty, and the gradients."""
        u, cache = bottom_forward(self.net, x)
        logit = u @ self.head["W"] + self.head["b"]
        loss, residual = signed_cross_entropy_and_residual(logit, y)
        dlogit = residual / len(y)
        grads = [bottom_backward(self.net, cache, np.outer(dlogit, self.head["W"])),
                 {"W": u.T @ dlogit, "b": np.asarray(dlogit.sum())}]  # fmt: skip
        pen, pen_grads = _penalty([self.net, self.head], self.lam)
        return loss + pen, [_add(g, p) for g, p in zip(grads, pen_grads, strict=True)]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, grads = self.gradients(x, y)
        for p, opt, g in zip((self.net, self.head), self.opts, grads, strict=True):
            opt.step(p, g)
        return loss

    def scores(self, x: np.ndarray) -> np.ndarray:
        return bottom_forward(self.net, x)[0] @ self.head["W"] + self.head["b"]
