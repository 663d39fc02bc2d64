"""The numpy CNN of McMahan et al. (2017): size, gradients, stacking invariance, training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsim.models import cnn
from fedsim.models.cnn import Cnn, CnnOptions, _pool_relu, _unpool_relu, make_cnn
from fedsim.options import ConfigError, build
from fedsim.registry import MODELS

TINY = {"channels": (2, 3), "hidden": 5, "kernel": 3}
BLOCKS = ["conv1 w", "conv1 b", "conv2 w", "conv2 b", "fc w", "fc b", "out w", "out b"]


def expected_parameters(h: int, w: int, k: int, c1: int, c2: int, hidden: int, classes: int) -> int:
    return (
        (k * k * 1 + 1) * c1
        + (k * k * c1 + 1) * c2
        + ((h // 4) * (w // 4) * c2 + 1) * hidden
        + (hidden + 1) * classes
    )


def random_batch(
    rng: np.random.Generator, model: Cnn, clients: int, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.random((clients, batch, *model.input_shape), dtype=np.float32)
    y = rng.integers(0, model.num_classes, (clients, batch))
    return x, y


def test_parameter_count_of_the_paper_model() -> None:
    model = MODELS.get("cnn").factory(CnnOptions(), (28, 28), 10)
    assert model.num_parameters == 1_663_370 == 832 + 51_264 + 3136 * 512 + 512 + 5130
    assert model.model_bytes == 4 * 1_663_370
    assert model.init(0).shape == (1_663_370,)


@pytest.mark.parametrize(
    ("shape", "kw", "classes"),
    [((8, 8), TINY, 3), ((12, 8), {"channels": (4, 6), "hidden": 7, "kernel": 4}, 5)],
)
def test_parameter_count_general(shape: tuple[int, int], kw: dict, classes: int) -> None:
    model = Cnn(shape, classes, **kw)
    assert model.num_parameters == expected_parameters(
        *shape, kw["kernel"], *kw["channels"], kw["hidden"], classes
    )
    sizes = [v.size for v in model.unflatten(model.init(0)[None])]
    assert sum(sizes) == model.num_parameters


@pytest.mark.parametrize("shape", [(784,), (1, 28, 28), (28, 28, 1)])
def test_input_shapes_are_equivalent(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    base = Cnn((28, 28), 10, channels=(4, 8), hidden=16)
    other = Cnn(shape, 10, channels=(4, 8), hidden=16)
    assert other.num_parameters == base.num_parameters
    w = base.init(3)[None]
    x, y = random_batch(rng, base, 1, 4)
    loss_a, grad_a = base.loss_and_grad(w, x, y)
    loss_b, grad_b = other.loss_and_grad(w, x.reshape(1, 4, *shape), y)
    assert np.array_equal(loss_a, loss_b)
    assert np.array_equal(grad_a, grad_b)


@pytest.mark.parametrize("shape", [(30, 30), (3, 28, 28), (783,), (28, 28, 2), (0, 0)])
def test_bad_input_shapes_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError):
        Cnn(shape, 10)


def test_options_validation() -> None:
    opts = build(CnnOptions, {"channels": [8, 16], "hidden": 32, "kernel": 3}, "model")
    assert opts == CnnOptions(channels=(8, 16), hidden=32, kernel=3)
    assert make_cnn(opts, (28, 28), 10).num_parameters == expected_parameters(
        28, 28, 3, 8, 16, 32, 10
    )
    for bad in ({"channels": [0, 4]}, {"channels": [4, 8, 16]}, {"hidden": 0}, {"kernel": -1}):
        with pytest.raises(ConfigError):
            build(CnnOptions, bad, "model")


def test_init_is_he_scaled_and_deterministic() -> None:
    model = Cnn((28, 28), 10)
    w0 = model.init(7)
    assert w0.dtype == np.float32
    assert np.array_equal(w0, model.init(7))
    assert not np.array_equal(w0, model.init(8))
    blocks = model.unflatten(w0[None])
    for name, weight, bias in zip(BLOCKS[0::2], blocks[0::2], blocks[1::2], strict=True):
        assert np.all(bias == 0), name
        fan_in = weight.shape[1]
        std = math.sqrt(2.0 / fan_in)
        # Relative standard error of a sample std is about 1 / sqrt(2 n); allow 5 of them.
        tol = 5 / math.sqrt(2 * weight.size)
        assert abs(weight.std() / std - 1) < tol, name
        assert abs(weight.mean()) < 5 * std / math.sqrt(weight.size), name


@pytest.mark.parametrize(
    ("shape", "kw"),
    [((8, 8), TINY), ((8, 12), {"channels": (2, 3), "hidden": 4, "kernel": 4})],
)
def test_gradient_matches_central_differences(shape: tuple[int, int], kw: dict) -> None:
    rng = np.random.default_rng(1)
    model = Cnn(shape, 3, **kw)
    clients, batch = 2, 4
    # Two clients with different weights and random (nonzero) biases, checked in float64.
    w = np.stack([model.init(s) for s in (11, 12)]).astype(np.float64)
    w += 0.1 * rng.standard_normal(w.shape)
    x, y = random_batch(rng, model, clients, batch)
    x = x.astype(np.float64)
    _, grad = model.loss_and_grad(w, x, y)
    assert grad.dtype == np.float64
    eps = 1e-6
    numeric = np.empty_like(w)
    for j in range(model.num_parameters):
        # Clients are independent, so one coordinate is perturbed in both at once.
        wp, wm = w.copy(), w.copy()
        wp[:, j] += eps
        wm[:, j] -= eps
        numeric[:, j] = (model.loss_and_grad(wp, x, y)[0] - model.loss_and_grad(wm, x, y)[0]) / (
            2 * eps
        )
    for name, g, n in zip(BLOCKS, model.unflatten(grad), model.unflatten(numeric), strict=True):
        assert np.abs(n).max() > 1e-4, f"{name}: vanishing gradient makes the check vacuous"
        np.testing.assert_allclose(g, n, rtol=1e-5, atol=1e-8, err_msg=name)


def test_float32_gradient_agrees_with_float64() -> None:
    rng = np.random.default_rng(2)
    model = Cnn((28, 28), 10, channels=(6, 8), hidden=32)
    w32 = np.stack([model.init(1), model.init(2)])
    x, y = random_batch(rng, model, 2, 8)
    loss32, grad32 = model.loss_and_grad(w32, x, y)
    loss64, grad64 = model.loss_and_grad(w32.astype(np.float64), x, y)
    assert grad32.dtype == np.float32 and loss32.dtype == np.float64
    np.testing.assert_allclose(loss32, loss64, rtol=1e-5)
    for name, g32, g64 in zip(
        BLOCKS, model.unflatten(grad32), model.unflatten(grad64), strict=True
    ):
        err = np.linalg.norm(g32 - g64) / np.linalg.norm(g64)
        assert err < 1e-4, name


@pytest.mark.parametrize(
    ("shape", "kw", "batch"),
    [
        ((28, 28), {}, 3),
        ((8, 8), TINY, 7),
        ((12, 16), {"channels": (3, 5), "hidden": 6, "kernel": 4}, 1),
    ],
)
def test_stacking_is_bitwise_invariant(shape: tuple[int, int], kw: dict, batch: int) -> None:
    rng = np.random.default_rng(3)
    model = Cnn(shape, 10, **kw)
    clients = 4
    w = np.stack([model.init(s) for s in range(clients)])
    x, y = random_batch(rng, model, clients, batch)
    loss, grad = model.loss_and_grad(w, x, y)
    for c in range(clients):
        alone_loss, alone_grad = model.loss_and_grad(w[c : c + 1], x[c : c + 1], y[c : c + 1])
        assert np.array_equal(alone_loss[0], loss[c])
        assert np.array_equal(alone_grad[0], grad[c])
    order = [2, 0, 3]
    loss_p, grad_p = model.loss_and_grad(w[order], x[order], y[order])
    assert np.array_equal(loss_p, loss[order])
    assert np.array_equal(grad_p, grad[order])


def test_batch_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    model = Cnn((8, 8), 4, **TINY)
    w = np.stack([model.init(s) for s in (7, 8)]).astype(np.float64)
    x, y = random_batch(rng, model, 2, 23)
    x = x.astype(np.float64)
    whole_loss, whole_grad = model.loss_and_grad(w, x, y)
    # Chunks of 5 samples: 23 = 4 x 5 + 3, so the last chunk is short.
    monkeypatch.setattr(cnn, "GRAD_CHUNK", 5)
    loss, grad = model.loss_and_grad(w, x, y)
    np.testing.assert_allclose(loss, whole_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, whole_grad, rtol=1e-11, atol=1e-14)
    # And the mean loss is the mean over all 23 samples, not over the chunks.
    direct = [-np.log(_softmax(model, w[c], x[c])[np.arange(23), y[c]]).mean() for c in (0, 1)]
    np.testing.assert_allclose(loss, direct, rtol=1e-12)


def _softmax(model: Cnn, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = model.logits(w, x).astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_logits_agree_with_training_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    model = Cnn((28, 28), 10, channels=(4, 8), hidden=16)
    w = model.init(5)
    # Evaluation chunks of 8 samples; n spans several chunks and is not a multiple of 8.
    monkeypatch.setattr(cnn, "_EVAL_PATCH_FLOATS", 8 * model._patch_floats)
    n = 3 * 8 + 5
    x, y = random_batch(rng, model, 1, n)
    z = model.logits(w, x[0])
    assert z.shape == (n, 10) and z.dtype == np.float32
    loss, _ = model.loss_and_grad(w[None], x, y)
    eval_loss, accuracy = model.evaluate(w, x[0], y[0], batch_size=64)
    assert eval_loss == pytest.approx(loss[0], rel=1e-5)
    assert accuracy == np.mean(z.argmax(axis=1) == y[0])
    np.testing.assert_allclose(model.logits(w, x[0, :7]), z[:7], rtol=1e-5, atol=1e-6)


def test_pooling_routes_each_window_gradient_once() -> None:
    rng = np.random.default_rng(5)
    z = rng.integers(-2, 3, (1, 2, 6, 4, 3)).astype(np.float32)  # many ties, many negatives
    pooled, masks = _pool_relu(z, True)
    expected = np.maximum(z.reshape(1, 2, 3, 2, 2, 2, 3).max(axis=(3, 5)), 0)
    assert np.array_equal(pooled, expected)
    assert np.array_equal(sum(m.astype(int) for m in masks), np.ones(pooled.shape, dtype=int))
    g = rng.standard_normal(pooled.shape).astype(np.float32)
    dz = _unpool_relu(g, pooled, masks)
    # Each window passes its gradient to exactly one input, and none where the ReLU is off.
    windows = dz.reshape(1, 2, 3, 2, 2, 2, 3)
    assert np.array_equal(windows.sum(axis=(3, 5)), g * (pooled > 0))
    assert np.all(np.count_nonzero(windows, axis=(3, 5)) <= 1)


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_col2im_is_the_adjoint_of_im2col(kernel: int) -> None:
    rng = np.random.default_rng(6)
    model = Cnn((8, 12), 3, channels=(2, 3), hidden=4, kernel=kernel)
    a = rng.standard_normal((2, 3, 4, 6, 2))
    cols = model._im2col(a)
    assert cols.shape == (2, 3 * 4 * 6, kernel * kernel * 2)
    d = rng.standard_normal(cols.shape)
    back = model._col2im(d, a.shape)
    assert np.vdot(cols, d) == pytest.approx(np.vdot(a, back), rel=1e-12)


def test_sgd_learns_an_easy_problem() -> None:
    rng = np.random.default_rng(0)
    n = 64
    y = rng.integers(0, 4, n)
    # Class c lights up quadrant c of an 8x8 image under noise.
    x = 0.1 * rng.standard_normal((n, 8, 8)).astype(np.float32)
    for c, (r, s) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == c, r : r + 4, s : s + 4] += 1.0
    model = Cnn((8, 8), 4, channels=(4, 8), hidden=16, kernel=3)
    w = np.stack([model.init(1), model.init(2)])
    xs, ys = np.stack([x, x]), np.stack([y, y])
    first, _ = model.loss_and_grad(w, xs, ys)
    for _ in range(30):
        _, grad = model.loss_and_grad(w, xs, ys)
        w -= np.float32(0.1) * grad
    last, _ = model.loss_and_grad(w, xs, ys)
    assert np.all(first > 1.0)  # about ln 4 at initialisation
    assert np.all(last < 0.1 * first)
    for c in range(2):
        assert model.evaluate(w[c], x, y)[1] == 1.0
