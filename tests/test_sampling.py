"""Client sampling and aggregation weighting: ``server.sampling`` and ``server.weighting``."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pandas as pd
import pytest
from helpers import SMALL, small_config, write
from scipy import stats

import fedsim
from fedsim import cli
from fedsim.clock import _straggling_draws
from fedsim.config import PopulationConfig
from fedsim.population import Population
from fedsim.runner import prepare
from fedsim.runtime.work import make_chunks, train_chunks, train_spec
from fedsim.strategies.contract import RoundContext


def _sizes(num_clients: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.lognormal(4.0, 2.0, num_clients) + 50).astype(np.int64)


def test_by_samples_draws_follow_sample_counts_within_a_chi_square_bound() -> None:
    num_clients, count, rounds = 30, 10, 3000
    sizes = _sizes(num_clients, 1)
    pop = Population(PopulationConfig(num_clients=num_clients), seed=7)
    observed = np.zeros(num_clients)
    for r in range(1, rounds + 1):
        ids, draws = pop.select_by_samples(r, 0.0, count, sizes)
        assert draws.sum() == count and (draws >= 1).all()
        assert (np.diff(ids) > 0).all(), "distinct clients, sorted by id"
        observed[ids] += draws
    expected = rounds * count * sizes / sizes.sum()
    big = expected >= 5  # the chi-square approximation needs expected counts of 5 or more
    obs, exp = observed[big], expected[big]
    if (~big).any():
        obs = np.append(obs, observed[~big].sum())
        exp = np.append(exp, expected[~big].sum())
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    assert chi2 < stats.chi2.ppf(0.999, len(obs) - 1), chi2
    # the largest device is drawn about as often as its share says, many times per round
    top = int(np.argmax(sizes))
    assert observed[top] == pytest.approx(expected[top], rel=0.05)


def test_by_samples_draws_are_keyed_by_seed_and_round() -> None:
    sizes = _sizes(30, 2)
    a = Population(PopulationConfig(num_clients=30), seed=3)
    b = Population(PopulationConfig(num_clients=30), seed=3)
    c = Population(PopulationConfig(num_clients=30), seed=4)
    differs = False
    for r in range(1, 6):
        ids_a, draws_a = a.select_by_samples(r, 0.0, 10, sizes)
        ids_b, draws_b = b.select_by_samples(r, 0.0, 10, sizes)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(draws_a, draws_b)
        ids_c, draws_c = c.select_by_samples(r, 0.0, 10, sizes)
        differs |= not (np.array_equal(ids_a, ids_c) and np.array_equal(draws_a, draws_c))
    assert differs, "another seed draws other cohorts"


def test_straggling_draws_count_draws_and_match_the_distinct_rule_for_single_draws() -> None:
    order = np.array([4, 0, 2, 1, 3])
    ones = np.ones(5, dtype=np.int64)
    np.testing.assert_array_equal(_straggling_draws(order, ones, 0.6), [4, 0, 2])
    draws = np.array([1, 1, 1, 5, 2])  # 10 draws; client 3 holds five of them
    chosen = _straggling_draws(order, draws, 0.9)  # target: 9 straggling draws
    # 4 (2 draws), 0, 2 (1 each) fit; 3 (5 more) would overflow; 1 fits: 5 draws straggle
    np.testing.assert_array_equal(chosen, [4, 0, 2, 1])
    assert draws[chosen].sum() <= 9 and draws.sum() - draws[chosen].sum() >= 1


def _trained(cfg, ids: np.ndarray, weights: np.ndarray | None):
    exp = prepare(cfg)
    n = exp.dataset.client_sizes()[ids]
    epochs = np.full(len(ids), cfg.training.local_epochs)
    w0 = exp.model.init(cfg.experiment.seed)
    ctx = RoundContext(
        round=1, seed=cfg.experiment.seed, learning_rate=cfg.training.learning_rate,
        batch_size=int(cfg.training.batch_size), shuffle=True,
    )  # fmt: skip
    spec = train_spec(cfg, exp.strategy)
    chunks = make_chunks(ids, n, epochs, 3, weights)
    results = train_chunks(exp.model, exp.dataset, w0, spec, ctx, chunks)
    total = sum(r.weight for r in results)
    return sum(r.weighted_sum for r in results) / total, total


def test_uniform_weighting_is_the_plain_mean_of_the_client_models() -> None:
    cfg = small_config("server.deadline_s=inf")
    ids = np.array([3, 17, 40, 41, 90], dtype=np.int64)
    alone = [_trained(cfg, ids[k : k + 1], None)[0] for k in range(len(ids))]
    mean, total = _trained(cfg, ids, np.ones(len(ids), dtype=np.int64))
    assert total == len(ids)
    np.testing.assert_allclose(mean, np.mean(alone, axis=0), rtol=1e-12, atol=1e-12)
    # a client drawn twice counts twice
    draws = np.array([2, 1, 1, 1, 3], dtype=np.int64)
    twice, total = _trained(cfg, ids, draws)
    assert total == 8
    hand = sum(d * m for d, m in zip(draws, alone, strict=True)) / 8
    np.testing.assert_allclose(twice, hand, rtol=1e-12, atol=1e-12)
    # and the default weighs by sample count
    by_n, total = _trained(cfg, ids, None)
    n = prepare(cfg).dataset.client_sizes()[ids]
    assert total == n.sum()
    hand = sum(k * m for k, m in zip(n, alone, strict=True)) / n.sum()
    np.testing.assert_allclose(by_n, hand, rtol=1e-12, atol=1e-12)


PAPER = ("server.sampling='by_samples'", "server.weighting='uniform'")


def test_by_samples_runs_keep_one_draw_of_ten_at_90_percent_stragglers() -> None:
    cfg = small_config(
        *PAPER, "server.deadline_s=inf", "server.over_selection=1.0",
        "population.dropout_rate=0.0", "server.straggler_fraction=0.9", "server.rounds=4",
    )  # fmt: skip
    result = fedsim.run(cfg)
    r, c = result.rounds, result.clients
    assert not r["failed"].any()
    assert (r["selected"] <= 20).all() and (r["completed"] >= 1).all()
    assert (c.groupby("round")["client_id"].nunique() == r["selected"].to_numpy()).all()
    assert (r["selected"] < 20).any(), "draws with replacement repeat the larger clients"
    # stragglers hold at most 18 of the 20 draws, so at least one client completes
    assert (r["completed"] + r["stragglers"] == r["selected"]).all()


def test_default_sampling_and_weighting_leave_results_unchanged() -> None:
    a = fedsim.run(small_config())
    b = fedsim.run(small_config("server.sampling='uniform'", "server.weighting='samples'"))
    np.testing.assert_array_equal(a.model, b.model)
    c = fedsim.run(small_config("server.weighting='uniform'"))
    assert not np.array_equal(a.model, c.model)


def test_by_samples_results_identical_for_local_and_one_two_ray_workers(ray_session) -> None:
    over = (*PAPER, "server.rounds=3", "strategy.name='fedprox'")
    local = fedsim.run(small_config(*over))
    for workers in (1, 2):
        ray_run = fedsim.run(
            small_config(*over, "runtime.backend='ray'", f"runtime.workers={workers}")
        )
        np.testing.assert_array_equal(local.model, ray_run.model)
        pd.testing.assert_frame_equal(local.clients, ray_run.clients)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["server.sampling='proportional'"], "server.sampling: must be one of"),
        (["server.weighting='equal'"], "server.weighting: must be one of"),
        (["server.sampling='by_samples'", "privacy.enabled=true"], "server.sampling: 'by_samples'"),
        (
            ["server.weighting='uniform'", "server.mode='async'", "server.deadline_s=inf"],
            "server.weighting: 'uniform' is for synchronous rounds",
        ),
    ],
)
def test_bad_sampling_settings_exit_2_with_one_line(tmp_path, capsys, overrides, expected) -> None:
    path = write(tmp_path / "exp.toml", SMALL)
    out = tmp_path / "out"
    sets = [f"--set={o}" for o in overrides]
    code = cli.main(["run", str(path), "--out", str(out), "-q", *sets])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err and "Traceback" not in err
    assert not out.exists()


def test_iterative_process_refuses_to_sample_by_samples(tmp_path) -> None:
    from fedsim import learning
    from fedsim.learning import SGD

    path = write(tmp_path / "exp.toml", SMALL)
    raw = tomllib.loads(SMALL)
    server = {k: v for k, v in raw["server"].items() if k != "rounds"}
    process = learning.build_weighted_fed_avg(
        "softmax",
        SGD(learning_rate=0.05),
        ("sgd", {"learning_rate": 1.0}),
        data=fedsim.data.load(path),
        population=raw["population"],
        server={**server, "deadline_s": math.inf, "sampling": "by_samples"},
        training={"local_epochs": 1, "batch_size": 10},
        seed=raw["experiment"]["seed"],
    )
    try:
        with pytest.raises(ValueError, match="server.sampling: 'by_samples' draws with"):
            process.sample_clients(process.initialize())
    finally:
        process.close()
