"""Hetero logistic regression: each party a block of weights, gradients under Paillier.

One minibatch with the active party A (labels, keys) and passive parties P:

1. each P sends A its partial logits ``u_P = X_P w_P`` (plaintext, as in the guest/host
   protocol without an arbiter; they reveal those sums, not the columns);
2. A computes the residuals ``d = sigmoid(sum_k u_k + b) - y`` and sends ``[[d]]``
   (Paillier-encrypted under its key) to every P;
3. P computes ``[[X_P^T d]]`` homomorphically (ciphertext times plaintext, then sums), adds a
   random mask ``r`` (uniform mod n, in the same fixed-point encoding) and sends it to A;
4. A decrypts ``X_P^T d + r`` and sends it back; P removes ``r`` (mod n, so exactly) and
   steps ``w_P -= lr * (X_P^T d / B + l2 w_P)``.

Values are fixed-point: ``round(v / 16^e)`` with ``16^e <= PRECISION``; sums of products are
exact integers mod n, so the decrypted gradient equals the plaintext one to that precision.
Paillier is the ``phe`` package (optional extra ``fedsim[vertical]``).
"""

from __future__ import annotations

import functools
import operator
import secrets
from typing import Any

import numpy as np

from fedsim.options import ConfigError
from fedsim.vertical.logistic import cross_entropy_and_residual

PRECISION = 1e-10
FLOAT_BYTES = 8
ENCODING_BITS = 40  # bits of a fixed-point plaintext at PRECISION (|value| < ~10)


def require_phe() -> Any:
    try:
        import phe
    except ImportError:
        raise ConfigError(
            "vertical.algorithm: 'hetero_lr' needs the phe package (pip install fedsim[vertical])"
        ) from None
    return phe


def keypair(key_length: int) -> tuple[Any, Any]:
    return require_phe().paillier.generate_paillier_keypair(n_length=key_length)


def encrypt(public_key: Any, values: np.ndarray) -> list[Any]:
    """A: ``[[values]]``."""
    return [public_key.encrypt(float(v), precision=PRECISION) for v in values]


def masked_gradient(public_key: Any, enc_d: list[Any], x: np.ndarray) -> tuple[list, list[int]]:
    """P: ``[[x^T d + r]]`` per column, and the masks ``r`` it keeps."""
    phe = require_phe()
    out, masks = [], []
    for j in range(x.shape[1]):
        terms = (
            c * phe.EncodedNumber.encode(public_key, float(v), precision=PRECISION)
            for c, v in zip(enc_d, x[:, j], strict=True)
        )
        total = functools.reduce(operator.add, terms)
        r = secrets.randbelow(public_key.n)
        out.append(total + phe.EncodedNumber(public_key, r, total.exponent))
        masks.append(r)
    return out, masks


def decrypt_masked(private_key: Any, masked: list[Any]) -> list[tuple[int, int]]:
    """A: the masked fixed-point values (encoding, exponent); they look uniform mod n."""
    return [(private_key.decrypt_encoded(c).encoding, c.exponent) for c in masked]


def unmask(public_key: Any, values: list[tuple[int, int]], masks: list[int]) -> np.ndarray:
    """P: remove its masks (mod n) and decode: ``x^T d``."""
    phe = require_phe()
    n = public_key.n
    return np.array(
        [
            phe.EncodedNumber(public_key, (enc - r) % n, exp).decode()
            for (enc, exp), r in zip(values, masks, strict=True)
        ]
    )


def secure_gradient(keys: tuple[Any, Any], d: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Steps 2-4 for one passive party: ``x^T d`` without P seeing d or A seeing x^T d."""
    public_key, private_key = keys
    masked, masks = masked_gradient(public_key, encrypt(public_key, d), x)
    return unmask(public_key, decrypt_masked(private_key, masked), masks)


class HeteroLR:
    """Weights per party (party 0 active, with the bias); ``keys=None`` trains in plaintext."""

    def __init__(self, dims: list[int], lr: float, l2: float, keys: tuple | None) -> None:
        self.w = [np.zeros(d) for d in dims]
        self.b = 0.0
        self.lr, self.l2, self.keys = lr, l2, keys

    def logits(self, xs: list[np.ndarray]) -> np.ndarray:
        return sum(x @ w for x, w in zip(xs, self.w, strict=True)) + self.b

    def gradients(self, xs: list[np.ndarray], y: np.ndarray) -> tuple[float, list, float]:
        """Loss, each party's weight gradient (passive ones through Paillier), bias gradient."""
        logit = self.logits(xs)
        loss, d = cross_entropy_and_residual(logit, y)
        if self.keys is None:
            sums = [x.T @ d for x in xs]
        else:
            public_key = self.keys[0]
            enc_d = encrypt(public_key, d)  # once per batch, sent to every passive party
            sums = [xs[0].T @ d]
            for x in xs[1:]:
                masked, masks = masked_gradient(public_key, enc_d, x)
                sums.append(unmask(public_key, decrypt_masked(self.keys[1], masked), masks))
        return loss, [s / len(y) for s in sums], float(d.mean())

    def step(self, xs: list[np.ndarray], y: np.ndarray) -> float:
        loss, grads, gb = self.gradients(xs, y)
        for w, g in zip(self.w, grads, strict=True):
            w -= self.lr * (g + self.l2 * w)
        self.b -= self.lr * gb
        return loss

    def parameters(self) -> np.ndarray:
        return np.concatenate([*self.w, [self.b]]).astype(np.float32)
