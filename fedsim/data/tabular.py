"""Small tabular data sets that scikit-learn ships on disk: ``breast_cancer`` and ``diabetes``.

``breast_cancer``: the Wisconsin diagnostic breast-cancer data (569 patients, 30 features of
cell nuclei measured on a digitised biopsy image; label 1 = benign, 0 = malignant).
``diabetes``: Efron et al. 2004 (442 patients, 10 baseline features; the target is a measure
of disease progression one year later, a regression). Both are read from the files installed
with scikit-learn (``pip install fedsim[tabular]``); nothing is downloaded.

A seeded split holds out ``test_fraction`` of the samples as the central test set (stratified
by label for classification); with ``standardize`` every feature is centred and scaled by the
training samples' mean and standard deviation, and a regression target likewise (so MAE and
RMSE are in units of the training targets' standard deviation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedsim.data.base import CentralData
from fedsim.options import ConfigError, check, in_range
from fedsim.registry import DATASETS
from fedsim.rng import Purpose, generator

__all__ = ["TabularOptions", "load_sklearn", "split_and_scale"]

# Sub-key under Purpose.DATA for the train/test split (the synthetic set keys DATA by device).
_SPLIT_STREAM = 2**41


@dataclass(frozen=True)
class TabularOptions:
    """Options of the scikit-learn tabular sets."""

    test_fraction: float = field(
        default=0.2, metadata=check(in_range(0, 1, lo_open=True, hi_open=True))
    )
    standardize: bool = True


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features float64, targets) of one of scikit-learn's bundled sets, read from disk."""
    try:
        from sklearn import datasets
    except ImportError:
        raise ConfigError(
            f"data.dataset: {name!r} needs scikit-learn (pip install fedsim[tabular])"
        ) from None
    loader: Callable = getattr(datasets, f"load_{name}")
    x, y = loader(return_X_y=True)
    return np.asarray(x, dtype=np.float64), np.asarray(y)


def split_and_scale(
    x: np.ndarray, y: np.ndarray, options: TabularOptions, seed: int
) -> CentralData:
    """Seeded hold-out split (per class for integer labels) and optional standardisation."""
    rng = generator(seed, Purpose.DATA, _SPLIT_STREAM)
    regression = y.dtype.kind == "f"
    groups = [np.arange(len(y))] if regression else [np.flatnonzero(y == c) for c in np.unique(y)]
    test_parts = []
    for members in groups:
        k = int(round(options.test_fraction * len(members)))
        test_parts.append(rng.permutation(members)[:k])
    test = np.sort(np.concatenate(test_parts))
    train = np.setdiff1d(np.arange(len(y)), test)
    if len(test) == 0 or len(train) == 0:
        raise ConfigError(
            f"data.test_fraction: {options.test_fraction:g} of {len(y)} samples leaves a side empty"
        )
    x_train, x_test = x[train], x[test]
    y_train, y_test = y[train], y[test]
    if options.standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        if regression:
            mu, sd = y_train.mean(), y_train.std() or 1.0
            y_train, y_test = (y_train - mu) / sd, (y_test - mu) / sd
    if regression:
        return CentralData(x_train, y_train.astype(np.float32), x_test, y_test.astype(np.float32))
    return CentralData(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64))


@DATASETS.register("breast_cancer", TabularOptions)
def make_breast_cancer(options: TabularOptions, *, num_clients: int, seed: int) -> CentralData:
    """Wisconsin diagnostic breast cancer: 30 features, 2 classes (1 = benign)."""
    x, y = load_sklearn("breast_cancer")
    return split_and_scale(x, y.astype(np.int64), options, seed)


@DATASETS.register("diabetes", TabularOptions)
def make_diabetes(options: TabularOptions, *, num_clients: int, seed: int) -> CentralData:
    """Diabetes progression (Efron et al. 2004): 10 features, a real-valued target."""
    x, y = load_sklearn("diabetes")
    return split_and_scale(x, y.astype(np.float64), options, seed)
