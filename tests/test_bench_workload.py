"""Workload W of the benchmarks: its data, the bias-free softmax, and equivalence with the floor."""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest

from fedsim import config as config_mod
from fedsim.bench.floors import softmax_round, workload_client
from fedsim.bench.harness import find_config, flower_round_times, steady_state
from fedsim.bench.probe import run_measured
from fedsim.data.workload import WorkloadDataset, WorkloadOptions
from fedsim.models.softmax import SoftmaxRegression
from fedsim.runner import prepare
from fedsim.runtime.executors import LocalExecutor
from fedsim.runtime.server import Server
from fedsim.runtime.work import train_spec

W1 = find_config("w1")  # the workload shipped with the package


def _reference_client(cid: int) -> tuple[np.ndarray, np.ndarray]:
    """The workload's definition, spelled as its README states it."""
    w_true = np.random.default_rng(0).normal(size=(60, 10))
    r = np.random.default_rng(1000 + cid)
    x = r.normal(size=(100, 60)).astype(np.float32)
    y = np.argmax(x @ w_true + r.gumbel(size=(100, 10)), axis=1)
    return x, y


@pytest.mark.parametrize("cid", [0, 1, 17, 999, 123_456])
def test_workload_data_equal_the_reference_definition_bit_for_bit(cid: int) -> None:
    ds = WorkloadDataset(WorkloadOptions(), num_clients=200_000)
    x, y = ds.client_train(cid)
    ref_x, ref_y = _reference_client(cid)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.shape == (100, 60) and y.shape == (100,)
    assert np.array_equal(x, ref_x) and np.array_equal(y, ref_y)
    assert np.array_equal(np.signbit(x), np.signbit(ref_x))


def test_workload_clients_generated_in_a_stack_equal_the_definition() -> None:
    ds = WorkloadDataset(WorkloadOptions(), num_clients=5000)
    ids = np.array([4999, 3, 1200, 7, 7, 2500] + list(range(100, 164)))
    x, y = ds.clients_train(ids)
    assert x.shape == (70, 100, 60) and y.shape == (70, 100)
    for row, cid in enumerate(ids):
        ref_x, ref_y = _reference_client(int(cid))
        assert np.array_equal(x[row], ref_x) and np.array_equal(y[row], ref_y)


def test_workload_sizes_labels_and_test_set() -> None:
    ds = WorkloadDataset(WorkloadOptions(test_clients=3), num_clients=50)
    assert ds.client_sizes().tolist() == [100] * 50
    x, y = ds.test_set()
    assert x.shape == (300, 60)
    # The test set is the data of the clients that follow the population.
    assert np.array_equal(x[:100], _reference_client(50)[0])
    assert set(np.unique(y)) == set(range(10))
    with pytest.raises(IndexError):
        ds.client_train(50)


def test_softmax_without_bias_has_only_weights_and_a_correct_gradient() -> None:
    model = SoftmaxRegression((6,), 4, bias=False)
    assert model.num_parameters == 24
    rng = np.random.default_rng(2)
    w = rng.normal(size=(1, 24))
    x = rng.normal(size=(1, 5, 6))
    y = rng.integers(0, 4, (1, 5))
    loss, grad = model.loss_and_grad(w, x, y)
    z = x[0] @ w[0].reshape(6, 4)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert loss[0] == pytest.approx(-np.log(p[np.arange(5), y[0]]).mean(), rel=1e-12)
    p[np.arange(5), y[0]] -= 1
    np.testing.assert_allclose(grad[0].reshape(6, 4), x[0].T @ p / 5, rtol=1e-12)


def test_one_fedsim_round_on_a_fixed_cohort_equals_the_floor_arithmetic() -> None:
    cfg = config_mod.load(W1, ["runtime.backend='local'", "server.rounds=2"])
    exp = prepare(cfg)
    assert exp.model.num_parameters == 600
    server = Server(
        cfg,
        exp.dataset,
        exp.model,
        exp.strategy,
        exp.population,
        LocalExecutor(exp.model, exp.dataset, train_spec(cfg, exp.strategy)),
    )
    cohort = np.sort(np.random.default_rng(1).choice(1000, 100, replace=False))
    server.population.select = lambda round_, t, count: cohort  # type: ignore[method-assign]
    w_true = np.random.default_rng(0).normal(size=(60, 10))
    w_floor = np.zeros((60, 10), np.float32)
    for _ in range(2):
        asyncio.run(server.run_round())
        w_floor = softmax_round(
            w_floor,
            cohort,
            lambda c: workload_client(c, w_true, 100),
            batch_size=10,
            learning_rate=0.1,
        )
    assert np.abs(w_floor).max() > 0.05
    np.testing.assert_allclose(server.w.reshape(60, 10), w_floor, rtol=2e-5, atol=2e-7)


