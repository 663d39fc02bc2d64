"""Privacy accounting: published epsilons, RDP vs PLD, monotonicity, calibration, budget stops."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant

from fedsim.cli import build_parser
from fedsim.options import ConfigError
from fedsim.privacy import accounting

MNIST_Q = 256 / 60000  # batch 256 of MNIST's 60,000 training examples


def _steps(epochs: int) -> int:
    return epochs * 60000 // 256


# Published epsilons of the Poisson-subsampled Gaussian at delta = 1e-5: (q, z, T, epsilon).
# They were computed with the moments accountant / early RDP, i.e. RDP at a grid of orders
# converted with Mironov 2017 (Prop. 3): epsilon = min_a RDP(a) + log(1/delta) / (a - 1).
PUBLISHED = [
    # Abadi et al. 2016, "Deep Learning with Differential Privacy", Sec. 3.1: q = 0.01,
    # sigma = 4, T = 10,000 steps give epsilon ~ 1.26 with the moments accountant.
    pytest.param(0.01, 4.0, 10_000, 1.26, id="abadi2016"),
    # TensorFlow Privacy, tutorials/README.md, "Select Parameters" table (MNIST DP-SGD).
    pytest.param(MNIST_Q, 1.12, _steps(60), 2.92, id="tfp-60-epochs"),
    pytest.param(MNIST_Q, 0.6, _steps(30), 9.74, id="tfp-30-epochs"),
    pytest.param(MNIST_Q, 1.2, _steps(10), 1.20, id="tfp-10-epochs"),
    # Bu, Dong, Long & Su 2020, "Deep Learning with Gaussian Differential Privacy" (Harvard
    # Data Science Review), Fig. 4: the moments accountant's (1.34, 1e-5) at epoch 20 for
    # sigma = 1.3 and (8.68, 1e-5) at epoch 70 for sigma = 0.7.
    pytest.param(MNIST_Q, 1.3, _steps(20), 1.34, id="bu2020-sigma1.3"),
    pytest.param(MNIST_Q, 0.7, _steps(70), 8.68, id="bu2020-sigma0.7"),
]


@pytest.mark.parametrize(("q", "z", "rounds", "published"), PUBLISHED)
def test_rdp_curve_reproduces_published_epsilons(q, z, rounds, published):
    orders, rdp = accounting.rdp_curve(q, z, rounds)
    classic = float(np.min(rdp - math.log(1e-5) / (orders - 1)))
    # Published values have two decimals; the orders each paper used differ a little from ours.
    assert abs(classic - published) <= 0.01 * published + 0.005
    # fedsim's epsilon uses the tighter RDP conversion of Canonne et al. 2020, and PLD is
    # tighter still: both below the published bound, neither absurdly so.
    eps_rdp = accounting.epsilon(q, z, rounds, 1e-5, "rdp")
    eps_pld = accounting.epsilon(q, z, rounds, 1e-5, "pld")
    assert 0.5 * published < eps_pld <= eps_rdp <= classic


def test_epsilons_of_this_library_version_are_pinned():
    # dp-accounting 0.6 values for Abadi et al.'s setting, to notice a silent change of method.
    assert accounting.epsilon(0.01, 4.0, 10_000, 1e-5, "rdp") == pytest.approx(1.0355, abs=2e-3)
    assert accounting.epsilon(0.01, 4.0, 10_000, 1e-5, "pld") == pytest.approx(0.9470, abs=2e-3)


GRID = [(q, z, t) for q in (0.001, 0.1) for z in (0.8, 2.0) for t in (1, 1000)]


@pytest.mark.parametrize(("q", "z", "rounds"), GRID)
def test_rdp_is_an_upper_bound_on_pld(q, z, rounds):
    assert accounting.epsilon(q, z, rounds, 1e-6, "pld") <= accounting.epsilon(
        q, z, rounds, 1e-6, "rdp"
    )


@pytest.mark.parametrize("kind", ["rdp", "pld"])
def test_epsilon_grows_with_rounds_and_shrinks_with_noise(kind):
    rounds = [1, 10, 100, 1000]
    by_rounds = [accounting.epsilon(0.02, 1.0, t, 1e-5, kind) for t in rounds]
    assert all(a < b for a, b in zip(by_rounds, by_rounds[1:], strict=False))
    noises = [0.6, 0.8, 1.0, 1.5, 3.0]
    by_noise = [accounting.epsilon(0.02, z, 200, 1e-5, kind) for z in noises]
    assert all(a > b for a, b in zip(by_noise, by_noise[1:], strict=False))
    # More sampling costs more privacy.
    assert accounting.epsilon(0.01, 1.0, 200, 1e-5, kind) < by_noise[2]


def test_pld_matches_dp_accountings_pld_accountant():
    q, z, t = 0.05, 1.1, 300
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), t
        )
    )
    assert accounting.epsilon(q, z, t, 1e-5, "pld") == pytest.approx(acc.get_epsilon(1e-5), 1e-9)


def test_edge_cases():
    assert accounting.epsilon(0.1, 1.0, 0, 1e-5) == 0.0
    assert accounting.epsilon(0.0, 1.0, 100, 1e-5) == 0.0
    assert accounting.epsilon(0.1, 0.0, 1, 1e-5) == math.inf
    with pytest.raises(ValueError):
        accounting.epsilon(1.5, 1.0, 10, 1e-5)
    with pytest.raises(ValueError):
        accounting.epsilon(0.1, 1.0, 10, 0.0)
    with pytest.raises(ValueError):
        accounting.epsilon(0.1, 1.0, 10, 1e-5, "moments")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["rdp", "pld"])
def test_noise_multiplier_for_epsilon_meets_the_target_tightly(kind):
    q, t, target = 0.01, 1000, 2.0
    z = accounting.noise_multiplier_for_epsilon(q, target, t, 1e-5, kind, rtol=1e-3)
    assert accounting.epsilon(q, z, t, 1e-5, kind) <= target
    assert accounting.epsilon(q, z * (1 - 2e-3), t, 1e-5, kind) > target


def test_pld_needs_less_noise_than_rdp_for_the_same_target():
    z_rdp = accounting.noise_multiplier_for_epsilon(0.01, 1.0, 10_000, 1e-5, "rdp")
    z_pld = accounting.noise_multiplier_for_epsilon(0.01, 1.0, 10_000, 1e-5, "pld")
    assert z_pld < z_rdp


@pytest.mark.parametrize("kind", ["rdp", "pld"])
def test_rounds_within_budget_is_the_last_round_under_target(kind):
    q, z, target = 0.1, 1.0, 4.0
    t = accounting.rounds_within_budget(q, z, 1e-5, target, kind)
    assert t > 0
    assert accounting.epsilon(q, z, t, 1e-5, kind) <= target
    assert accounting.epsilon(q, z, t + 1, 1e-5, kind) > target
    assert accounting.rounds_within_budget(q, z, 1e-5, target, kind, max_rounds=10) == 10
    assert accounting.rounds_within_budget(q, z, 1e-5, 0.01, kind) == 0


@pytest.mark.parametrize("kind", ["rdp", "pld"])
def test_budget_stop_happens_at_the_right_round(kind):
    # A run with q = 0.05, z = 0.8, target epsilon 3 stops before the first round that would
    # push epsilon above 3, having spent at most 3.
    acc = accounting.RoundAccountant(0.05, 0.8, 1e-5, kind, target_epsilon=3.0)
    ran = []
    for r in range(1, 1000):
        if not acc.allows(r):
            break
        ran.append(acc.epsilon(r))
    last = len(ran)
    assert last == accounting.rounds_within_budget(0.05, 0.8, 1e-5, 3.0, kind)
    assert ran[-1] <= 3.0 < acc.epsilon(last + 1)
    assert all(a < b for a, b in zip(ran, ran[1:], strict=False))
    assert accounting.RoundAccountant(0.05, 0.8, 1e-5, kind).allows(10**6)


def test_local_epsilon_has_no_sampling_amplification():
    z, t = 4.0, 20
    local = accounting.local_epsilon(z, t, 1e-5)
    # Sensitivity 2C against the server: the Gaussian mechanism at z / 2, every participation.
    assert local == pytest.approx(accounting.epsilon(1.0, z / 2, t, 1e-5, "rdp"))
    assert local > accounting.epsilon(1.0, z, t, 1e-5, "rdp")
    assert accounting.local_epsilon(z, 0, 1e-5) == 0.0
    assert accounting.local_epsilon(0.0, 1, 1e-5) == math.inf


def _cli(argv):
    args = build_parser().parse_args(["privacy", *argv])
    return args.func(args)


def test_cli_prints_epsilon(capsys):
    assert _cli(["--q", "0.01", "--noise-multiplier", "4", "--rounds", "10000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("epsilon = 1.035")
    assert "rdp accountant" in out


def test_cli_prints_noise_multiplier_for_target(capsys):
    argv = ["--q", "0.01", "--target-epsilon", "1", "--rounds", "10000", "--accountant", "pld"]
    assert _cli(argv) == 0
    out = capsys.readouterr().out
    z = float(out.split("noise multiplier = ")[1].split()[0])
    assert accounting.epsilon(0.01, z, 10_000, 1e-5, "pld") <= 1.0
    assert 3.7 < z < 3.9


def test_cli_prints_rounds_within_budget(capsys):
    assert _cli(["--q", "0.01", "--noise-multiplier", "1", "--target-epsilon", "2"]) == 0
    t = int(capsys.readouterr().out.split("rounds = ")[1].split()[0])
    assert t == accounting.rounds_within_budget(0.01, 1.0, 1e-5, 2.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--q", "0.01", "--rounds", "10"], "privacy: give exactly two"),
        (["--q", "0", "--noise-multiplier", "1", "--rounds", "10"], "--q: must be in (0, 1]"),
        (["--q", "0.1", "--noise-multiplier", "1", "--rounds", "0"], "--rounds: must be >= 1"),
        (["--q", "0.1", "--target-epsilon", "-1", "--rounds", "5"], "--target-epsilon: must be"),
        (["--q", "0.1", "--noise-multiplier", "1", "--rounds", "5", "--delta", "1"], "--delta"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        _cli(argv)
