"""Split NN: the parties' gradients are the centralised network's gradients."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.vertical.splitnn import SplitNN, top_logits


def _model_and_batch(seed: int = 0) -> tuple[SplitNN, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    model = SplitNN([3, 5, 2], hidden=6, emb=3, top_hidden=4, lr=0.01, l2=0.0, rng=rng)
    xs = [rng.normal(size=(17, d)) for d in (3, 5, 2)]
    y = (rng.random(17) < 0.4).astype(float)
    return model, xs, y


def _centralised_loss(model: SplitNN, xs: list[np.ndarray], y: np.ndarray) -> float:
    """One network on all columns: block-diagonal bottom layers, then the same top."""

    def block_diag(blocks: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)))
        r = c = 0
        for b in blocks:
            out[r : r + b.shape[0], c : c + b.shape[1]] = b
            r, c = r + b.shape[0], c + b.shape[1]
        return out

    x = np.concatenate(xs, axis=1)
    w1 = block_diag([b["W1"] for b in model.bottoms])
    w2 = block_diag([b["W2"] for b in model.bottoms])
    b1 = np.concatenate([b["b1"] for b in model.bottoms])
    b2 = np.concatenate([b["b2"] for b in model.bottoms])
    z = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    t = model.top
    logit = (np.maximum(z @ t["W3"] + t["b3"], 0.0) @ t["W4"] + t["b4"])[:, 0]
    return float(np.mean(np.logaddexp(0.0, logit) - y * logit))


def test_every_split_gradient_equals_the_centralised_networks_by_finite_differences():
    model, xs, y = _model_and_batch()
    loss, grads, top_grads = model.gradients(xs, y)
    assert loss == pytest.approx(_centralised_loss(model, xs, y), rel=1e-12)
    eps = 1e-6
    params = [(b, g) for b, g in zip(model.bottoms, grads, strict=True)]
    params.append((model.top, top_grads))
    checked = 0
    for p, g in params:
        for name, value in p.items():
            for idx in np.ndindex(value.shape):
                value[idx] += eps
                up = _centralised_loss(model, xs, y)
                value[idx] -= 2 * eps
                down = _centralised_loss(model, xs, y)
                value[idx] += eps
                assert g[name][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-8)
                checked += 1
    assert checked == model.parameters().size


def test_training_steps_lower_the_loss_and_logits_use_every_party():
    model, xs, y = _model_and_batch(2)
    first = model.step(xs, y)
    for _ in range(200):
        last = model.step(xs, y)
    assert last < 0.5 * first
    before = model.logits(xs)
    changed = [xs[0], xs[1] + 1.0, xs[2]]
    assert not np.allclose(before, model.logits(changed))
    embs = [np.zeros((4, 3))] * 3
    assert top_logits(model.top, embs).shape == (4,)
