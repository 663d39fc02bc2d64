"""The synthetic dataset against the reference generator of Li et al. 2020 (FedProx), and its
properties (keyed per device, 90/10 split, test set of held-out device data).

The reference procedure is re-implemented below from the paper's description (Appendix C.1):
one global numpy RandomState draws, for all devices in turn, the sizes, the prior means, the
feature means, then each device's model and samples. fedsim draws each device from its own
keyed generator instead, so the two agree in distribution, not draw for draw: the tests compare
statistics over many devices, with tolerances of about four standard errors (or stated bounds).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from fedsim.data.synthetic import SyntheticDataset, SyntheticOptions

DIM, CLASSES = 60, 10
DEVICES = 1000
# Caps device sizes for the data statistics (the sizes test uses uncapped sizes), so a few
# heavy-tailed devices cannot dominate the pooled numbers or the run time.
CAP = 200
NON_IID = [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]
SIGMA = np.power(np.arange(1, DIM + 1, dtype=np.float64), -1.2)  # Sigma_jj = (j + 1)^-1.2


def reference_sizes(num_devices: int, seed: int, max_samples: int = 0) -> np.ndarray:
    sizes = np.random.RandomState(seed).lognormal(4, 2, num_devices).astype(int) + 50
    return np.minimum(sizes, max_samples) if max_samples else sizes


def reference_devices(
    alpha: float, beta: float, iid: bool, num_devices: int, seed: int, max_samples: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Training data (first int(0.9 n) samples) of every device, by the reference procedure."""
    rs = np.random.RandomState(seed)
    sizes = rs.lognormal(4, 2, num_devices).astype(int) + 50
    if max_samples:
        sizes = np.minimum(sizes, max_samples)
    mean_w = rs.normal(0, alpha, num_devices)
    mean_b = mean_w
    big_b = rs.normal(0, beta, num_devices)
    mean_x = np.empty((num_devices, DIM))
    for k in range(num_devices):
        mean_x[k] = np.ones(DIM) * big_b[k] if iid else rs.normal(big_b[k], 1, DIM)
    if iid:
        w_global = rs.normal(0, 1, (DIM, CLASSES))
        b_global = rs.normal(0, 1, CLASSES)
    devices = []
    for k in range(num_devices):
        w = rs.normal(mean_w[k], 1, (DIM, CLASSES))
        b = rs.normal(mean_b[k], 1, CLASSES)
        if iid:
            w, b = w_global, b_global
        # N(mean_x, diag(Sigma)) drawn coordinate-wise: the same distribution as a
        # multivariate normal with that diagonal covariance, without a factorisation per device.
        x = mean_x[k] + np.sqrt(SIGMA) * rs.normal(0, 1, (sizes[k], DIM))
        logits = x @ w + b
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        y = prob.argmax(axis=1)
        train = int(0.9 * sizes[k])
        devices.append((x[:train], y[:train]))
    return devices


def fedsim_dataset(
    alpha: float, beta: float, iid: bool, num_devices: int, seed: int, **options: int
) -> SyntheticDataset:
    opts = SyntheticOptions(alpha=alpha, beta=beta, iid=iid, **options)
    return SyntheticDataset(opts, num_devices, seed)


