"""Robust aggregators equal their definitions; faulty clients are fixed, keyed and recorded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import small_config, write

import fedsim
from fedsim import cli
from fedsim.aggregators.robust import (
    KrumAggregator,
    MedianAggregator,
    NormBoundedMeanAggregator,
    TrimmedMeanAggregator,
    krum_scores,
    per_client_mean,
)
from fedsim.data.noisy import NoisyLabels
from fedsim.faults import ClientFaults, faulty_clients
from fedsim.rng import Purpose
from fedsim.runner import prepare


def _updates(k: int = 11, p: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(k, p)).astype(np.float32)


def test_median_equals_numpy_coordinate_median():
    u = _updates()
    got = MedianAggregator().combine(u, np.ones(len(u)))
    np.testing.assert_array_equal(got, np.median(u.astype(np.float64), axis=0))
    even = _updates(k=6)
    got = MedianAggregator().combine(even, np.arange(1.0, 7.0))  # weights ignored
    s = np.sort(even.astype(np.float64), axis=0)
    np.testing.assert_allclose(got, (s[2] + s[3]) / 2, rtol=0, atol=1e-15)


@pytest.mark.parametrize("fraction, b", [(0.0, 0), (0.1, 1), (0.2, 2), (0.3, 3), (0.49, 5)])
def test_trimmed_mean_drops_b_from_each_end_per_coordinate(fraction, b):
    u = _updates(k=11)
    got = TrimmedMeanAggregator(fraction).combine(u, np.ones(11))
    s = np.sort(u.astype(np.float64), axis=0)
    np.testing.assert_allclose(got, s[b : 11 - b].mean(axis=0), rtol=1e-12, atol=1e-15)


def test_krum_scores_equal_the_definition_and_krum_picks_the_lowest():
    u = _updates(k=9, p=5, seed=1)
    f = 2
    x = u.astype(np.float64)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    want = np.array(
        [np.sort(np.delete(d2[i], i))[: 9 - f - 2].sum() for i in range(9)], dtype=np.float64
    )
    np.testing.assert_allclose(krum_scores(u, f), want, rtol=1e-9)
    got = KrumAggregator(f, 1).combine(u, np.ones(9))
    np.testing.assert_array_equal(got, x[np.argmin(want)])
    m = 4
    multi = KrumAggregator(f, m).combine(u, np.ones(9))
    np.testing.assert_allclose(multi, x[np.argsort(want)[:m]].mean(axis=0), rtol=1e-12)


def test_krum_picks_an_honest_update_against_colluding_attackers():
    # 7 honest updates near (1, 1, ...), 3 attackers at one far point; f = 3, n = 10 > 2f + 2.
    rng = np.random.default_rng(5)
    honest = 1.0 + 0.01 * rng.normal(size=(7, 20))
    attackers = np.full((3, 20), -50.0)
    u = np.concatenate([attackers[:1], honest[:4], attackers[1:], honest[4:]]).astype(np.float32)
    is_honest = np.array([False, True, True, True, True, False, False, True, True, True])
    agg = KrumAggregator(3, 1)
    (chosen,) = agg.selected(u)
    assert is_honest[chosen]
    # The honest point closest to the others' centre is the one Krum scores lowest.
    x = u.astype(np.float64)
    centre_dist = [((x[i] - x[is_honest]) ** 2).sum() for i in np.flatnonzero(is_honest)]
    assert chosen == np.flatnonzero(is_honest)[np.argmin(centre_dist)]
    assert np.abs(agg.combine(u, np.ones(10)) - 1.0).max() < 0.05
    # The mean is dragged far off by the same three attackers.
    assert per_client_mean().combine(u, np.ones(10)).mean() < -10


def test_norm_bounded_mean_clips_each_update_then_weights_by_samples():
    u = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, -10.0]], dtype=np.float32)
    w = np.array([10.0, 30.0, 60.0])
    got = NormBoundedMeanAggregator(1.0).combine(u, w)
    clipped = np.array([[0.6, 0.8], [0.3, 0.4], [0.0, -1.0]])
    np.testing.assert_allclose(got, (w @ clipped) / w.sum(), rtol=1e-7)
    plain = per_client_mean().combine(u, w)
    np.testing.assert_allclose(plain, (w @ u.astype(np.float64)) / w.sum(), rtol=1e-12)


def test_faulty_clients_are_an_exact_fixed_fraction_keyed_by_seed_and_purpose():
    a = faulty_clients(4, Purpose.BYZANTINE, 0.2, 1000)
    assert a.sum() == 200
    np.testing.assert_array_equal(a, faulty_clients(4, Purpose.BYZANTINE, 0.2, 1000))
    assert (a != faulty_clients(5, Purpose.BYZANTINE, 0.2, 1000)).any()
    assert (a != faulty_clients(4, Purpose.NOISY_CLIENT, 0.2, 1000)).any()
    # A larger fraction keeps the smaller one's clients (the same ranking).
    assert (faulty_clients(4, Purpose.BYZANTINE, 0.3, 1000) >= a).all()
    assert not faulty_clients(4, Purpose.BYZANTINE, 0.0, 1000).any()


def _faults(attack: str, scale: float, byzantine: np.ndarray) -> ClientFaults:
    return ClientFaults(7, byzantine, np.zeros_like(byzantine), attack, scale)


@pytest.mark.parametrize("attack, scale", [("sign_flip", 3.0), ("scaled", 5.0)])
def test_worker_attacks_replace_only_byzantine_updates(attack, scale):
    byz = np.array([False, True, False, True])
    w_global = np.linspace(-1, 1, 6)
    w = (w_global + _updates(k=4, p=6, seed=2)).astype(np.float32)
    before = w.copy()
    _faults(attack, scale, byz).attack_models(w, w_global, np.arange(4), round_=3)
    np.testing.assert_array_equal(w[~byz], before[~byz])
    sign = -scale if attack == "sign_flip" else scale
    want = (w_global + sign * (before[byz].astype(np.float64) - w_global)).astype(np.float32)
    np.testing.assert_array_equal(w[byz], want)


def test_gaussian_attack_is_keyed_by_seed_round_and_client():
    byz = np.array([True, True])
    w_global = np.zeros(5000)
    faults = _faults("gaussian", 2.0, byz)
    w1, w2 = np.ones((2, 5000), np.float32), np.zeros((2, 5000), np.float32)
    faults.attack_models(w1, w_global, np.array([0, 1]), round_=1)
    faults.attack_models(w2, w_global, np.array([0, 1]), round_=1)
    np.testing.assert_array_equal(w1, w2)  # the honest training does not matter
    assert abs(w1.std() - 2.0) < 0.1 and (w1[0] != w1[1]).all()
    w3 = np.zeros((2, 5000), np.float32)
    faults.attack_models(w3, w_global, np.array([0, 1]), round_=2)
    assert (w3 != w1).any()


def test_little_is_enough_rows_are_honest_mean_minus_z_std():
    byz = np.array([False, True, False, False, True, False])
    u = _updates(k=6, p=8, seed=3)
    out = _faults("little_is_enough", 1.5, byz).attack_rows(u, np.arange(6))
    h = u[~byz].astype(np.float64)
    want = (h.mean(axis=0) - 1.5 * h.std(axis=0)).astype(np.float32)
    np.testing.assert_array_equal(out[~byz], u[~byz])
    np.testing.assert_array_equal(out[byz], np.stack([want, want]))
    # Worker-side, it leaves the models alone.
    w = u.copy()
    _faults("little_is_enough", 1.5, byz).attack_models(w, np.zeros(8), np.arange(6), 1)
    np.testing.assert_array_equal(w, u)


def test_noisy_labels_replace_the_share_of_noisy_clients_only_and_stay_fixed():
    cfg = small_config()
    base = prepare(cfg).dataset
    noisy = np.zeros(base.num_clients, dtype=bool)
    noisy[[3, 8]] = True
    ds = NoisyLabels(base, noisy, 0.5, seed=1)
    for k in (3, 8):
        _, y0 = base.client_train(k)
        _, y1 = ds.client_train(k)
        n = len(y0)
        changed = (y0 != y1).sum()
        # round(0.5 n) labels redrawn uniformly: about 1/C of them land on the true label.
        assert 0 < changed <= round(0.5 * n)
        np.testing.assert_array_equal(y1, ds.client_train(k)[1])
    np.testing.assert_array_equal(ds.client_train(4)[1], base.client_train(4)[1])
    sizes = ds.client_sizes()
    same = np.flatnonzero(sizes == sizes[3])[:3]
    x, y = ds.clients_train(same)
    for row, k in enumerate(same):
        np.testing.assert_array_equal(y[row], ds.client_train(int(k))[1])
        np.testing.assert_array_equal(x[row], base.client_train(int(k))[0])


def test_clients_csv_flags_faulty_clients_and_byzantine_clients_hurt_the_mean():
    over = ["server.rounds=3", "faults.byzantine_fraction=0.25", "faults.byzantine_scale=10.0"]
    noisy = ["faults.noisy_client_fraction=0.1", "faults.label_noise=0.8"]
    attacked = fedsim.run(small_config(*over, *noisy))
    c = attacked.clients
    byz = faulty_clients(3, Purpose.BYZANTINE, 0.25, 200)
    np.testing.assert_array_equal(c["byzantine"].to_numpy(), byz[c["client_id"]])
    noisy_ids = faulty_clients(3, Purpose.NOISY_CLIENT, 0.1, 200)
    np.testing.assert_array_equal(c["noisy"].to_numpy(), noisy_ids[c["client_id"]])
    assert c["byzantine"].any() and c["noisy"].any()
    clean = fedsim.run(small_config("server.rounds=3"))
    assert not clean.clients["byzantine"].any() and not clean.clients["noisy"].any()
    assert attacked.rounds["test_accuracy"].iloc[-1] < clean.rounds["test_accuracy"].iloc[-1]
    defended = fedsim.run(small_config(*over, *noisy, "aggregator.name='median'"))
    assert defended.rounds["test_accuracy"].iloc[-1] > attacked.rounds["test_accuracy"].iloc[-1]


def test_little_is_enough_with_the_mean_aggregates_per_client_updates():
    exp = prepare(
        small_config("faults.byzantine_fraction=0.2", "faults.byzantine_attack='little_is_enough'")
    )
    assert not exp.aggregator.streaming
    # Without the attack, the per-client mean and the streaming mean agree to float32 rounding.
    over = ["server.rounds=2", "faults.byzantine_attack='little_is_enough'"]
    streaming = fedsim.run(small_config("server.rounds=2"))
    per_client = fedsim.run(small_config(*over, "aggregator.name='norm_bounded_mean'",
                                         "aggregator.norm_bound=1e30"))  # fmt: skip
    np.testing.assert_allclose(per_client.model, streaming.model, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "aggregator, attack",
    [("median", "sign_flip"), ("mean", "little_is_enough"), ("mean", "gaussian")],
)
def test_byzantine_runs_identical_for_local_and_one_two_ray_workers(
    ray_session, aggregator, attack
):
    over = [
        "server.rounds=2",
        f"aggregator.name='{aggregator}'",
        "faults.byzantine_fraction=0.3",
        f"faults.byzantine_attack='{attack}'",
        "faults.noisy_client_fraction=0.2",
        "faults.label_noise=0.5",
    ]
    local = fedsim.run(small_config(*over))
    assert local.clients["byzantine"].any()
    for workers in (1, 2):
        ray_run = fedsim.run(
            small_config(*over, "runtime.backend='ray'", f"runtime.workers={workers}")
        )
        timing = ["server_s", "train_s", "wall_time_s"]
        pd.testing.assert_frame_equal(
            local.rounds.drop(columns=timing), ray_run.rounds.drop(columns=timing)
        )
        np.testing.assert_array_equal(local.model, ray_run.model)
        pd.testing.assert_frame_equal(local.clients, ray_run.clients)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ('[aggregator]\nname = "trimmed_mean"\ntrim_fraction = 0.5\n',
         "aggregator.trim_fraction: must be in [0, 0.5), got 0.5"),
        ('[aggregator]\nname = "krum"\nnum_byzantine = 9\n',
         "aggregator.num_byzantine: Krum needs server.clients_per_round > 2 * num_byzantine + 2; "
         "with 20 clients per round num_byzantine must be <= 8, got 9"),
        ('[aggregator]\nname = "multi_krum"\nnum_byzantine = 8\nmulti_krum_m = 13\n',
         "aggregator.multi_krum_m: must be <= server.clients_per_round - num_byzantine (12), "
         "got 13"),
        ('[aggregator]\nname = "norm_bounded_mean"\nnorm_bound = 0\n',
         "aggregator.norm_bound: must be > 0, got 0.0"),
        ('[aggregator]\nname = "median"\nnum_byzantine = 1\n',
         "aggregator.num_byzantine: unknown key (known keys: none)"),
        ("[faults]\nbyzantine_fraction = 1.0\n",
         "faults.byzantine_fraction: must be in [0, 1), got 1.0"),
        ('[faults]\nbyzantine_attack = "label_flip"\n',
         "faults.byzantine_attack: must be one of 'sign_flip' | 'gaussian' | 'scaled' | "
         "'little_is_enough', got 'label_flip'"),
        ("[faults]\nlabel_noise = 0.3\n",
         "faults.label_noise: label noise needs both faults.label_noise and "
         "faults.noisy_client_fraction > 0, got 0.3 and 0.0"),
        ('[aggregator]\nname = "median"\n[privacy]\nsecure_aggregation = true\n',
         "aggregator.name: 'median' needs each client's update, which [privacy] hides"),
        ('[faults]\nbyzantine_fraction = 0.1\nbyzantine_attack = "little_is_enough"\n'
         "[privacy]\nsecure_aggregation = true\n",
         "faults.byzantine_attack: 'little_is_enough' crafts its update from the round's "
         "other updates, which [privacy] hides"),
    ],
)  # fmt: skip
def test_bad_robust_options_exit_2_with_one_line(tmp_path, capsys, extra, expected):
    from helpers import SMALL

    text = SMALL.replace("[runtime]", "[runtime]\n").replace(
        "[population]", extra + "\n[population]"
    )
    path = write(tmp_path / "exp.toml", text)
    out = tmp_path / "out"
    code = cli.main(["run", str(path), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()
