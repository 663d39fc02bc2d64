"""DP-FedAvg and secure aggregation inside the round loop: exact sums, noise, budget, costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import small_config

import fedsim
from fedsim import checkpoint, cli
from fedsim.options import ConfigError
from fedsim.privacy import accounting
from fedsim.privacy.dp import central_noise
from fedsim.privacy.secagg import fixed_point_levels, neighbour_count
from fedsim.runner import prepare, resume
from fedsim.strategies.local_sgd import local_sgd

TIMING = ["server_s", "train_s", "wall_time_s"]
# 200 clients, 20 per round: q = 0.1, expected cohort q N = 20.
PLAIN = ["server.deadline_s=inf", "population.dropout_rate=0.0", "training.shuffle=false"]
DP = [*PLAIN, "privacy.enabled=true"]
Q, QN = 0.1, 20.0


def _records(result: fedsim.RunResult) -> pd.DataFrame:
    return result.rounds.drop(columns=TIMING)


def _clipped_deltas(cfg, result, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Each reporting client's update trained independently, then clipped to ``clip``."""
    exp = prepare(cfg)
    w0 = exp.model.init(cfg.experiment.seed).astype(np.float64)
    c = result.clients
    deltas = []
    for cid in c.loc[c["outcome"] == "completed", "client_id"]:
        x, y = exp.dataset.client_train(int(cid))
        w, _ = local_sgd(
            exp.model, w0.astype(np.float32), x[None], y[None], epochs=2, batch_size=10,
            learning_rate=0.05,
        )  # fmt: skip
        deltas.append(w[0].astype(np.float64) - w0)
    d = np.array(deltas)
    norms = np.linalg.norm(d, axis=1)
    return d * np.minimum(1.0, clip / norms)[:, None], norms


def test_dp_round_is_the_sum_of_clipped_updates_over_the_expected_cohort():
    clip = 0.05
    cfg = small_config(*DP, "server.rounds=1", "privacy.noise_multiplier=0.0",
                       f"privacy.clip_norm={clip}")  # fmt: skip
    result = fedsim.run(cfg)
    clipped, norms = _clipped_deltas(cfg, result, clip)
    assert (norms > clip).sum() > 0, "some updates were clipped"
    w0 = prepare(cfg).model.init(cfg.experiment.seed).astype(np.float64)
    change = result.model.astype(np.float64) - w0
    np.testing.assert_allclose(change, clipped.sum(axis=0) / QN, atol=2e-7)
    reporting = int(result.rounds["reporting"].iloc[0])
    assert reporting == len(clipped)
    assert np.linalg.norm(change) * QN <= reporting * clip * (1 + 1e-5)


def test_central_noise_has_the_configured_std_and_is_keyed():
    z, clip = 1.0, 0.05
    over = ["server.rounds=1", f"privacy.clip_norm={clip}", "model.name='mlp'"]
    clean = fedsim.run(small_config(*DP, *over, "privacy.noise_multiplier=0.0"))
    noisy = fedsim.run(small_config(*DP, *over, f"privacy.noise_multiplier={z}"))
    diff = noisy.model.astype(np.float64) - clean.model.astype(np.float64)
    assert diff.size > 5000
    assert np.std(diff) == pytest.approx(z * clip / QN, rel=0.04)
    expected = central_noise(diff.size, z, clip, 3, 1) / QN
    np.testing.assert_allclose(diff, expected, atol=1e-6)


def test_epsilon_column_is_the_accountants_value_after_each_round():
    z = 0.8
    result = fedsim.run(small_config(*DP, "server.rounds=4", f"privacy.noise_multiplier={z}"))
    eps = result.rounds["epsilon"].to_numpy()
    expected = [accounting.epsilon(Q, z, r, 1e-5) for r in range(1, 5)]
    np.testing.assert_allclose(eps, expected, rtol=1e-12)
    assert np.all(np.diff(eps) > 0)
    assert result.summary["epsilon"] == eps[-1]
    assert fedsim.run(small_config("server.rounds=1")).rounds["epsilon"].isna().all()


def test_the_first_round_that_would_exceed_target_epsilon_is_not_run(tmp_path):
    z = 0.8
    full = fedsim.run(small_config(*DP, "server.rounds=6", f"privacy.noise_multiplier={z}"))
    target = (accounting.epsilon(Q, z, 3, 1e-5) + accounting.epsilon(Q, z, 4, 1e-5)) / 2
    out = tmp_path / "run"
    stopped = fedsim.run(
        small_config(*DP, "server.rounds=6", f"privacy.noise_multiplier={z}",
                     f"privacy.target_epsilon={target}"),
        out_dir=out,
    )  # fmt: skip
    assert len(stopped.rounds) == 3
    assert stopped.rounds["epsilon"].max() <= target < full.rounds["epsilon"].iloc[3]
    assert stopped.summary["stop_reason"] == "target_epsilon"
    pd.testing.assert_frame_equal(_records(stopped), _records(full).iloc[:3])
    assert checkpoint.load(out).round == 3


def test_secagg_gives_the_plain_model_up_to_the_fixed_point_step():
    over = ["server.rounds=2", "server.over_selection=1.0"]
    plain = fedsim.run(small_config(*PLAIN, *over))
    sec = fedsim.run(small_config(*PLAIN, *over, "privacy.secure_aggregation=true",
                                  "privacy.bits=24"))  # fmt: skip
    # Without DP each client sends n_k * delta_k; coordinates range over +-clip_range * max n_k.
    n = plain.clients.groupby("round")["num_samples"]
    step = (1.0 * n.max().max()) / fixed_point_levels(24, 20)
    bound = 2 * (20 * 0.5 * step / n.sum().min())  # two rounds of rounding, over sum n_k
    diff = np.abs(sec.model.astype(np.float64) - plain.model)
    assert 0 < diff.max() <= bound + 1e-6
    assert not sec.rounds["aborted"].any()


