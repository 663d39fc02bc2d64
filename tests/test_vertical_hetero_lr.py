"""Hetero LR under Paillier: the decrypted update is the plaintext update."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.vertical import hetero_lr
from fedsim.vertical.hetero_lr import HeteroLR

pytest.importorskip("phe")


@pytest.fixture(scope="module")
def keys():
    return hetero_lr.keypair(512)  # small for speed; runs default to 1024


def test_secure_gradient_equals_plaintext_gradient(keys):
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.5, 50)
    x = rng.normal(0, 1.5, (50, 4))
    got = hetero_lr.secure_gradient(keys, d, x)
    np.testing.assert_allclose(got, x.T @ d, rtol=0, atol=50 * 1e-9)


def test_masked_values_reveal_nothing_until_unmasked(keys):
    public_key, private_key = keys
    d, x = np.array([0.25, -0.5, 0.125]), np.array([[1.0], [2.0], [-4.0]])
    masked, masks = hetero_lr.masked_gradient(public_key, hetero_lr.encrypt(public_key, d), x)
    (value,) = hetero_lr.decrypt_masked(private_key, masked)
    exact = hetero_lr.unmask(public_key, [value], masks)
    assert exact[0] == pytest.approx(x[:, 0] @ d, abs=1e-12)  # -1.25
    # What the active party decrypts is the masked encoding, far from the gradient's.
    assert abs(value[0] - round(-1.25 / 16.0 ** value[1])) > 2**64


def test_encrypted_update_equals_plaintext_update(keys):
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(32, 3)), rng.normal(size=(32, 2)), rng.normal(size=(32, 4))]
    y = (rng.random(32) < 0.3).astype(float)
    secure = HeteroLR([3, 2, 4], lr=0.2, l2=0.01, keys=keys)
    plain = HeteroLR([3, 2, 4], lr=0.2, l2=0.01, keys=None)
    for _ in range(3):
        ls, lp = secure.step(xs, y), plain.step(xs, y)
        assert ls == pytest.approx(lp, abs=1e-9)
        for ws, wp in zip(secure.w, plain.w, strict=True):
            np.testing.assert_allclose(ws, wp, rtol=0, atol=1e-9)
        assert secure.b == pytest.approx(plain.b, abs=1e-9)
    assert np.abs(plain.w[2]).sum() > 0.01  # the passive weights did move
