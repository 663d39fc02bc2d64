"""Whole runs with torch models: equal to numpy, plug-ins, model objects, LEAF LSTM, devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fedsim  # noqa: E402
from fedsim import config as config_mod  # noqa: E402
from fedsim.options import ConfigError  # noqa: E402
from fedsim.runner import prepare  # noqa: E402

RUN = """
[experiment]
name = "torch"
seed = 4
[data]
dataset = "arrays"
path = "{path}"
[partition]
scheme = "natural"
[population]
num_clients = 4
[model]
{model}
[training]
local_epochs = 1
batch_size = 10
learning_rate = {lr}
[server]
rounds = 3
clients_per_round = 4
[runtime]
backend = "local"
progress = false
"""


def _data(tmp_path: Path, shape: tuple[int, ...], classes: int = 3, per_client: int = 20) -> Path:
    rng = np.random.default_rng(0)
    n = 4 * per_client
    centers = rng.normal(0, 1, (classes, *shape)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 0.5, (n, *shape)).astype(np.float32)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        x_train=x,
        y_train=y,
        x_test=x[:20],
        y_test=y[:20],
        client_train=np.repeat(np.arange(4), per_client),
    )
    return path


def _config(path: Path, model: str, lr: float = 0.1, *overrides: str) -> config_mod.Config:
    raw = tomllib.loads(RUN.format(path=path, model=textwrap.dedent(model), lr=lr))
    return config_mod.from_dict(config_mod.apply_overrides(raw, list(overrides)))


@pytest.mark.parametrize(
    "model, shape",
    [
        ('name = "softmax"', (6,)),
        ('name = "mlp"\nhidden = [16, 8]', (5, 5)),
        ('name = "cnn"\nchannels = [3, 4]\nhidden = 8\nkernel = 3', (8, 8)),
    ],
    ids=["softmax", "mlp", "cnn"],
)
def test_torch_and_numpy_backends_agree_after_three_rounds(tmp_path, model, shape):
    path = _data(tmp_path, shape)
    models = {}
    for backend in ("numpy", "torch"):
        cfg = _config(path, f'{model}\nbackend = "{backend}"')
        models[backend] = fedsim.run(cfg).model
    start = prepare(_config(path, model)).model.init(4)
    assert np.abs(models["numpy"] - start).max() > 1e-2  # it trained
    assert np.abs(models["torch"] - models["numpy"]).max() < 1e-4


PLUGIN = """
import torch
from torch import nn


def factory(input_shape, num_classes):
    features = 1
    for d in input_shape:
        features *= d
    return nn.Sequential(
        nn.Flatten(), nn.Linear(features, 12), nn.Tanh(), nn.Linear(12, num_classes)
    )
"""

CHECK = """
import json, sys
import fedsim
from fedsim import config as config_mod

cfg = config_mod.load(sys.argv[1])
out = {}
for backend, workers in (("local", 1), ("ray", 1), ("ray", 2)):
    sets = [f"runtime.backend={backend!r}", f"runtime.workers={workers}"]
    result = fedsim.run(config_mod.with_overrides(cfg, sets))
    out[f"{backend}-{workers}"] = [result.model.tolist(), result.rounds["train_loss"].tolist()]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_plugin_module_trains_identically_on_one_and_two_workers_ray_and_local(tmp_path):
    (tmp_path / "twolayer.py").write_text(PLUGIN)
    path = _data(tmp_path, (3, 4))
    exp = tmp_path / "exp.toml"
    exp.write_text(RUN.format(path=path, model='name = "twolayer:factory"', lr=0.1))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(exp)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    reference = runs.pop("local-1")
    assert len(reference[0]) == 12 * 12 + 12 + 12 * 3 + 3
    assert reference[1][-1] < reference[1][0]  # it learns
    for name, got in runs.items():
        assert got == reference, name


def test_run_accepts_an_nn_module_whose_parameters_are_the_initial_model(tmp_path):
    path = _data(tmp_path, (6,))
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    start = torch.cat([p.detach().reshape(-1) for p in module.parameters()]).numpy().copy()
    cfg = _config(path, 'name = "softmax"', 0.1, "server.rounds=1", "server.eval_every=0")
    one = fedsim.run(cfg, model=module)
    assert one.model.shape == start.shape
    # The module is copied, not trained in place: a second run starts from the same model.
    again = fedsim.run(cfg, model=module)
    assert np.array_equal(one.model, again.model) and not np.allclose(one.model, start)
    after = torch.cat([p.detach().reshape(-1) for p in module.parameters()]).numpy()
    assert np.array_equal(after, start), "the caller's module is not modified"