def fedsim_devices(
    alpha: float, beta: float, iid: bool, num_devices: int, seed: int, max_samples: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    ds = fedsim_dataset(alpha, beta, iid, num_devices, seed, max_samples=max_samples)
    return [ds.client_train(k) for k in range(num_devices)]


@functools.cache
def both(alpha: float, beta: float, iid: bool) -> dict[str, list]:
    return {
        "reference": reference_devices(alpha, beta, iid, DEVICES, seed=1, max_samples=CAP),
        "fedsim": fedsim_devices(alpha, beta, iid, DEVICES, seed=1, max_samples=CAP),
    }


def entropy(y: np.ndarray) -> float:
    p = np.bincount(y, minlength=CLASSES) / len(y)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


# --- sample counts --------------------------------------------------------------------------


def test_sample_counts_follow_lognormal_4_2_plus_50() -> None:
    n = 20_000
    ours = fedsim_dataset(0, 0, False, n, seed=5).client_sizes()
    ref = (0.9 * reference_sizes(n, seed=5)).astype(int)
    assert ours.min() >= int(0.9 * 50) and ref.min() >= int(0.9 * 50)
    q = [5, 10, 25, 50, 75, 90, 95]
    z = np.array([-1.6449, -1.2816, -0.6745, 0.0, 0.6745, 1.2816, 1.6449])
    theory = np.log((0.9 * (np.exp(4 + 2 * z).astype(int) + 50)).astype(int))
    log_ours, log_ref = np.percentile(np.log(ours), q), np.percentile(np.log(ref), q)
    # Quantiles of log size from 20,000 devices are within a few percent of the law's.
    np.testing.assert_allclose(log_ours, theory, atol=0.06)
    np.testing.assert_allclose(log_ref, theory, atol=0.06)
    np.testing.assert_allclose(log_ours, log_ref, atol=0.08)
    assert np.median(ours) == pytest.approx(int(0.9 * (int(math.exp(4)) + 50)), abs=2)


def test_max_samples_caps_device_sizes() -> None:
    ds = fedsim_dataset(1, 1, False, 2000, seed=0, max_samples=300)
    assert ds.client_sizes().max() == int(0.9 * 300)
    assert (ds.client_sizes() == int(0.9 * 300)).mean() > 0.2  # lognormal(4, 2) often exceeds 300


# --- labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "beta"), NON_IID)
def test_label_entropy_per_device_matches_reference(alpha: float, beta: float) -> None:
    data = both(alpha, beta, False)
    ent = {k: np.array([entropy(y) for _, y in v]) for k, v in data.items()}
    (m_ours, se_ours), (m_ref, se_ref) = mean_and_se(ent["fedsim"]), mean_and_se(ent["reference"])
    assert se_ours < 0.02 and se_ref < 0.02
    assert abs(m_ours - m_ref) < 4 * math.hypot(se_ours, se_ref)
    # Devices hold few labels: a typical device has well under one nat of label entropy.
    assert 0.2 < m_ours < 0.6
    q = [10, 50, 90]
    np.testing.assert_allclose(
        np.percentile(ent["fedsim"], q), np.percentile(ent["reference"], q), atol=0.1
    )


@pytest.mark.parametrize(("alpha", "beta"), NON_IID)
def test_classes_balanced_overall(alpha: float, beta: float) -> None:
    for name, devices in both(alpha, beta, False).items():
        pooled = np.bincount(np.concatenate([y for _, y in devices]), minlength=CLASSES)
        fractions = pooled / pooled.sum()
        # Classes are exchangeable; 1000 devices bring the pooled mix to within 0.045 of 1/10.
        assert np.abs(fractions - 1 / CLASSES).max() < 0.045, name


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_iid_label_entropy_matches_reference_over_seeds(beta: float) -> None:
    # With iid one global W, b labels every device, so one seed is one draw of the labelling
    # function: average over seeds to compare the distributions.
    seeds, per_seed = 80, 30
    means = {"fedsim": [], "reference": []}
    for s in range(seeds):
        for name, make in (("fedsim", fedsim_devices), ("reference", reference_devices)):
            devices = make(0.0, beta, True, per_seed, s, max_samples=CAP)
            means[name].append(np.mean([entropy(y) for _, y in devices]))
    (m_ours, se_ours), (m_ref, se_ref) = (mean_and_se(np.array(means[k])) for k in means)
    assert se_ours < 0.04 and se_ref < 0.04
    assert abs(m_ours - m_ref) < 4 * math.hypot(se_ours, se_ref)


def test_iid_devices_share_one_label_distribution() -> None:
    """iid with beta = 0: per-device label counts are multinomial draws from one mix."""

    def dispersion(devices: list) -> float:
        counts = np.array([np.bincount(y, minlength=CLASSES) for _, y in devices], dtype=float)
        p = counts.sum(axis=0) / counts.sum()
        keep = p > 0
        expected = counts.sum(axis=1, keepdims=True) * p[keep]
        chi2 = ((counts[:, keep] - expected) ** 2 / expected).sum()
        return chi2 / ((len(devices) - 1) * (keep.sum() - 1))

    # Pearson's chi-square over its degrees of freedom: ~1 for a common mix, >> 1 otherwise.
    assert 0.85 < dispersion(both(0.0, 0.0, True)["fedsim"]) < 1.15
    assert 0.85 < dispersion(both(0.0, 0.0, True)["reference"]) < 1.15
    assert dispersion(both(0.0, 0.0, False)["fedsim"]) > 10


# --- features -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "beta", "iid"), [*((a, b, False) for a, b in NON_IID), (0.0, 0.0, True)]
)
def test_feature_variance_within_device_is_power_law(alpha: float, beta: float, iid: bool) -> None:
    for name, devices in both(alpha, beta, iid).items():
        centred = np.concatenate([x - x.mean(axis=0) for x, _ in devices]).astype(np.float64)
        dof = len(centred) - len(devices)
        variance = (centred**2).sum(axis=0) / dof
        # ~180,000 samples per coordinate: each variance within 3% of (j + 1)^-1.2.
        np.testing.assert_allclose(variance / SIGMA, 1.0, atol=0.03, err_msg=name)


