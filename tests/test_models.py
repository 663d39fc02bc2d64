"""Tests of the softmax-regression and MLP models: gradients, sizes, determinism, training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsim.models.base import Model
from fedsim.models.mlp import DenseNetwork, MlpOptions, softmax_cross_entropy_
from fedsim.models.softmax import SoftmaxOptions, SoftmaxRegression
from fedsim.options import ConfigError, build
from fedsim.registry import MODELS


def _batch(
    model: Model, num_clients: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random float32 parameters, inputs and labels for ``num_clients`` clients."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.5, (num_clients, model.num_parameters)).astype(np.float32)
    x = rng.normal(0.0, 1.0, (num_clients, batch, *model.input_shape)).astype(np.float32)
    y = rng.integers(0, model.num_classes, (num_clients, batch))
    return w, x, y


def _finite_difference_grad(
    model: Model, w: np.ndarray, x: np.ndarray, y: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    """Central differences of the float64 loss of one client, parameter by parameter."""
    w = w.astype(np.float64)
    x = x.astype(np.float64)
    grad = np.empty_like(w)
    for j in range(len(w)):
        plus, minus = w.copy(), w.copy()
        plus[j] += eps
        minus[j] -= eps
        loss_plus = model.loss_and_grad(plus[None], x[None], y[None])[0][0]
        loss_minus = model.loss_and_grad(minus[None], x[None], y[None])[0][0]
        grad[j] = (loss_plus - loss_minus) / (2 * eps)
    return grad


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(
    "model",
    [SoftmaxRegression((5,), 4), DenseNetwork((2, 3), 3, (5, 4))],
    ids=["softmax", "mlp"],
)
def test_gradient_matches_central_differences(model: Model) -> None:
    w, x, y = _batch(model, num_clients=2, batch=7, seed=1)
    loss, grad = model.loss_and_grad(w.astype(np.float64), x.astype(np.float64), y)
    assert grad.dtype == np.float64
    for c in range(2):
        numeric = _finite_difference_grad(model, w[c], x[c], y[c])
        assert _relative_error(grad[c], numeric) < 1e-7
        # The bias entries alone, so a wrong bias gradient cannot hide behind the weights.
        bias = np.concatenate([np.arange(s, e) for s, e in _bias_slices(model)])
        assert np.abs(numeric[bias]).max() > 1e-3
        assert _relative_error(grad[c][bias], numeric[bias]) < 1e-7
    # The float32 path computes the same function up to single-precision rounding.
    loss32, grad32 = model.loss_and_grad(w, x, y)
    assert loss32.dtype == np.float64 and grad32.dtype == np.float32
    np.testing.assert_allclose(loss32, loss, rtol=1e-5)
    assert _relative_error(grad32.astype(np.float64), grad) < 1e-5


def _bias_slices(model: Model) -> list[tuple[int, int]]:
    """(start, end) of every bias in the flat vector, from the documented layout."""
    assert isinstance(model, DenseNetwork)
    widths = (model.num_features, *model.hidden, model.num_classes)
    slices, offset = [], 0
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        offset += fan_in * fan_out
        slices.append((offset, offset + fan_out))
        offset += fan_out
    return slices


def test_zero_softmax_has_uniform_loss_and_closed_form_gradient() -> None:
    model = SoftmaxRegression((3,), 5)
    x = np.arange(12, dtype=np.float32).reshape(1, 4, 3) / 10
    y = np.array([[0, 1, 1, 4]])
    loss, grad = model.loss_and_grad(np.zeros((1, model.num_parameters), np.float32), x, y)
    assert loss[0] == pytest.approx(math.log(5), rel=1e-6)
    # d/dz of mean cross-entropy at uniform probabilities is (1/K - onehot) / B.
    dz = (np.full((4, 5), 0.2) - np.eye(5)[y[0]]) / 4
    np.testing.assert_allclose(grad[0, :15].reshape(3, 5), x[0].T @ dz, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad[0, 15:], dz.sum(axis=0), rtol=1e-5, atol=1e-7)


def test_cross_entropy_head_is_stable_for_huge_logits() -> None:
    z = np.array([[[1000.0, 0.0, -1000.0], [0.0, 1e4, 1e4]]], dtype=np.float32)
    loss = softmax_cross_entropy_(z, np.array([[0, 1]]))
    # Sample 0 is certain and right (loss 0); sample 1 splits 1/2 between two classes.
    assert loss[0] == pytest.approx(math.log(2) / 2, rel=1e-6)
    np.testing.assert_allclose(z[0], [[0, 0, 0], [0, -0.25, 0.25]], atol=1e-7)


def test_parameter_counts() -> None:
    assert SoftmaxRegression((60,), 10).num_parameters == 610
    mnist_2nn = MODELS.get("mlp").factory(MlpOptions(hidden=(200, 200)), (28, 28), 10)
    assert mnist_2nn.num_parameters == 199_210
    assert mnist_2nn.model_bytes == 4 * 199_210
    assert DenseNetwork((7,), 3, (4,)).num_parameters == 7 * 4 + 4 + 4 * 3 + 3
    assert DenseNetwork((60,), 10, ()).num_parameters == 610


@pytest.mark.parametrize(
    "model",
    [SoftmaxRegression((60,), 10), DenseNetwork((4, 6), 5, (32, 16))],
    ids=["softmax", "mlp"],
)
def test_client_result_is_bitwise_independent_of_stacking(model: Model) -> None:
    w, x, y = _batch(model, num_clients=9, batch=10, seed=3)
    loss, grad = model.loss_and_grad(w, x, y)
    for c in range(9):
        alone = model.loss_and_grad(w[c : c + 1], x[c : c + 1], y[c : c + 1])
        assert np.array_equal(alone[0][0], loss[c])
        assert np.array_equal(alone[1][0], grad[c])
    # A different stack holding the same client at another position.
    order = np.array([5, 2, 7])
    sub_loss, sub_grad = model.loss_and_grad(w[order], x[order], y[order])
    assert np.array_equal(sub_loss, loss[order])
    assert np.array_equal(sub_grad, grad[order])


def test_memory_layout_of_the_inputs_does_not_matter() -> None:
    model = DenseNetwork((12,), 4, (8,))
    w, x, y = _batch(model, num_clients=3, batch=5, seed=6)
    loss, grad = model.loss_and_grad(w, x, y)
    wide = np.zeros((3, model.num_parameters + 3), np.float32)
    wide[:, 1:-2] = w
    strided_x = np.asfortranarray(x)
    for w_in in (wide[:, 1:-2], np.asfortranarray(w)):
        other_loss, other_grad = model.loss_and_grad(w_in, strided_x, y)
        assert np.array_equal(other_loss, loss) and np.array_equal(other_grad, grad)


def test_flattened_and_shaped_inputs_agree() -> None:
    shaped = DenseNetwork((4, 5), 3, (6,))
    flat = DenseNetwork((20,), 3, (6,))
    w, x, y = _batch(shaped, num_clients=2, batch=4, seed=4)
    loss_a, grad_a = shaped.loss_and_grad(w, x, y)
    loss_b, grad_b = flat.loss_and_grad(w, x.reshape(2, 4, 20), y)
    assert np.array_equal(loss_a, loss_b) and np.array_equal(grad_a, grad_b)


@pytest.mark.parametrize(
    "model",
    [SoftmaxRegression((6,), 4), DenseNetwork((6,), 4, (8,))],
    ids=["softmax", "mlp"],
)
def test_logits_and_evaluate_agree_with_training_loss(model: Model) -> None:
    w, x, y = _batch(model, num_clients=1, batch=30, seed=5)
    z = model.logits(w[0], x[0])
    assert z.shape == (30, 4)
    loss, _ = model.loss_and_grad(w, x, y)
    eval_loss, accuracy = model.evaluate(w[0], x[0], y[0], batch_size=7)
    assert eval_loss == pytest.approx(loss[0], rel=1e-5)
    assert accuracy == pytest.approx(float(np.mean(z.argmax(axis=1) == y[0])))


def test_mlp_init_is_seeded_fan_in_scaled_with_zero_biases() -> None:
    model = DenseNetwork((28, 28), 10, (200, 200))
    w = model.init(7)
    assert w.dtype == np.float32 and w.shape == (199_210,)
    assert np.array_equal(w, model.init(7))
    assert not np.array_equal(w, model.init(8))
    widths = (784, 200, 200, 10)
    gains = (2.0, 2.0, 1.0)  # He for layers feeding a ReLU, LeCun for the logits
    offset = 0
    for fan_in, fan_out, gain in zip(widths[:-1], widths[1:], gains, strict=True):
        weights = w[offset : offset + fan_in * fan_out]
        bound = math.sqrt(3 * gain / fan_in)
        assert np.abs(weights).max() <= bound
        # A uniform on [-bound, bound] has variance bound^2 / 3 = gain / fan_in.
        assert weights.var() == pytest.approx(gain / fan_in, rel=0.1)
        offset += fan_in * fan_out
        assert not w[offset : offset + fan_out].any()
        offset += fan_out


def test_softmax_init_is_zero() -> None:
    w = SoftmaxRegression((60,), 10).init(3)
    assert w.dtype == np.float32 and w.shape == (610,) and not w.any()


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four well separated Gaussian classes in 10 dimensions (linearly separable)."""
    rng = np.random.default_rng(seed)
    centers = 3.0 * np.eye(4, 10)
    y = rng.integers(0, 4, n)
    x = centers[y] + rng.normal(0.0, 0.5, (n, 10))
    return x.astype(np.float32), y