def _shakespeare(tmp_path: Path) -> Path:
    from fedsim.data.leaf import SHAKESPEARE_ALPHABET

    assert "\n" in SHAKESPEARE_ALPHABET
    roles = {
        "HAMLET": "to be or not to be that is the question ",
        "OPHELIA": "good my lord how does your honour ",
        "HORATIO": "a piece of him the king is dead ",
    }
    seq = 20
    for split in ("train", "test"):
        users = {}
        for role, line in roles.items():
            text = line * 6
            starts = range(0, 40, 2) if split == "train" else range(41, 47, 2)
            xs = [text[s : s + seq] for s in starts]
            ys = [text[s + seq] for s in starts]
            users[role] = {"x": xs, "y": ys}
        body = {
            "users": list(users),
            "num_samples": [len(u["x"]) for u in users.values()],
            "user_data": users,
        }
        (tmp_path / split).mkdir()
        (tmp_path / split / "shakespeare.json").write_text(json.dumps(body))
    return tmp_path


def test_lstm_loss_decreases_over_three_rounds_on_leaf_shakespeare(tmp_path):
    root = _shakespeare(tmp_path)
    text = RUN.format(path=root, model='name = "lstm"', lr=1.0)
    text = text.replace('dataset = "arrays"', 'dataset = "leaf"\ntask = "shakespeare"')
    cfg = config_mod.from_dict(
        config_mod.apply_overrides(
            tomllib.loads(text), ["population.num_clients=3", "server.clients_per_round=3"]
        )
    )
    result = fedsim.run(cfg)
    loss = result.rounds["train_loss"].to_numpy()
    assert len(loss) == 3 and loss[0] > loss[1] > loss[2], loss
    assert np.isfinite(result.rounds["test_accuracy"]).all()


def test_cuda_without_a_gpu_and_numpy_on_cuda_are_one_line_errors(tmp_path):
    path = _data(tmp_path, (6,))
    if not torch.cuda.is_available():
        cfg = _config(path, 'name = "softmax"\nbackend = "torch"', 0.1, "runtime.device='cuda'")
        with pytest.raises(ConfigError, match=r"^runtime\.device: 'cuda' requested but"):
            prepare(cfg)
    cfg = _config(path, 'name = "softmax"', 0.1, "runtime.device='cuda'")
    with pytest.raises(ConfigError, match=r"^runtime\.device: 'cuda' runs torch models only"):
        prepare(cfg)
    cfg = _config(path, 'name = "softmax"\nbackend = "torch"', 0.1, "runtime.device='auto'")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert prepare(cfg).model.device == expected


def test_model_backend_is_validated_per_model():
    with pytest.raises(ConfigError, match=r"^model\.backend: must be one of 'torch', got 'numpy'"):
        config_mod.from_dict({"model": {"name": "lstm", "backend": "numpy"}})
    with pytest.raises(ConfigError, match=r"^model\.backend: must be one of 'numpy' \| 'torch'"):
        config_mod.from_dict({"model": {"name": "cnn", "backend": "jax"}})


def test_plugin_errors_are_one_line_config_errors(tmp_path, monkeypatch):
    (tmp_path / "badplug.py").write_text(
        "def wrong(input_shape):\n    return None\n\ndef notmodule(input_shape, num_classes):\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _data(tmp_path, (6,))
    with pytest.raises(ConfigError, match=r"^model\.name: plug-in 'wrong' failed \(TypeError"):
        prepare(_config(path, 'name = "badplug:wrong"'))
    with pytest.raises(ConfigError, match=r"^model\.name: plug-in returned int, expected"):
        prepare(_config(path, 'name = "badplug:notmodule"'))


def test_looped_torch_clients_train_one_at_a_time_and_stacks_change_nothing(tmp_path, monkeypatch):
    from fedsim.models.torch_backend import TorchModel

    path = _data(tmp_path, (5, 5))
    cfg = _config(path, 'name = "mlp"\nhidden = [16, 8]\nbackend = "torch"')
    assert prepare(cfg).model.max_stack == 1  # a CPU model is looped: no lock-step stacks
    alone = fedsim.run(cfg)
    monkeypatch.setattr(TorchModel, "max_stack", 64)
    stacked = fedsim.run(cfg)
    assert np.array_equal(alone.model, stacked.model)
    assert alone.rounds["train_loss"].tolist() == stacked.rounds["train_loss"].tolist()
