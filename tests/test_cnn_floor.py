"""The CNN benchmark's floor: the plain im2col loop trains the same network as the numpy cnn."""

from __future__ import annotations

import numpy as np

from fedsim import config as config_mod
from fedsim.bench.cnn_floor import cnn_floor, cnn_step
from fedsim.bench.floors import run_floor
from fedsim.bench.harness import find_config
from fedsim.models.cnn import Cnn


def test_one_plain_im2col_step_equals_one_sgd_step_of_the_numpy_cnn():
    model = Cnn((8, 8), 3, channels=(2, 3), hidden=5, kernel=3)
    rng = np.random.default_rng(4)
    w = model.init(1)
    x = rng.random((6, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 6)
    lr = np.float32(0.1)
    _, grad = model.loss_and_grad(w[None], x[None], y[None])
    expected = w - lr * grad[0]
    params = [p[0].copy() for p in model.unflatten(w[None])]  # same layout, plain matrices
    cnn_step(params, x, y, lr, model.kernel)
    got = np.concatenate([p.ravel() for p in params])
    assert np.abs(expected - w).max() > 1e-3  # the step moved the weights
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_cnn_floor_runs_fedavg_rounds_of_the_configured_network_on_fashion_mnist():
    cfg = config_mod.load(
        find_config("fmnist_cnn"),
        ["model.channels=[2, 3]", "model.hidden=8", "model.kernel=3",
         "server.clients_per_round=2", "partition.samples_per_client=20"],
    )  # fmt: skip
    times, params = cnn_floor(cfg, rounds=2)
    assert len(times) == 2 and min(times) > 0
    # 28x28 images, two 2x2 poolings: the dense layer sees 7 * 7 * 3 features.
    assert [p.shape for p in params] == [(9, 2), (2,), (18, 3), (3,), (147, 8), (8,), (8, 10),
                                         (10,)]  # fmt: skip
    assert all(np.isfinite(p).all() and p.dtype == np.float32 for p in params)
    assert np.abs(params[-2]).max() > 0
    assert len(run_floor(cfg, 1)) == 1  # the harness's floor for this workload
