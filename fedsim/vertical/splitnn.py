"""Split neural network: a bottom MLP per party, a top MLP at the active party.

Per minibatch: every party runs its bottom model on its columns; passive parties send their
embeddings to the active party, which concatenates all embeddings, runs the top model and
the loss, and sends each passive party the gradient of the loss with respect to its
embedding; each party back-propagates through its own bottom model. The composition is the
centralised network ``top(concat(bottom_k(x_k)))`` and so are its gradients.

bottom_k: x -> relu(x W1 + b1) W2 + b2     top: z -> relu(z W3 + b3) W4 + b4 (a logit)
Loss: mean binary cross-entropy; updates: Adam (Kingma and Ba 2015).
"""

from __future__ import annotations

import numpy as np

from fedsim.vertical.logistic import cross_entropy_and_residual

Params = dict[str, np.ndarray]
FLOAT_BYTES = 4  # embeddings and their gradients travel as float32


def _layer(rng: np.random.Generator, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, n_out)), np.zeros(n_out)


def init_bottom(rng: np.random.Generator, d: int, hidden: int, emb: int) -> Params:
    (w1, b1), (w2, b2) = _layer(rng, d, hidden), _layer(rng, hidden, emb)
    return {"W1": w1, "b1": b1, "W2": w2, "b2": b2}


def init_top(rng: np.random.Generator, n_in: int, hidden: int) -> Params:
    (w3, b3), (w4, b4) = _layer(rng, n_in, hidden), _layer(rng, hidden, 1)
    return {"W3": w3, "b3": b3, "W4": w4, "b4": b4}


def bottom_forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, tuple]:
    pre = x @ p["W1"] + p["b1"]
    h = np.maximum(pre, 0.0)
    return h @ p["W2"] + p["b2"], (x, pre, h)


def bottom_backward(p: Params, cache: tuple, de: np.ndarray) -> Params:
    x, pre, h = cache
    dh = (de @ p["W2"].T) * (pre > 0)
    return {"W1": x.T @ dh, "b1": dh.sum(0), "W2": h.T @ de, "b2": de.sum(0)}


def top_logits(p: Params, embs: list[np.ndarray]) -> np.ndarray:
    z = np.concatenate(embs, axis=1)
    return (np.maximum(z @ p["W3"] + p["b3"], 0.0) @ p["W4"] + p["b4"])[:, 0]


def top_step(p: Params, embs: list[np.ndarray], y: np.ndarray) -> tuple[float, Params, list]:
    """Loss, the top model's gradients and the gradient for each party's embedding."""
    z = np.concatenate(embs, axis=1)
    pre = z @ p["W3"] + p["b3"]
    a = np.maximum(pre, 0.0)
    logit = (a @ p["W4"] + p["b4"])[:, 0]
    loss, residual = cross_entropy_and_residual(logit, y)
    dlogit = residual[:, None] / len(y)
    da = (dlogit @ p["W4"].T) * (pre > 0)
    grads = {"W3": z.T @ da, "b3": da.sum(0), "W4": a.T @ dlogit, "b4": dlogit.sum(0)}
    dz = da @ p["W3"].T
    cuts = np.cumsum([e.shape[1] for e in embs])[:-1]
    return loss, grads, np.split(dz, cuts, axis=1)


class Adam:
    """Adam on a dict of arrays, in place."""

    def __init__(self, params: Params, lr: float, l2: float = 0.0) -> None:
        self.lr, self.l2, self.t = lr, l2, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: Params, grads: Params) -> None:
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for k, g in grads.items():
            g = g + self.l2 * params[k] if k.startswith("W") else g
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            mhat = self.m[k] / (1 - b1**self.t)
            vhat = self.v[k] / (1 - b2**self.t)
            params[k] -= self.lr * mhat / (np.sqrt(vhat) + eps)


class SplitNN:
    """The parties' bottom models and the active party's top model (party 0 is active)."""

    def __init__(
        self, dims: list[int], hidden: int, emb: int, top_hidden: int, lr: float, l2: float,
        rng: np.random.Generator,
    ) -> None:  # fmt: skip
        self.bottoms = [init_bottom(rng, d, hidden, emb) for d in dims]
        self.top = init_top(rng, emb * len(dims), top_hidden)
        self.opts = [Adam(b, lr, l2) for b in self.bottoms]
        self.top_opt = Adam(self.top, lr, l2)
        self.emb = emb

    def gradients(self, xs: list[np.ndarray], y: np.ndarray) -> tuple[float, list, Params]:
        """Loss, each bottom model's gradients and the top's, by the split protocol."""
        outs = [bottom_forward(b, x) for b, x in zip(self.bottoms, xs, strict=True)]
        loss, top_grads, des = top_step(self.top, [e for e, _ in outs], y)
        grads = [
            bottom_backward(b, cache, de)
            for b, (_, cache), de in zip(self.bottoms, outs, des, strict=True)
        ]
        return loss, grads, top_grads

    def step(self, xs: list[np.ndarray], y: np.ndarray) -> float:
        loss, grads, top_grads = self.gradients(xs, y)
        for b, opt, g in zip(self.bottoms, self.opts, grads, strict=True):
            opt.step(b, g)
        self.top_opt.step(self.top, top_grads)
        return loss

    def logits(self, xs: list[np.ndarray]) -> np.ndarray:
        embs = [bottom_forward(b, x)[0] for b, x in zip(self.bottoms, xs, strict=True)]
        return top_logits(self.top, embs)

    def parameters(self) -> np.ndarray:
        arrays = [v for p in [*self.bottoms, self.top] for v in p.values()]
        return np.concatenate([a.ravel() for a in arrays]).astype(np.float32)