def test_secagg_under_dp_matches_dp_without_it_up_to_quantisation():
    clip = 0.05
    over = ["server.rounds=2", f"privacy.clip_norm={clip}", "privacy.noise_multiplier=0.0"]
    dp = fedsim.run(small_config(*DP, *over))
    sec = fedsim.run(small_config(*DP, *over, "privacy.secure_aggregation=true",
                                  "privacy.bits=20"))  # fmt: skip
    cohorts = sec.rounds["selected"]
    step = clip / min(fixed_point_levels(20, int(n)) for n in cohorts)
    bound = sum(0.5 * step * n / QN for n in cohorts)
    diff = np.abs(sec.model.astype(np.float64) - dp.model)
    assert 0 < diff.max() <= bound + 1e-6


def test_secagg_bytes_and_time_grow_by_exactly_the_protocol_formula():
    over = ["server.rounds=2", "server.over_selection=1.0"]
    plain = fedsim.run(small_config(*PLAIN, *over))
    sec = fedsim.run(small_config(*PLAIN, *over, "privacy.secure_aggregation=true"))
    k = neighbour_count(20)
    assert k == 19  # all pairs: every client neighbours the 19 others
    up = 2 * 32 + k * 100 + k * 36  # advertise_keys, share_keys, unmasking (masked input apart)
    down = k * 68 + k * 100 + k * 4
    c = sec.clients
    assert (c["protocol_bytes_up"] == up).all() and (c["protocol_bytes_down"] == down).all()
    # 32-bit masked inputs are as large as the float32 update, so the clock plans the same.
    r, p = sec.rounds, plain.rounds
    assert (r["bytes_up"] - p["bytes_up"] == 20 * up).all()
    assert (r["bytes_down"] - p["bytes_down"] == 20 * down).all()
    bandwidth = 1.25e6  # the small config's default, both ways
    # Three extra round trips, each as slow as every client here; the shares forwarded in the
    # masked-input round ride with the model's download.
    extra = (up + k * 68 + k * 4) / bandwidth
    np.testing.assert_allclose(r["round_duration_s"] - p["round_duration_s"], extra, rtol=1e-9)


def test_rounds_below_the_threshold_abort_and_keep_the_model():
    cfg = small_config(*PLAIN, "server.rounds=3", "population.dropout_rate=0.8",
                       "server.min_completed=1", "privacy.secure_aggregation=true")  # fmt: skip
    result = fedsim.run(cfg)
    r = result.rounds
    assert r["aborted"].all() and r["failed"].all()
    assert (r["reporting"] > 0).all() and (r["reporting"] < 12).all()  # threshold 12 of 23
    # rounds.csv says why: the masked inputs received, below the threshold.
    expected = [f"{n} masked inputs received, threshold 12" for n in r["reporting"]]
    assert r["abort_reason"].tolist() == expected
    np.testing.assert_array_equal(result.model, prepare(cfg).model.init(cfg.experiment.seed))
    assert result.summary["aborted_rounds"] == 3


COMPOSED = [
    "server.rounds=3",
    "server.min_completed=3",
    "privacy.enabled=true",
    "privacy.clip_norm=0.1",
    "privacy.noise_multiplier=0.5",
    "privacy.adaptive_clipping=true",
    "privacy.secure_aggregation=true",
    "privacy.distributed_noise=true",
    "privacy.neighbours=8",
]


@pytest.mark.slow
def test_dp_with_secagg_is_identical_on_local_and_ray_backends(ray_session):
    local = fedsim.run(small_config(*COMPOSED))
    r = local.rounds
    assert not r["failed"].any() and (r["dropped"] + r["stragglers"]).sum() > 0
    assert r["clip_norm"].nunique() == 3, "adaptive clipping moved the clip norm"
    for workers in (1, 2):
        ray_run = fedsim.run(
            small_config(*COMPOSED, "runtime.backend='ray'", f"runtime.workers={workers}")
        )
        pd.testing.assert_frame_equal(_records(local), _records(ray_run))
        pd.testing.assert_frame_equal(local.clients, ray_run.clients)
        np.testing.assert_array_equal(local.model, ray_run.model)


def test_a_dp_run_with_adaptive_clipping_resumes_identically(tmp_path):
    over = [*COMPOSED, "server.rounds=6", "runtime.checkpoint_every=2"]
    reference = fedsim.run(small_config(*over), out_dir=tmp_path / "ref")
    out = tmp_path / "crashed"

    def crash(record):
        if record["round"] == 5:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        fedsim.run(small_config(*over), out_dir=out, on_round=crash)
    assert checkpoint.load(out).round == 4
    resumed = resume(out)
    pd.testing.assert_frame_equal(_records(resumed), _records(reference))
    np.testing.assert_array_equal(resumed.model, reference.model)
    assert resumed.rounds["clip_norm"].nunique() == 6


def test_privacy_config_is_checked_against_the_population():
    with pytest.raises(ConfigError, match="privacy.bits: 4 bits cannot hold"):
        small_config("privacy.secure_aggregation=true", "privacy.bits=4")
    with pytest.raises(ConfigError, match="privacy.distributed_noise: needs enabled"):
        small_config("privacy.distributed_noise=true")


def test_the_privacy_command_is_on_the_command_line(capsys):
    assert cli.main(["privacy", "--q", "0.1", "--noise-multiplier", "0.8", "--rounds", "4"]) == 0
    eps = accounting.epsilon(0.1, 0.8, 4, 1e-5)
    assert f"epsilon = {eps:.4f} after 4 rounds" in capsys.readouterr().out
