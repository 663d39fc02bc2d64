"""The PyTorch backend: layout and numbers equal to the numpy models, stacking, zoo, errors."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fedsim.models.torch_backend import TorchModel, choose_stacking  # noqa: E402
from fedsim.models.torch_models import (  # noqa: E402
    ZooBuilder,
    require_torch,
    worker_resources,
)
from fedsim.options import ConfigError  # noqa: E402
from fedsim.registry import MODELS  # noqa: E402


def _pair(name: str, shape: tuple[int, ...], **options):
    entry = MODELS.get(name)
    numpy_model = entry.factory(entry.options(**options), shape, 10)
    torch_model = entry.factory(entry.options(backend="torch", **options), shape, 10)
    return numpy_model, torch_model


@pytest.mark.parametrize(
    "name, options, count",
    [("softmax", {}, 7_850), ("mlp", {}, 199_210), ("cnn", {}, 1_663_370)],
)
def test_torch_builtins_match_numpy_parameter_count_init_and_gradient(name, options, count):
    numpy_model, torch_model = _pair(name, (28, 28), **options)
    assert torch_model.num_parameters == numpy_model.num_parameters == count
    assert np.array_equal(torch_model.init(7), numpy_model.init(7))
    rng = np.random.default_rng(0)
    w = np.stack([numpy_model.init(1), numpy_model.init(2)])
    w += rng.normal(0, 0.01, w.shape).astype(np.float32)  # non-zero softmax weights too
    x = rng.random((2, 6, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, (2, 6))
    loss_t, grad_t = torch_model.loss_and_grad(w, x, y)
    loss_n, grad_n = numpy_model.loss_and_grad(w, x, y)
    assert loss_t.dtype == np.float64 and grad_t.dtype == np.float32 and grad_t.shape == w.shape
    np.testing.assert_allclose(loss_t, loss_n, rtol=1e-5)
    assert np.abs(grad_t - grad_n).max() < 1e-5 * max(1.0, np.abs(grad_n).max())
    np.testing.assert_allclose(
        torch_model.logits(w[0], x[0]), numpy_model.logits(w[0], x[0]), atol=1e-5
    )


def test_loop_and_vmap_give_the_same_gradients_and_a_client_ignores_its_stack():
    _, base = _pair("mlp", (8, 8), hidden=(16,))
    rng = np.random.default_rng(1)
    w = np.stack([base.init(s) for s in range(4)])
    x = rng.random((4, 5, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, (4, 5))
    out = {}
    for mode in ("loop", "vmap"):
        m = TorchModel(base.builder, (8, 8), 10, init=base.init, stacking=mode)
        assert m.mode == mode
        out[mode] = m.loss_and_grad(w, x, y)
        alone = m.loss_and_grad(w[2:3], x[2:3], y[2:3])
        if mode == "loop":  # one client at a time: bit-identical whatever the stack
            assert np.array_equal(alone[1][0], out[mode][1][2])
        np.testing.assert_allclose(alone[1][0], out[mode][1][2], atol=1e-7)
    np.testing.assert_allclose(out["loop"][1], out["vmap"][1], atol=1e-6)
    np.testing.assert_allclose(out["loop"][0], out["vmap"][0], rtol=1e-6)


def test_stacking_is_looped_on_cpu_and_for_recurrent_or_batchnorm_modules():
    dense = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert choose_stacking(dense, "cpu") == "loop"
    assert choose_stacking(dense, "cuda") == "vmap"
    assert choose_stacking(torch.nn.Sequential(torch.nn.BatchNorm1d(4)), "cuda") == "loop"
    assert choose_stacking(torch.nn.LSTM(4, 4), "cuda") == "loop"
    assert choose_stacking(torch.nn.Sequential(torch.nn.Dropout(0.5), dense), "cuda") == "loop"


def test_torch_model_pickles_without_its_module_and_rebuilds_it():
    _, model = _pair("cnn", (12, 12), channels=(2, 3), hidden=5, kernel=3)
    blob = pickle.dumps(model)
    assert len(blob) < 20_000  # the builder and the numpy init, not the module's tensors
    back = pickle.loads(blob)
    w = model.init(3)[None]
    x = np.random.default_rng(2).random((1, 4, 12, 12), dtype=np.float32)
    y = np.array([[0, 1, 2, 3]])
    assert np.array_equal(back.loss_and_grad(w, x, y)[1], model.loss_and_grad(w, x, y)[1])


def test_lstm_has_mcmahan_shape_and_takes_token_ids():
    model = MODELS.get("lstm").factory(MODELS.get("lstm").options(), (80,), 80)
    # Embedding 80x8; two LSTM layers of 256 (4 gates, two biases each); dense 256 -> 80.
    expected = 80 * 8 + 4 * 256 * (8 + 256 + 2) + 4 * 256 * (256 + 256 + 2) + 256 * 80 + 80
    assert model.num_parameters == expected == 819_920
    assert model.mode == "loop"
    x = np.random.default_rng(3).integers(0, 80, (2, 3, 80)).astype(np.float32)
    loss, grad = model.loss_and_grad(np.stack([model.init(0)] * 2), x, x[:, :, -1].astype(int))
    assert np.isfinite(loss).all() and np.abs(grad).sum() > 0
    assert model.logits(model.init(0), x[0]).shape == (3, 80)


def test_resnet_uses_groupnorm_and_trains_a_step():
    entry = MODELS.get("resnet")
    model = entry.factory(entry.options(blocks=1, width=8), (3, 32, 32), 10)
    norms = [m for m in model.module.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.module.modules()
    )
    assert not list(model.module.buffers())
    rng = np.random.default_rng(4)
    w = model.init(0)[None]
    x = rng.random((1, 8, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, (1, 8))
    loss0, grad = model.loss_and_grad(w, x, y)
    loss1, _ = model.loss_and_grad(w - 0.05 * grad, x, y)
    assert loss1[0] < loss0[0]


def test_init_of_a_module_is_a_pure_function_of_the_seed():
    model = TorchModel(ZooBuilder("DenseNet", (("num_classes", 3), ("num_features", 4))), (4,), 3)
    torch.manual_seed(123)  # the global generator does not matter
    a = model.init(5)
    torch.rand(10)
    assert np.array_equal(a, model.init(5)) and not np.array_equal(a, model.init(6))


def test_dropout_masks_are_keyed_on_the_client_not_the_stack():
    def build():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(6, 3))

    model = TorchModel(build, (6,), 3)
    rng = np.random.default_rng(5)
    w = np.stack([model.init(s) for s in range(3)])
    x = rng.random((3, 4, 6), dtype=np.float32)
    y = rng.integers(0, 3, (3, 4))
    _, stacked = model.loss_and_grad(w, x, y)
    torch.rand(5)  # moving the global generator changes nothing
    _, alone = model.loss_and_grad(w[1:2], x[1:2], y[1:2])
    assert np.array_equal(stacked[1], alone[0])


def test_missing_torch_is_a_one_line_error_naming_model_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "fedsim.models.torch_backend")
    with pytest.raises(ConfigError) as err:
        require_torch()
    text = str(err.value)
    assert text.startswith("model.backend: 'torch' needs PyTorch") and "pip install" in text
    assert "\n" not in text
    entry = MODELS.get("mlp")
    with pytest.raises(ConfigError, match=r"^model\.backend: "):
        entry.factory(entry.options(backend="torch"), (4,), 2)


def test_cuda_workers_request_an_equal_share_of_the_gpu():
    _, model = _pair("softmax", (4,))
    assert worker_resources(model, 4) == {"num_cpus": 1}
    model.device = "cuda"  # the request only; nothing runs on it here
    assert worker_resources(model, 4) == {"num_cpus": 1, "num_gpus": 0.25}
