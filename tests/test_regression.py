"""Regression support: the MSE loss and its gradient, MAE/RMSE scores, float targets in data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_models import _finite_difference_grad, _relative_error

from fedsim.data.arrays import ArrayDataset
from fedsim.data.base import CentralData, Partition
from fedsim.data.partition import DirichletOptions, IIDOptions, dirichlet, iid
from fedsim.models import scoring
from fedsim.models.mlp import DenseNetwork, MlpOptions
from fedsim.models.softmax import SoftmaxRegression
from fedsim.options import ConfigError, build
from fedsim.registry import MODELS


def _regression_batch(model, num_clients: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.5, (num_clients, model.num_parameters))
    x = rng.normal(0.0, 1.0, (num_clients, batch, *model.input_shape))
    y = rng.normal(0.0, 2.0, (num_clients, batch))
    return w, x, y


@pytest.mark.parametrize(
    "model",
    [
        SoftmaxRegression((5,), 0, task="regression"),
        DenseNetwork((2, 3), 0, (5, 4), task="regression"),
    ],
    ids=["linear", "mlp"],
)
def test_mse_gradient_matches_central_differences(model) -> None:
    w, x, y = _regression_batch(model, num_clients=3, batch=6, seed=2)
    loss, grad = model.loss_and_grad(w, x, y)
    assert loss.shape == (3,) and grad.shape == w.shape and grad.dtype == np.float64
    for c in range(3):
        numeric = _finite_difference_grad(model, w[c], x[c], y[c])
        assert _relative_error(grad[c], numeric) < 1e-7
        pred = model.logits(w[c], x[c])[:, 0]
        assert loss[c] == pytest.approx(np.mean((pred - y[c]) ** 2), rel=1e-12)


def test_linear_regression_loss_and_gradient_in_closed_form() -> None:
    # pred = x w + b on 2 features: loss = mean (pred - y)^2, grad = 2 X'(pred - y) / B.
    model = SoftmaxRegression((2,), 0, task="regression")
    assert model.num_parameters == 3
    w = np.array([[1.0, -2.0, 0.5]])
    x = np.array([[[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]])
    y = np.array([[1.0, -1.0, 0.0]])
    loss, grad = model.loss_and_grad(w, x, y)
    err = np.array([1.5 - 1.0, -1.5 + 1.0, 0.5 - 0.0])
    assert loss[0] == pytest.approx(np.mean(err**2))
    design = np.c_[x[0], np.ones(3)]
    np.testing.assert_allclose(grad[0], 2 * design.T @ err / 3)


def test_regression_scores_on_a_hand_built_case() -> None:
    model = SoftmaxRegression((1,), 0, task="regression")
    w = np.array([2.0, 1.0], dtype=np.float32)  # pred = 2 x + 1
    x = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    y = np.array([1.0, 4.0, 5.0, 3.0], dtype=np.float32)  # errors 0, -1, 0, 4
    found = model.metrics(w, x, y, batch_size=3)  # two batches: sums carry over
    assert found == pytest.approx({"loss": 17 / 4, "mae": 5 / 4, "rmse": math.sqrt(17 / 4)})
    assert model.evaluate(w, x, y)[0] == pytest.approx(17 / 4)
    assert math.isnan(model.evaluate(w, x, y)[1])
    assert all(math.isnan(v) for v in model.metrics(w, x[:0], y[:0]).values())


def test_classification_scores_keep_loss_and_accuracy() -> None:
    model = SoftmaxRegression((2,), 3)
    w = np.zeros(model.num_parameters, dtype=np.float32)
    x = np.ones((4, 2), dtype=np.float32)
    y = np.array([0, 1, 2, 0])
    found = model.metrics(w, x, y)
    assert set(found) == {"loss", "accuracy"}
    assert found["loss"] == pytest.approx(math.log(3))
    assert found["accuracy"] == pytest.approx(0.5)  # argmax of ties is class 0


def test_binary_auc_counts_ordered_pairs_and_half_ties() -> None:
    assert scoring.binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    # One tie between a positive and a negative counts one half: (1 + 1 + 0.5 + 1) / 4.
    assert scoring.binary_auc(np.array([0.2, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1])) == 0.875
    assert scoring.binary_auc(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0])) == 1.0
    assert math.isnan(scoring.binary_auc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_task_is_a_validated_option_of_the_dense_models() -> None:
    for name in ("softmax", "mlp"):
        entry = MODELS.get(name)
        opts = build(entry.options, {"task": "regression"}, "model")
        model = entry.factory(opts, (4,), 0)
        assert model.task == "regression" and model.logits(
            model.init(0), np.ones((2, 4))
        ).shape == (
            2,
            1,
        )
    with pytest.raises(ConfigError, match=r"^model\.task: must be one of"):
        build(MlpOptions, {"task": "ranking"}, "model")
    with pytest.raises(ConfigError, match=r"^model\.task: unknown key"):
        build(MODELS.get("cnn").options, {"task": "regression"}, "model")


def test_array_dataset_keeps_float_targets_and_has_no_label_histogram() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = rng.normal(size=40)
    central = CentralData(x, y, x[:5], y[:5])
    assert central.task == "regression" and central.num_classes == 0
    part = iid(IIDOptions(), y, 4, seed=1)
    ds = ArrayDataset(central, part)
    assert ds.task == "regression" and ds.num_classes == 0
    xk, yk = ds.client_train(2)
    assert yk.dtype == np.float32 and xk.dtype == np.float32
    np.testing.assert_array_equal(yk, y[part.client(2)].astype(np.float32))
    assert ds.label_counts(np.arange(4)).shape == (4, 0)
    assert ds.test_set()[1].dtype == np.float32
    # Integer labels are still class labels.
    labels = CentralData(x, np.arange(40) % 3, x[:5], np.arange(5) % 3)
    assert ArrayDataset(labels, Partition.from_lists([np.arange(40)])).y_train.dtype == np.int64


def test_class_skew_schemes_refuse_real_targets() -> None:
    y = np.linspace(0.0, 1.0, 50)
    with pytest.raises(ConfigError, match=r"^partition\.scheme: 'dirichlet' splits by class"):
        dirichlet(DirichletOptions(), y, 5, seed=0)


def _diabetes(**model: object) -> dict:
    return {
        "data": {"dataset": "diabetes"},
        "partition": {"scheme": "quantity_skew", "sigma": 0.5, "min_samples": 10},
        "population": {"num_clients": 5},
        "model": {"name": "softmax", **model},
        "training": {"local_epochs": 1, "batch_size": 10, "learning_rate": 0.05},
        "server": {"rounds": 6, "clients_per_round": 5, "eval_every": 1},
        "runtime": {"backend": "local", "progress": False},
    }


def test_regression_run_records_mae_and_rmse_and_learns(tmp_path) -> None:
    from fedsim import config as config_mod
    from fedsim.runner import run

    result = run(config_mod.from_dict(_diabetes(task="regression")), out_dir=tmp_path / "run")
    rounds = result.rounds
    assert rounds["test_accuracy"].isna().all()
    np.testing.assert_allclose(rounds["test_rmse"] ** 2, rounds["test_loss"], rtol=1e-9)
    assert (rounds["test_mae"] <= rounds["test_rmse"] + 1e-12).all()
    # Targets are standardised: predicting 0 scores an RMSE near 1; the linear fit gets well below.
    assert rounds["test_rmse"].iloc[-1] < 0.8 < rounds["test_rmse"].iloc[0] + 0.2
    written = pd.read_csv(tmp_path / "run" / "rounds.csv")
    np.testing.assert_allclose(written["test_mae"], rounds["test_mae"], rtol=1e-9)
    assert result.summary["final_test_rmse"] == pytest.approx(rounds["test_rmse"].iloc[-1])
    partition = pd.read_csv(tmp_path / "run" / "partition.csv")
    assert list(partition.columns) == ["client_id", "num_samples"]


def test_a_regression_set_needs_a_regression_model() -> None:
    from fedsim import config as config_mod
    from fedsim.runner import prepare

    with pytest.raises(ConfigError, match=r"^model\.task: dataset 'diabetes' is a regression"):
        prepare(config_mod.from_dict(_diabetes()))
    raw = _diabetes(task="regression")
    raw["server"]["client_eval_every"] = 2
    with pytest.raises(ConfigError, match=r"^server\.client_eval_every: measures accuracy"):
        prepare(config_mod.from_dict(raw))
