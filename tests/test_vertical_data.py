"""Vertical data: the credit generator, breast-cancer columns, who holds which rows."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.options import ConfigError, build
from fedsim.vertical import data
from fedsim.vertical.config import VerticalConfig


def _cfg(**kw) -> VerticalConfig:
    parties = kw.pop("parties", [{"name": "a", "features": 5, "role": "active"},
                                 {"name": "b", "features": 6}])  # fmt: skip
    return build(VerticalConfig, {"parties": parties, **kw}, "vertical")


def test_credit_data_is_keyed_by_seed_with_a_plausible_default_rate():
    a, b, c = data.credit(20_000, 0), data.credit(20_000, 0), data.credit(20_000, 1)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.ids, b.ids)
    assert not np.array_equal(a.x, c.x)
    assert a.columns == data.BANK_COLUMNS + data.SHOP_COLUMNS and a.x.shape == (20_000, 11)
    assert 0.14 < a.y.mean() < 0.20
    assert len(set(a.ids)) == 20_000 and all(i.startswith("C") for i in a.ids[:5])
    # Both parties' columns carry signal: each has a column correlated with default.
    corr = [abs(np.corrcoef(a.x[:, j], a.y)[0, 1]) for j in range(11)]
    assert max(corr[:5]) > 0.15 and max(corr[5:]) > 0.15


def test_breast_cancer_columns_split_by_name_then_by_count():
    pytest.importorskip("sklearn")
    table = data.breast_cancer(0)
    assert table.x.shape == (569, 30) and table.y.sum() == 212  # malignant
    names = [c for c in table.columns if c.startswith("mean_")]
    cfg = _cfg(parties=[{"name": "clinic", "features": names, "role": "active"},
                        {"name": "lab", "features": 20}])  # fmt: skip
    clinic, lab = data.assign_columns(cfg, table.columns)
    assert list(clinic) == list(range(10)) and list(lab) == list(range(10, 30))


def test_holdings_share_the_overlap_and_split_the_rest():
    held = data.holdings(_cfg(overlap=0.5), 1000, seed=0)
    shared = set(held[0]) & set(held[1])
    assert len(shared) == 500 and len(held[0]) == len(held[1]) == 750
    assert set(held[0]) | set(held[1]) == set(range(1000))
    with pytest.raises(ConfigError, match="vertical.overlap: 0.01 of 1000 people is 10 shared"):
        data.holdings(_cfg(overlap=0.01), 1000, seed=0)
