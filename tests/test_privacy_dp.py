"""Differential privacy: clipping bounds, noise scales, keyed sampling, adaptive clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedsim.options import ConfigError, build, to_table
from fedsim.privacy import PrivacyOptions, PrivacyPurpose, dp
from fedsim.rng import Purpose


def _updates(seed: int = 0) -> np.ndarray:
    # Norms spread over nine orders of magnitude, float32 like the models' parameters.
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((300, 777)) * np.logspace(-4, 5, 300)[:, None]
    return d.astype(np.float32)


@pytest.mark.parametrize("clip_norm", [1e-3, 0.1, 1.0, 3.7, 1e4])
def test_clipped_norms_never_exceed_clip_norm(clip_norm):
    deltas = _updates()
    clipped, norms = dp.clip_updates(deltas, clip_norm)
    # Three ways to compute a norm (BLAS dot, pairwise sums, math.fsum): none reads above C.
    assert (np.linalg.norm(clipped, axis=1) <= clip_norm).all()
    assert all(np.linalg.norm(row) <= clip_norm for row in clipped)
    assert all(math.sqrt(math.fsum(row * row)) <= clip_norm for row in clipped)
    np.testing.assert_allclose(norms, np.linalg.norm(deltas.astype(np.float64), axis=1))


def test_clipping_keeps_direction_and_leaves_small_updates_alone():
    deltas = _updates(1).astype(np.float64)
    clipped, norms = dp.clip_updates(deltas, 1.0)
    small = norms < 1.0 - 1e-9
    assert small.any() and (~small).any()
    np.testing.assert_array_equal(clipped[small], deltas[small])
    np.testing.assert_allclose(np.linalg.norm(clipped[~small], axis=1), 1.0, rtol=1e-11)
    # Parallel and same sense: clipped = delta * (C / norm).
    np.testing.assert_allclose(clipped[~small], deltas[~small] / norms[~small, None], rtol=1e-9)


def test_clip_one_vector_returns_vector_and_scalar_norm():
    clipped, norm = dp.clip_updates(np.array([3.0, 4.0]), 1.0)
    assert clipped.shape == (2,) and norm.shape == ()
    assert float(norm) == 5.0
    np.testing.assert_allclose(clipped, [0.6, 0.8])
    with pytest.raises(ValueError):
        dp.clip_updates(np.ones(3), 0.0)


def test_central_noise_has_configured_stddev():
    z, c, p = 1.3, 0.7, 400_000
    noise = dp.central_noise(p, z, c, seed=11, round_=5)
    sigma = z * c
    # Standard errors of the sample mean and sample std of P normal draws: sigma/sqrt(P),
    # sigma/sqrt(2P). Five of them is a fixed-seed test that a wrong scale cannot pass.
    assert abs(noise.mean()) < 5 * sigma / math.sqrt(p)
    assert abs(noise.std() - sigma) < 5 * sigma / math.sqrt(2 * p)
    assert stats.kstest(noise / sigma, "norm").pvalue > 1e-3


def test_noise_is_keyed_by_seed_and_round():
    a = dp.central_noise(1000, 1.0, 1.0, seed=3, round_=7)
    np.testing.assert_array_equal(a, dp.central_noise(1000, 1.0, 1.0, seed=3, round_=7))
    assert not np.array_equal(a, dp.central_noise(1000, 1.0, 1.0, seed=3, round_=8))
    assert not np.array_equal(a, dp.central_noise(1000, 1.0, 1.0, seed=4, round_=7))


def test_client_noise_depends_only_on_the_client():
    together = dp.client_noise(np.array([3, 5, 9]), 500, 0.5, seed=1, round_=2)
    alone = dp.client_noise(np.array([5]), 500, 0.5, seed=1, round_=2)
    np.testing.assert_array_equal(together[1], alone[0])
    distributed = dp.client_noise(
        np.array([5]), 500, 0.5, seed=1, round_=2, purpose=PrivacyPurpose.DISTRIBUTED_NOISE
    )
    assert not np.array_equal(distributed, alone)


def test_local_noise_has_configured_stddev_per_client():
    noise = dp.client_noise(np.arange(20), 20_000, 0.25, seed=2, round_=1)
    se = 0.25 / math.sqrt(2 * 20_000)
    assert (np.abs(noise.std(axis=1) - 0.25) < 5 * se).all()
    # Clients' noises are independent: correlations are at the 1/sqrt(P) level.
    corr = np.corrcoef(noise)[np.triu_indices(20, 1)]
    assert np.abs(corr).max() < 5 / math.sqrt(20_000)


def test_distributed_noise_sums_to_the_central_stddev():
    z, c, t = 1.1, 0.5, 16
    s = dp.distributed_noise_stddev(z, c, t)
    assert s * math.sqrt(t) == pytest.approx(z * c, rel=1e-15)
    total = dp.client_noise(np.arange(t), 100_000, s, seed=5, round_=3).sum(axis=0)
    assert abs(total.std() - z * c) < 5 * z * c / math.sqrt(2 * 100_000)


def test_noisy_average_divides_by_the_expected_cohort():
    total = np.linspace(-3, 3, 101)
    np.testing.assert_allclose(
        dp.noisy_average(
            total, noise_multiplier=0.0, clip_norm=1.0, expected_cohort=40.0, seed=0, round_=1
        ),
        total / 40.0,
    )
    avg = dp.noisy_average(
        total, noise_multiplier=2.0, clip_norm=0.5, expected_cohort=40.0, seed=0, round_=1
    )
    np.testing.assert_allclose(
        avg * 40.0 - total, dp.central_noise(101, 2.0, 0.5, 0, 1), atol=1e-12
    )


def test_poisson_sample_has_rate_q_and_ignores_other_candidates():
    n, q = 200_000, 0.03
    ids = np.arange(n)
    picked = dp.poisson_sample(ids, q, seed=9, round_=4)
    assert abs(len(picked) - q * n) < 5 * math.sqrt(n * q * (1 - q))
    # A client's inclusion is its own draw: sampling from a subset gives the intersection.
    subset = ids[::7]
    np.testing.assert_array_equal(
        dp.poisson_sample(subset, q, seed=9, round_=4), np.intersect1d(picked, subset)
    )
    np.testing.assert_array_equal(picked, dp.poisson_sample(ids, q, seed=9, round_=4))
    other = dp.poisson_sample(ids, q, seed=9, round_=5)
    # Rounds are independent: the overlap of two rounds is about q^2 n.
    overlap = len(np.intersect1d(picked, other))
    assert abs(overlap - q * q * n) < 5 * math.sqrt(q * q * n)


def test_privacy_purposes_do_not_collide_with_simulator_purposes():
    sim = {int(p) for p in Purpose} | {int(p) + 1000 for p in Purpose}
    mine = {int(p) for p in PrivacyPurpose} | {int(p) + 1000 for p in PrivacyPurpose}
    assert not sim & mine


def test_update_noise_multiplier_follows_andrew_et_al():
    z, sigma_b = 1.0, 5.0
    z_delta = dp.update_noise_multiplier(z, sigma_b)
    assert z_delta == pytest.approx((1 - 1 / 100) ** -0.5, rel=1e-12)
    # Composing the count query (sensitivity 1/2 at std sigma_b) and the update gives back z.
    assert (z_delta**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(z, rel=1e-12)
    assert dp.update_noise_multiplier(0.0, 1.0) == 0.0
    with pytest.raises(ValueError):
        dp.update_noise_multiplier(1.0, 0.5)


def test_adaptive_clip_tracks_the_target_quantile():
    # Update norms are lognormal with median 2 and 0.9-quantile 2 exp(0.5 * 1.2816).
    m = 1000
    for gamma, true_quantile in [(0.5, 2.0), (0.9, 2.0 * math.exp(0.5 * 1.2815516))]:
        state = dp.AdaptiveClip(clip_norm=0.1, target_quantile=gamma, count_stddev=m / 20)
        rng = np.random.default_rng(0)
        for r in range(1, 301):
            norms = 2.0 * np.exp(0.5 * rng.standard_normal(m))
            state = state.update(dp.count_unclipped(norms, state.clip_norm), m, seed=1, round_=r)
        assert abs(math.log(state.clip_norm / true_quantile)) < 0.1


def test_adaptive_clip_step_is_geometric():
    state = dp.AdaptiveClip(clip_norm=1.0, target_quantile=0.5, learning_rate=0.2, count_stddev=0.0)
    # All 100 unclipped: b = 1, C <- C exp(-0.2 * 0.5).
    assert state.update(100, 100.0, 0, 1).clip_norm == pytest.approx(math.exp(-0.1), rel=1e-15)
    assert state.update(0, 100.0, 0, 1).clip_norm == pytest.approx(math.exp(0.1), rel=1e-15)
    assert dp.count_unclipped(np.array([0.5, 1.0, 1.5]), 1.0) == 2


def test_privacy_options_defaults_are_off_and_round_trip():
    opts = build(PrivacyOptions, {}, "privacy")
    assert not opts.enabled and not opts.secure_aggregation
    table = to_table(build(PrivacyOptions, {"enabled": True, "target_epsilon": 4}, "privacy"))
    assert build(PrivacyOptions, table, "privacy").target_epsilon == 4.0
    assert opts.rate(1000, 50) == 0.05
    assert opts.expected_cohort(1000, 50) == pytest.approx(50.0)
    assert opts.fixed_point_range() == opts.clip_norm
    assert opts.count_stddev(1000, 50) == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"adaptive_clipping": True}, "privacy.adaptive_clipping: needs enabled = true"),
        ({"target_epsilon": 1.0}, "privacy.target_epsilon: needs enabled = true"),
        ({"local_noise_multiplier": 1.0}, "privacy.local_noise_multiplier: needs enabled"),
        ({"enabled": True, "distributed_noise": True}, "privacy.distributed_noise: needs secure"),
        (
            {"enabled": True, "target_epsilon": 1.0, "noise_multiplier": 0},
            "privacy.target_epsilon: needs noise_multiplier > 0",
        ),
        ({"delta": 1.0}, "privacy.delta: must be in (0, 1)"),
        ({"clip_norm": 0}, "privacy.clip_norm: must be > 0"),
        ({"bits": 65}, "privacy.bits: must be in [2, 64]"),
        ({"accountant": "moments"}, "privacy.accountant: must be one of 'rdp' | 'pld'"),
        ({"noise": 1.0}, "privacy.noise: unknown key"),
    ],
)
def test_privacy_options_reject_inconsistent_keys(table, message):
    with pytest.raises(ConfigError) as err:
        build(PrivacyOptions, table, "privacy")
    assert str(err.value).startswith(message)


def test_privacy_options_checks_against_the_cohort():
    secagg = build(PrivacyOptions, {"secure_aggregation": True, "bits": 8}, "privacy")
    # 8 bits: signed values up to 127, so at most 127 clients (one level each).
    assert secagg.check_against(10_000, 127) is None
    assert secagg.check_against(10_000, 100, over_selection=1.3) == (
        "bits: 8 bits cannot hold the sum of 130 clients' updates"
    )
    adaptive = build(
        PrivacyOptions,
        {"enabled": True, "adaptive_clipping": True, "noise_multiplier": 1.0},
        "privacy",
    )
    assert adaptive.check_against(1000, 100) is None  # sigma_b = 5
    assert adaptive.check_against(1000, 10).startswith("clip_count_stddev:")  # sigma_b = 0.5