def test_steady_state_skips_the_first_two_rounds() -> None:
    assert steady_state([9.0, 5.0, 1.0, 2.0, 3.0]) == 2.0
    assert steady_state([9.0, 2.0]) == 2.0
    assert steady_state([4.0]) == 4.0


def test_flower_round_times_come_from_the_round_lines() -> None:
    lines = [
        (1.0, "INFO :      [INIT]"),
        (2.0, "INFO :      [ROUND 1]"),
        (7.5, "INFO :      [ROUND 2]"),
        (9.0, "INFO :      [ROUND 3]"),
        (11.0, "INFO :      [SUMMARY]"),
    ]
    assert flower_round_times(lines) == [5.5, 1.5, 2.0]


def test_probe_timestamps_lines_and_sees_the_memory_of_the_process() -> None:
    code = (
        "import time, numpy as np; a = np.ones(50_000_000 // 8); print('a'); time.sleep(0.4); "
        "print('b')"
    )
    poll_s = 0.05
    m = run_measured([sys.executable, "-c", code], poll_s=poll_s)
    assert m.returncode == 0
    assert [line for _, line in m.lines] == ["a", "b"]
    # A line is stamped when the parent reads it, which the memory sampler (every poll) and a
    # busy machine can hold up: the child's 0.4 s between its lines shows as at least 0.4 s
    # less two polls (a stamp 4 ms short of 0.4 s was seen on a loaded CI machine).
    assert m.lines[0][0] + 0.4 - 2 * poll_s <= m.lines[1][0] <= m.wall_s
    assert m.peak_rss_bytes > 50_000_000


@pytest.mark.parametrize("model", ["softmax", "mlp"])
def test_stacking_clients_across_chunks_gives_each_chunk_the_same_bits(model: str) -> None:
    from helpers import small_config

    from fedsim.runtime.server import round_context
    from fedsim.runtime.work import make_chunks, train_chunks

    cfg = small_config(f"model.name='{model}'", "strategy.name='fedprox'", "strategy.mu=0.1")
    exp = prepare(cfg)
    spec = train_spec(cfg, exp.strategy)
    ids = np.arange(0, 200, 3)
    sizes = exp.dataset.client_sizes()[ids]
    # Many equal sizes (capped at 300 samples x 0.9) and a few epochs counts: real stacks.
    epochs = 1 + ids % 2
    chunks = make_chunks(ids, sizes, epochs, 8)
    w0 = exp.model.init(0)
    ctx = round_context(cfg, 2)
    together = train_chunks(exp.model, exp.dataset, w0, spec, ctx, chunks)
    for chunk, res in zip(chunks, together, strict=True):
        (alone,) = train_chunks(exp.model, exp.dataset, w0, spec, ctx, [chunk])
        assert res.index == alone.index and res.weight == alone.weight
        assert np.array_equal(res.weighted_sum, alone.weighted_sum)
        assert np.array_equal(res.train_loss, alone.train_loss)
    assert sum(r.weight for r in together) == float((sizes * 1).sum())


def test_workload_results_identical_in_process_and_on_one_or_two_ray_workers(ray_session) -> None:
    import fedsim

    small = ["population.num_clients=300", "server.clients_per_round=40", "server.rounds=2"]
    local = fedsim.run(W1, overrides=[*small, "runtime.backend='local'"])
    for workers in (1, 2):
        on_ray = fedsim.run(W1, overrides=[*small, f"runtime.workers={workers}"])
        np.testing.assert_array_equal(local.model, on_ray.model)
        assert local.rounds["train_loss"].tolist() == on_ray.rounds["train_loss"].tolist()
