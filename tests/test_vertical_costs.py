"""The vertical cost model and AUC: numbers that follow from the formulas."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.config import Dist
from fedsim.options import build
from fedsim.vertical import costs, psi
from fedsim.vertical.config import VerticalConfig
from fedsim.vertical.records import auc

PARTIES = [
    {"name": "bank", "features": 2, "role": "active", "bandwidth": 1e6},
    {"name": "shop", "features": 3, "speed": {"dist": "uniform", "low": 1e3, "high": 2e3}},
]


def _ledger(bandwidth: float = 1e6) -> costs.Ledger:
    parties = [dict(p) for p in PARTIES]
    parties[1]["bandwidth"] = bandwidth
    cfg = build(VerticalConfig, {"parties": parties}, "vertical")
    return costs.Ledger.of(costs.profiles(cfg.parties, seed=4), cfg.mulmod_s)


def test_auc_equals_the_share_of_correctly_ordered_pairs_with_ties_half():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.3
    score = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
    pos, neg = score[y], score[~y]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc(y, score) == pytest.approx(pairs, abs=1e-12)
    assert auc(y, y.astype(float)) == 1.0 and np.isnan(auc(np.ones(3), np.arange(3)))


def test_party_profiles_are_keyed_draws_within_their_distributions():
    a, b = _ledger().parties["shop"], _ledger().parties["shop"]
    assert a == b and 1e3 <= a.speed <= 2e3
    assert costs.draw(Dist(value=5.0), np.random.default_rng(0)) == 5.0


def test_split_step_bytes_and_time_follow_the_link_and_speeds():
    ledger = _ledger(bandwidth=5e5)
    t = costs.splitnn_step_s(ledger, ["bank", "shop"], batch=100, emb=4, train=True)
    up, down = ledger.take()
    assert up == {"bank": 1600, "shop": 1600} and down == {"bank": 1600, "shop": 1600}
    shop, bank = ledger.parties["shop"].speed, ledger.parties["bank"].speed
    link = 1600 / 5e5  # the slower party's bandwidth sets the link
    expected = max(50 / bank, 50 / shop + link) + 100 / bank + max(50 / bank, link + 50 / shop)
    assert t == pytest.approx(expected, rel=1e-12)


def test_hetero_lr_step_counts_ciphertexts_of_twice_the_key_length():
    ledger = _ledger()
    costs.hetero_lr_step_s(ledger, ["bank", "shop"], [2, 3], batch=10, key_bits=1024, train=True)
    up, down = ledger.take()
    # shop: 10 partial logits (8 B) and 3 masked ciphertexts up; 10 ciphertexts and 3
    # decrypted masked values down.
    assert up["shop"] == 10 * 8 + 3 * 256 and down["shop"] == 10 * 256 + 3 * 128
    slow = ledger.crypto_s("shop", costs.modexp_mulmods(1024, 2048))
    assert slow == pytest.approx(1024 * 1.4e-6 * 1e4 / ledger.parties["shop"].speed)


def test_psi_time_grows_as_bandwidth_falls_and_counts_every_message():
    ids_a, ids_b = [str(k) for k in range(30)], [str(k) for k in range(10, 50)]
    _, transcript = psi.intersect(("bank", ids_a), [("shop", ids_b)])
    sizes = {"bank": 30, "shop": 40}
    times = []
    for bw in (1e6, 1e4):
        ledger = _ledger(bw)
        times.append(costs.psi_time(ledger, transcript.messages, sizes, "bank"))
        up, _ = ledger.take()
        assert sum(up.values()) == sum(m.nbytes for m in transcript.messages)
    # The messages go one after another: at least their bytes over the slow link.
    assert times[1] > (30 + 40 + 30) * 256 / 1e4 > times[0]
