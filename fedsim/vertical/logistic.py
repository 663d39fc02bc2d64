"""The logistic function and the binary cross-entropy of logits, for every vertical model."""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), elementwise."""
    # exp(-z) overflows to inf for z < -709, and 1 / (1 + inf) is the right limit, 0.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def cross_entropy(logit: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of ``logit`` (n,) for labels ``y`` in {0, 1}, overflow-free."""
    return float(np.mean(np.logaddexp(0.0, logit) - y * logit))


def cross_entropy_and_residual(logit: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`cross_entropy` and its gradient per sample, ``sigmoid(logit) - y`` (not divided
    by the batch size)."""
    return cross_entropy(logit, y), sigmoid(logit) - y


def signed_cross_entropy_and_residual(logit: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The same loss for labels ``y`` in {-1, +1}, mean log(1 + exp(-y logit)), and its
    gradient per sample, ``-y / (1 + exp(y logit))`` (not divided by the batch size)."""
    with np.errstate(over="ignore"):  # exp overflows to inf where the gradient's limit is 0
        residual = -y / (1.0 + np.exp(y * logit))
    return float(np.mean(np.logaddexp(0.0, -y * logit))), residual
