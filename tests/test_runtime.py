"""Training and aggregation: FedAvg is the weighted mean; results ignore scheduling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import small_config
from threadpoolctl import threadpool_limits

import fedsim
from fedsim.runner import prepare
from fedsim.strategies.local_sgd import local_sgd

TIMING_COLUMNS = ["server_s", "train_s", "wall_time_s"]


def test_fedavg_equals_weighted_mean_of_independently_trained_clients():
    cfg = small_config(
        "server.rounds=1",
        "server.deadline_s=inf",
        "server.over_selection=1.0",
        "population.dropout_rate=0.0",
        "training.shuffle=false",
    )
    result = fedsim.run(cfg)
    exp = prepare(cfg)
    clients = result.clients
    assert (clients["outcome"] == "completed").sum() == 20
    w0 = exp.model.init(cfg.experiment.seed)
    models, weights = [], []
    for cid in clients["client_id"]:
        x, y = exp.dataset.client_train(int(cid))
        w, _ = local_sgd(
            exp.model, w0, x[None], y[None], epochs=2, batch_size=10, learning_rate=0.05
        )
        models.append(w[0].astype(np.float64))
        weights.append(len(y))
    expected = np.average(np.array(models), axis=0, weights=np.array(weights, dtype=float))
    np.testing.assert_allclose(result.model, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(result.model, np.array(models).mean(axis=0), atol=1e-4), (
        "unweighted mean differs: clients have different sizes"
    )


def test_one_client_full_batch_step_is_one_gradient_descent_step():
    cfg = small_config(
        "population.num_clients=1",
        "population.dropout_rate=0.0",
        "server.clients_per_round=1",
        "server.min_completed=1",
        "server.over_selection=1.0",
        "server.deadline_s=inf",
        "server.rounds=1",
        "training.local_epochs=1",
        "training.batch_size='full'",
        "training.learning_rate=0.3",
    )
    result = fedsim.run(cfg)
    exp = prepare(cfg)
    x, y = exp.dataset.client_train(0)
    x64 = x.astype(np.float64)
    d, k = x.shape[1], exp.dataset.num_classes
    # Softmax regression, zero init: p = softmax(0) = 1/k; grad_W = X^T (p - onehot) / n.
    p = np.full((len(y), k), 1.0 / k)
    p[np.arange(len(y)), y] -= 1.0
    grad_w = x64.T @ p / len(y)
    grad_b = p.mean(axis=0)
    w_flat = result.model.astype(np.float64)
    np.testing.assert_allclose(w_flat[: d * k].reshape(d, k), -0.3 * grad_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(w_flat[d * k :], -0.3 * grad_b, rtol=1e-5, atol=1e-7)


def _records(result) -> pd.DataFrame:
    return result.rounds.drop(columns=TIMING_COLUMNS)


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy, model",
    [("fedavg", "softmax"), ("fedprox", "softmax"), ("fedavg", "mlp")],
)
def test_results_identical_for_local_and_one_two_four_ray_workers(ray_session, strategy, model):
    overrides = [f"strategy.name='{strategy}'", "server.rounds=3", f"model.name='{model}'"]
    local = fedsim.run(small_config(*overrides))
    assert local.rounds["stragglers"].sum() > 0 and local.rounds["dropped"].sum() > 0
    assert (local.clients["epochs_done"] == 1).any(), "partial work happened"
    for workers in (1, 2, 4):
        ray_run = fedsim.run(
            small_config(*overrides, "runtime.backend='ray'", f"runtime.workers={workers}")
        )
        pd.testing.assert_frame_equal(_records(local), _records(ray_run))
        np.testing.assert_array_equal(local.model, ray_run.model)
        pd.testing.assert_frame_equal(local.clients, ray_run.clients)


def test_same_seed_same_numbers_other_seed_other_numbers():
    a = fedsim.run(small_config())
    b = fedsim.run(small_config())
    c = fedsim.run(small_config("experiment.seed=4"))
    pd.testing.assert_frame_equal(_records(a), _records(b))
    assert not np.array_equal(a.model, c.model)


def test_too_few_reports_fail_the_round_and_keep_the_model():
    cfg = small_config(
        "server.rounds=2", "server.deadline_s=0.001", "server.straggler_policy='drop'"
    )
    result = fedsim.run(cfg)
    assert result.rounds["failed"].all()
    assert (result.rounds["reporting"] == 0).all()
    np.testing.assert_array_equal(result.model, prepare(cfg).model.init(cfg.experiment.seed))
    np.testing.assert_allclose(result.rounds["round_duration_s"], 0.001)
    assert (result.rounds["bytes_up"] == 0).all()


def test_records_add_up():
    result = fedsim.run(small_config("server.rounds=4", "server.eval_every=2"))
    r, c = result.rounds, result.clients
    assert r["round"].tolist() == [1, 2, 3, 4]
    assert (r["completed"] + r["stragglers"] + r["dropped"] == r["selected"]).all()
    assert (r["selected"] == 24).all()  # ceil(1.2 * 20)
    np.testing.assert_allclose(r["sim_time_s"], r["round_duration_s"].cumsum())
    assert (r["cum_bytes"] == (r["bytes_up"] + r["bytes_down"]).cumsum()).all()
    assert r["test_accuracy"].isna().tolist() == [True, False, True, False]
    per_round = c.groupby("round")["outcome"].value_counts().unstack(fill_value=0)
    assert per_round["completed"].tolist() == r["completed"].tolist()
    assert per_round["dropped"].tolist() == r["dropped"].tolist()
    assert result.summary["bytes_up_total"] == r["bytes_up"].sum()
    assert result.summary["num_parameters"] == 610


def test_eval_train_measures_the_global_objective_on_training_data():
    cfg = small_config("server.rounds=2", "server.eval_train=true", "server.eval_every=1")
    result = fedsim.run(cfg)
    exp = prepare(cfg)
    x, y = exp.dataset.train_eval_set()
    # The server evaluates with one BLAS thread; so does this check, since a BLAS sums in an
    # order that depends on its thread count (which would move the loss in the 11th digit).
    with threadpool_limits(limits=1):
        loss, acc = exp.model.evaluate(result.model, x, y)
    assert result.rounds["global_train_loss"].iloc[-1] == pytest.approx(loss, rel=1e-12)
    assert result.rounds["global_train_accuracy"].iloc[-1] == pytest.approx(acc, rel=1e-12)
    ids = exp.dataset.eval_client_ids()
    assert len(y) == sum(len(exp.dataset.client_train(int(k))[1]) for k in ids)
    assert fedsim.run(small_config("server.rounds=1")).rounds["global_train_loss"].isna().all()


def test_run_stops_once_test_accuracy_reaches_the_target():
    full = fedsim.run(small_config("server.rounds=8"))
    acc = full.rounds["test_accuracy"].to_numpy()
    target = float(np.sort(acc)[len(acc) // 2])
    first = int(np.argmax(acc >= target)) + 1
    stopped = fedsim.run(small_config("server.rounds=8", f"server.target_accuracy={target}"))
    assert len(stopped.rounds) == first < 8
    pd.testing.assert_frame_equal(_records(stopped), _records(full).iloc[:first])


def test_client_accuracy_percentiles_are_recorded_on_schedule():
    from fedsim.evaluation import client_accuracies, sample_eval_clients

    cfg = small_config(
        "server.rounds=4", "server.client_eval_every=2", "server.client_eval_clients=15"
    )
    result = fedsim.run(cfg)
    r = result.rounds
    assert r["client_acc_p50"].isna().tolist() == [True, False, True, False]
    exp = prepare(cfg)
    ids = sample_eval_clients(cfg.experiment.seed, cfg.population.num_clients, 15)
    _, acc, held_out = client_accuracies(exp.model, result.model, exp.dataset, ids)
    assert held_out
    last = r.iloc[-1]
    assert last["client_acc_p10"] == pytest.approx(np.percentile(acc, 10))
    assert last["client_acc_p90"] == pytest.approx(np.percentile(acc, 90))
    assert last["client_acc_mean"] == pytest.approx(acc.mean())
    assert last["client_acc_p10"] <= last["client_acc_p50"] <= last["client_acc_p90"]
