"""The scikit-learn tabular datasets and the one_client partition scheme."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim import config as config_mod
from fedsim.data import build_dataset
from fedsim.data.one_client import OneClientOptions, one_client
from fedsim.data.partition import DirichletOptions, dirichlet
from fedsim.data.tabular import TabularOptions, make_breast_cancer, make_diabetes
from fedsim.options import ConfigError


def test_breast_cancer_split_is_stratified_seeded_and_standardised() -> None:
    data = make_breast_cancer(TabularOptions(), num_clients=1, seed=0)
    assert data.x_train.shape == (456, 30) and data.x_test.shape == (113, 30)
    assert data.task == "classification" and data.num_classes == 2
    # 212 malignant and 357 benign: 20% of each is held out.
    assert np.bincount(data.y_test).tolist() == [42, 71]
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-12)
    again = make_breast_cancer(TabularOptions(), num_clients=1, seed=0)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    other = make_breast_cancer(TabularOptions(), num_clients=1, seed=1)
    assert not np.array_equal(other.x_test, data.x_test)


def test_diabetes_has_standardised_float_targets() -> None:
    data = make_diabetes(TabularOptions(test_fraction=0.25), num_clients=1, seed=0)
    assert data.task == "regression" and data.num_classes == 0
    assert data.y_train.dtype == np.float32 and len(data.y_test) == 110
    assert abs(float(data.y_train.mean())) < 1e-5
    assert float(data.y_train.std()) == pytest.approx(1.0, abs=1e-5)


def test_one_client_holds_exactly_that_clients_samples_of_the_inner_partition() -> None:
    labels = np.repeat([0, 1, 2], 40)
    inner = DirichletOptions(alpha=0.3, min_samples=5)
    full = dirichlet(inner, labels, 6, seed=4)
    for k in range(6):
        opts = OneClientOptions("dirichlet", 6, k, {"alpha": 0.3, "min_samples": 5})
        part = one_client(opts, labels, 1, seed=4)
        assert part.num_clients == 1
        np.testing.assert_array_equal(part.client(0), full.client(k))


def _raw(**partition: object) -> dict:
    return {
        "data": {"dataset": "breast_cancer"},
        "partition": {"scheme": "one_client", **partition},
        "population": {"num_clients": 1},
        "server": {"clients_per_round": 1},
    }


def test_one_client_options_are_checked_when_the_config_loads() -> None:
    cfg = config_mod.from_dict(_raw(inner="dirichlet", clients=8, client=3, options={"alpha": 1}))
    assert cfg.to_dict()["partition"]["options"] == {"alpha": 1}
    ds = build_dataset(cfg.data, cfg.partition, 1, seed=0)
    assert ds.num_clients == 1 and ds.client_sizes()[0] > 0
    cases = [
        ({"clients": 4, "client": 4}, r"^partition\.client: must be < clients \(4\)"),
        ({"inner": "nope"}, r"^partition\.inner: unknown partition scheme 'nope'"),
        ({"inner": "dirichlet", "options": {"alpha": -1}}, r"^partition\.options\.alpha: "),
        ({"options": {"bogus": 1}}, r"^partition\.options\.bogus: unknown key"),
    ]
    for partition, message in cases:
        with pytest.raises(ConfigError, match=message):
            config_mod.from_dict(_raw(**partition))
    two = _raw(clients=4, client=1)
    two["population"] = {"num_clients": 2}
    cfg = config_mod.from_dict(two)
    with pytest.raises(ConfigError, match=r"^population\.num_clients: the 'one_client' scheme"):
        build_dataset(cfg.data, cfg.partition, 2, seed=0)
