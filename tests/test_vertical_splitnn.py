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


def test_split_gradients_equal_autodiff_of_the_centralised_network():
    torch = pytest.importorskip("torch")
    model, xs, y = _model_and_batch()
    loss, grads, top_grads = model.gradients(xs, y)
    # The centralised network on all columns: block-diagonal bottom layers, the same top.
    t = {
        name: [torch.tensor(b[name], requires_grad=True) for b in model.bottoms]
        for name in ("W1", "b1", "W2", "b2")
    }
    top = {k: torch.tensor(v, requires_grad=True) for k, v in model.top.items()}
    x = torch.tensor(np.concatenate(xs, axis=1))
    h = torch.relu(x @ torch.block_diag(*t["W1"]) + torch.cat(t["b1"]))
    z = h @ torch.block_diag(*t["W2"]) + torch.cat(t["b2"])
    logit = (torch.relu(z @ top["W3"] + top["b3"]) @ top["W4"] + top["b4"])[:, 0]
    target = torch.tensor(y)
    central = torch.nn.functional.binary_cross_entropy_with_logits(logit, target)
    central.backward()
    assert loss == pytest.approx(central.item(), rel=1e-12)
    for k, g in enumerate(grads):
        for name in ("W1", "b1", "W2", "b2"):
            np.testing.assert_allclose(g[name], t[name][k].grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, g in top_grads.items():
        np.testing.assert_allclose(g, top[name].grad.numpy(), rtol=1e-10, atol=1e-12)


def test_split_gradient_of_a_passive_bottom_weight_matches_finite_differences():
    model, xs, y = _model_and_batch(1)
    _, grads, _ = model.gradients(xs, y)

    def central_loss() -> float:
        logit = model.logits(xs)
        return float(np.mean(np.logaddexp(0.0, logit) - y * logit))

    eps = 1e-6
    for k, name, idx in ((1, "W1", (2, 3)), (2, "b1", (4,)), (1, "W2", (0, 1)), (0, "b2", (2,))):
        p = model.bottoms[k][name]
        p[idx] += eps
        up = central_loss()
        p[idx] -= 2 * eps
        down = central_loss()
        p[idx] += eps
        assert grads[k][name][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


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
