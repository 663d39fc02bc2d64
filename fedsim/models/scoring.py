"""Test-set scores of a model's outputs: accuracy for classification, MAE and RMSE for regression.

Scores are computed from sums over batches (:func:`batch_sums`, then :func:`finish`), so a large
test set is scored without holding all outputs at once. The mean loss is the training loss of
the task: cross-entropy for classification, mean squared error for regression (so
``rmse ** 2 == loss``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SCORES", "batch_sums", "binary_auc", "finish", "log_softmax"]

#: The keys :func:`finish` returns for each task.
SCORES = {
    "classification": ("loss", "accuracy"),
    "regression": ("loss", "mae", "rmse"),
}


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z) along ``axis``, in float64 and shifted by the maximum so exp cannot overflow.

    The cross-entropy of label y is ``-log_softmax(z)[y]``; its gradient with respect to the
    logits is ``exp(log_softmax(z)) - onehot(y)``.
    """
    z = np.array(z, dtype=np.float64)
    z -= z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def batch_sums(task: str, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Sums over one batch: outputs (n, K) logits or (n, 1) predictions, y (n,) labels/targets."""
    z = np.asarray(outputs, dtype=np.float64)
    if task == "regression":
        err = z[:, 0] - np.asarray(y, dtype=np.float64)
        return {"abs": float(np.abs(err).sum()), "sq": float(np.dot(err, err))}
    logp = log_softmax(z, axis=1)
    return {
        "nll": float(-logp[np.arange(len(y)), y].sum()),
        "correct": float((z.argmax(axis=1) == y).sum()),
    }


def finish(task: str, sums: dict[str, float] | None, n: int) -> dict[str, float]:
    """Means over ``n`` samples from the added-up :func:`batch_sums`; NaN when n is 0."""
    if not n or sums is None:
        return dict.fromkeys(SCORES[task], math.nan)
    if task == "regression":
        mse = sums["sq"] / n
        return {"loss": mse, "mae": sums["abs"] / n, "rmse": math.sqrt(mse)}
    return {"loss": sums["nll"] / n, "accuracy": sums["correct"] / n}


def binary_auc(scores: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary labels y (1 = positive).

    The Mann-Whitney form: the probability that a random positive scores above a random
    negative, ties counting one half (average ranks). NaN when a class is absent.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(y).reshape(-1)
    pos = int(np.count_nonzero(y == 1))
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return math.nan
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # Average rank (1-based) of every run of equal scores.
    starts = np.flatnonzero(np.concatenate([[True], sorted_s[1:] != sorted_s[:-1]]))
    ends = np.concatenate([starts[1:], [len(s)]])
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