def _xor(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of the square, labelled by the quadrant parity, away from the axes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (4 * n, 2))
    x = x[np.abs(x).min(axis=1) > 0.1][:n]
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    return x.astype(np.float32), y


def _descend(
    model: Model, x: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch gradient descent from init(0); returns the loss before each step."""
    w = model.init(0)[None]
    losses = []
    for _ in range(steps):
        loss, grad = model.loss_and_grad(w, x[None], y[None])
        losses.append(loss[0])
        w -= lr * grad
    return w[0], np.array(losses)


def test_softmax_gradient_descent_learns_separable_blobs() -> None:
    model = MODELS.get("softmax").factory(SoftmaxOptions(), (10,), 4)
    x, y = _blobs(400, seed=0)
    w, losses = _descend(model, x, y, steps=300, lr=0.5)
    assert losses[0] == pytest.approx(math.log(4), rel=1e-6)
    assert losses[-1] < 0.05
    # Gradient descent on a convex smooth loss with a small step never goes uphill.
    assert np.all(np.diff(losses) <= 1e-7)
    x_test, y_test = _blobs(1000, seed=1)
    test_loss, accuracy = model.evaluate(w, x_test, y_test)
    assert accuracy >= 0.99 and test_loss < 0.1


def test_mlp_learns_xor_that_softmax_cannot() -> None:
    x, y = _xor(400, seed=0)
    mlp = DenseNetwork((2,), 2, (16,))
    w, losses = _descend(mlp, x, y, steps=300, lr=0.5)
    assert losses[-1] < 0.05 < 0.5 < losses[0]
    _, accuracy = mlp.evaluate(w, *_xor(1000, seed=1))
    assert accuracy >= 0.98
    linear = SoftmaxRegression((2,), 2)
    w_linear, _ = _descend(linear, x, y, steps=300, lr=0.5)
    _, linear_accuracy = linear.evaluate(w_linear, *_xor(1000, seed=1))
    # No line separates the quadrant parity; the best one is right on about 3/4 of points.
    assert linear_accuracy < 0.8


def test_registry_builds_models_and_options_are_validated() -> None:
    options = build(MlpOptions, {"hidden": [16, 8]}, "model")
    assert options.hidden == (16, 8)
    model = MODELS.get("mlp").factory(options, (60,), 10)
    assert isinstance(model, Model)
    assert model.num_parameters == 60 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10
    assert build(MlpOptions, {}, "model").hidden == (200, 200)
    softmax = MODELS.get("softmax").factory(build(SoftmaxOptions, {}, "model"), (60,), 10)
    assert softmax.num_parameters == 610
    assert MODELS.get("mlp").options is MlpOptions
    assert MODELS.get("softmax").options is SoftmaxOptions
    with pytest.raises(ConfigError, match=r"model\.hidden: must be > 0, got 0"):
        build(MlpOptions, {"hidden": [0]}, "model")
    with pytest.raises(ConfigError, match=r"model\.hidden: must be > 0, got -3"):
        build(MlpOptions, {"hidden": [4, -3]}, "model")
    with pytest.raises(ConfigError, match=r"model\.hidden\[0\]"):
        build(MlpOptions, {"hidden": [2.5]}, "model")
    with pytest.raises(ConfigError, match="unknown key"):
        build(SoftmaxOptions, {"hidden": [4]}, "model")