@pytest.mark.parametrize(("alpha", "beta"), NON_IID)
def test_device_feature_means_spread_like_sqrt_beta2_plus_1(alpha: float, beta: float) -> None:
    spreads = {}
    for name, devices in both(alpha, beta, False).items():
        means = np.array([x.mean(axis=0) for x, _ in devices], dtype=np.float64)
        sizes = np.array([len(x) for x, _ in devices])
        # v_kj ~ N(B_k, 1) with B_k ~ N(0, beta): variance beta^2 + 1, plus the sampling
        # noise Sigma_jj / n_k of a device mean.
        theory = math.sqrt(beta**2 + 1 + np.mean(SIGMA.mean() / sizes))
        spreads[name] = float(np.sqrt((means**2).mean()))
        assert spreads[name] == pytest.approx(theory, rel=0.07), name
    assert spreads["fedsim"] == pytest.approx(spreads["reference"], rel=0.09)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_iid_device_means_are_one_shift_per_device(beta: float) -> None:
    for name, devices in both(0.0, beta, True).items():
        means = np.array([x.mean(axis=0) for x, _ in devices], dtype=np.float64)
        sizes = np.array([len(x) for x, _ in devices])
        # All coordinates of device k share the mean B_k: across coordinates only sampling
        # noise remains, across devices the spread is beta.
        noise = math.sqrt(np.mean(SIGMA.mean() / sizes))
        within = float(np.sqrt(((means - means.mean(axis=1, keepdims=True)) ** 2).mean()))
        assert within < 1.5 * noise, name
        across = float(means.mean(axis=1).std())
        assert across == pytest.approx(beta, abs=max(0.09 * beta, 3 * noise)), name


# --- properties -----------------------------------------------------------------------------


def test_device_data_independent_of_generation_order_and_object() -> None:
    a = fedsim_dataset(1, 1, False, 500, seed=7, max_samples=400)
    order = [5, 499, 0, 123, 5]
    first = {k: a.client_train(k) for k in order}
    b = fedsim_dataset(1, 1, False, 500, seed=7, max_samples=400)
    for k in reversed(order):
        x, y = b.client_train(k)
        np.testing.assert_array_equal(x, first[k][0])
        np.testing.assert_array_equal(y, first[k][1])
    # A device's data does not depend on how many devices the population has either.
    c = fedsim_dataset(1, 1, False, 1000, seed=7, max_samples=400)
    np.testing.assert_array_equal(c.client_train(123)[0], first[123][0])
    other_seed = fedsim_dataset(1, 1, False, 500, seed=8, max_samples=400)
    assert not np.array_equal(other_seed.client_train(5)[1], first[5][1])


def test_train_test_split_is_first_90_percent() -> None:
    ds = fedsim_dataset(0.5, 0.5, False, 300, seed=2)
    sizes = ds.client_sizes()
    for k in [0, 1, 17, 299]:
        x_tr, y_tr = ds.client_train(k)
        x_te, y_te = ds.client_test(k)
        n = len(y_tr) + len(y_te)
        assert n >= 50
        assert len(y_tr) == int(0.9 * n) == sizes[k]
        assert x_tr.shape == (len(y_tr), DIM) and x_te.shape == (len(y_te), DIM)
        assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64


def test_test_set_is_held_out_data_of_eval_devices() -> None:
    ds = fedsim_dataset(1, 1, False, 400, seed=4, eval_clients=25)
    ids = ds.eval_client_ids()
    assert len(ids) == 25 and len(np.unique(ids)) == 25
    assert np.all(np.diff(ids) > 0) and ids.min() >= 0 and ids.max() < 400
    x, y = ds.test_set()
    parts = [ds.client_test(int(k)) for k in ids]
    np.testing.assert_array_equal(x, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(y, np.concatenate([p[1] for p in parts]))
    sizes = ds.client_sizes()[ids]
    totals = np.array([len(p[1]) for p in parts]) + sizes
    assert len(y) == int((totals - (0.9 * totals).astype(int)).sum())
    # More eval devices than devices: all of them.
    small = fedsim_dataset(1, 1, False, 10, seed=4, eval_clients=25)
    np.testing.assert_array_equal(small.eval_client_ids(), np.arange(10))
