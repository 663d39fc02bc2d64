"""The binary cross-entropy every vertical model trains and is scored with."""

from __future__ import annotations

import math

import numpy as np

from fedsim.vertical.logistic import (
    cross_entropy,
    cross_entropy_and_residual,
    sigmoid,
    signed_cross_entropy_and_residual,
)


def _case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 3.0, 40), (rng.random(40) < 0.5).astype(float)


def test_residual_is_the_gradient_of_the_summed_loss_by_central_differences():
    logit, y = _case()
    _, residual = cross_entropy_and_residual(logit, y)
    h = 1e-6
    for i in range(len(logit)):
        up, down = logit.copy(), logit.copy()
        up[i] += h
        down[i] -= h
        numeric = len(y) * (cross_entropy(up, y) - cross_entropy(down, y)) / (2 * h)
        assert math.isclose(residual[i], numeric, rel_tol=1e-6, abs_tol=1e-8)


def test_signed_labels_give_the_same_loss_and_gradient_as_zero_one_labels():
    logit, y = _case(1)
    loss, residual = cross_entropy_and_residual(logit, y)
    signed_loss, signed_residual = signed_cross_entropy_and_residual(logit, 2.0 * y - 1.0)
    assert math.isclose(loss, signed_loss, rel_tol=1e-12)
    np.testing.assert_allclose(signed_residual, residual, rtol=1e-12, atol=1e-15)


def test_loss_of_huge_logits_is_finite_and_equals_the_margin_of_the_wrong_label():
    logit, y = np.array([800.0, -800.0, 800.0, -800.0]), np.array([1.0, 0.0, 0.0, 1.0])
    # Right with margin 800 costs log(1 + e^-800) ~ 0; wrong costs ~800 each: mean 400.
    assert cross_entropy(logit, y) == 400.0
    np.testing.assert_array_equal(sigmoid(logit), [1.0, 0.0, 1.0, 0.0])
