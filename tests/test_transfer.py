"""Federated transfer learning: gradients against finite differences, the run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsim import cli
from fedsim.options import build
from fedsim.runner import run
from fedsim.vertical import costs
from fedsim.vertical.ftl import FTL, TargetAlone, representation_gradients
from fedsim.vertical.transfer_config import TransferConfig
from fedsim.vertical.transfer_data import generate


def _numeric(f, arrays: list[np.ndarray], eps: float = 1e-6) -> list[np.ndarray]:
    """Central finite differences of ``f()`` with respect to every entry of ``arrays``."""
    out = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            hi = f()
            a[i] = old - eps
            lo = f()
            a[i] = old
            g[i] = (hi - lo) / (2 * eps)
        out.append(g)
    return out


def test_representation_gradients_crossing_the_parties_match_finite_differences():
    rng = np.random.default_rng(3)
    u_all_a, u_b = rng.normal(size=(9, 3)), rng.normal(size=(4, 3))
    y = np.where(rng.random(9) < 0.5, -1.0, 1.0)
    batch = np.array([7, 2, 5, 0])  # the batch's overlap samples among A's nine

    def loss() -> float:
        return representation_gradients(u_all_a, y, batch, u_b, 0.7)[0]

    _, d_ua, d_ub, phi = representation_gradients(u_all_a, y, batch, u_b, 0.7)
    num_a, num_b = _numeric(loss, [u_all_a, u_b])
    # dL/du^A reaches every A sample through Phi_A, not only the batch's.
    assert np.abs(d_ua[[1, 3, 4, 6, 8]]).min() > 0
    np.testing.assert_allclose(d_ua, num_a, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d_ub, num_b, rtol=1e-6, atol=1e-9)
    phi_a = (y[:, None] * u_all_a).mean(0)
    np.testing.assert_allclose(phi, u_b @ phi_a)
    direct = np.mean(np.log1p(np.exp(-y[batch] * phi))) + 0.7 * np.mean(
        np.sum((u_all_a[batch] - u_b) ** 2, 1)
    )
    assert loss() == pytest.approx(direct, rel=1e-12)


def test_both_encoders_gradients_with_penalty_match_finite_differences():
    rng = np.random.default_rng(5)
    model = FTL((4, 3), 5, 2, 0.01, 0.3, 0.8, np.random.default_rng(1))
    x_a, x_b = rng.normal(size=(7, 4)), rng.normal(size=(3, 3))
    y = np.where(rng.random(7) < 0.5, -1.0, 1.0)
    batch = np.array([6, 1, 3])
    for p in model.nets:  # biases away from zero so that they matter
        p["b1"] += rng.normal(size=p["b1"].shape)
        p["b2"] += rng.normal(size=p["b2"].shape)
    _, grads = model.gradients(x_a, y, batch, x_b)
    for net, g in zip(model.nets, grads, strict=True):
        keys = list(net)
        nums = _numeric(lambda: model.gradients(x_a, y, batch, x_b)[0], [net[k] for k in keys])
        for k, num in zip(keys, nums, strict=True):
            np.testing.assert_allclose(g[k], num, rtol=1e-5, atol=1e-8, err_msg=k)


def test_target_alone_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    model = TargetAlone(3, 4, 2, 0.01, 0.2, np.random.default_rng(0))
    x, y = rng.normal(size=(6, 3)), np.where(rng.random(6) < 0.5, -1.0, 1.0)
    _, grads = model.gradients(x, y)
    for params, g in zip((model.net, model.head), grads, strict=True):
        keys = list(params)
        nums = _numeric(lambda: model.gradients(x, y)[0], [params[k] for k in keys])
        for k, num in zip(keys, nums, strict=True):
            np.testing.assert_allclose(g[k], num, rtol=1e-5, atol=1e-8, err_msg=k)


def test_generated_parties_share_exactly_the_overlap_with_the_same_labels():
    cfg = build(TransferConfig, {"source_only": 50, "overlap": 20, "target_only": 30}, "t")
    a, b = generate(cfg, seed=4)
    assert a.x.shape == (70, 20) and b.x.shape == (50, 10)
    shared, ia, ib = np.intersect1d(a.ids, b.ids, return_indices=True)
    assert len(shared) == 20
    np.testing.assert_array_equal(a.y[ia], b.y[ib])
    assert set(np.unique(a.y)) == {-1.0, 1.0}
    again = generate(cfg, seed=4)[1]
    np.testing.assert_array_equal(again.x, b.x)
    assert not np.array_equal(generate(cfg, seed=5)[1].x, b.x)


def test_ftl_step_time_follows_from_the_profiles():
    cfg = build(TransferConfig, {"source": {"speed": 1e4, "bandwidth": 1e6},
                                 "target": {"speed": 2e3, "bandwidth": 5e5}}, "t")  # fmt: skip
    ledger = costs.Ledger.of(costs.profiles(cfg.parties, seed=0), cfg.mulmod_s)
    t = costs.ftl_step_s(ledger, ["source", "target"], 1000, 10, 8, train=True)
    # max(B forward 10/2e3/2 + 320 B / 5e5, A forward 1000/1e4/2) + 320 B back + A backward.
    assert t == pytest.approx(0.05 + 320 / 5e5 + 0.05)
    assert ledger.up == {"source": 320, "target": 320}
    s = costs.ftl_step_s(ledger, ["source", "target"], 1000, 100, 8, train=False)
    assert s == pytest.approx(max(0.05 + 32 / 5e5, 100 / 2e3 / 2))


SMALL = {"source_only": "1500", "overlap": "40", "target_only": "600", "epochs": "100",
         "batch_size": "20"}  # fmt: skip


def _write(tmp_path: Path, transfer: str = "") -> Path:
    """A small transfer config; ``transfer``: lines ``key = value`` replacing or adding keys."""
    keys = dict(SMALL)
    for line in filter(None, transfer.splitlines()):
        key, value = line.split(" = ", 1)
        keys[key] = value
    body = "".join(f"{k} = {v}\n" for k, v in keys.items())
    path = tmp_path / "ftl.toml"
    path.write_text(f'[experiment]\nname = "t"\nseed = 0\nkind = "transfer"\n[transfer]\n{body}')
    return path


def test_run_through_the_cli_records_bytes_per_exchange_and_beats_the_baseline(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", str(_write(tmp_path)), "--out", str(out), "-q"]) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["round"]) == list(range(101))
    # Round 0 is the PSI: 1540 source and 640 target IDs, 256 bytes each blinded ID.
    assert rounds["bytes_source_up"][0] == 1540 * 256 + 40 * 4
    assert rounds["bytes_target_up"][0] == (640 + 1540) * 256  # its own, and A's re-blinded
    # An epoch: u^B of 40 samples up, their gradients and Phi_A down (8 float32 each).
    assert (rounds["bytes_target_up"][1:] == 40 * 8 * 4).all()
    assert (rounds["bytes_source_up"][1:] == 40 * 8 * 4 + 8 * 4).all()
    assert (rounds["bytes_up"] == rounds["bytes_target_up"]).all()
    assert rounds["sim_time_s"].is_monotonic_increasing
    s = json.loads((out / "summary.json").read_text())
    assert s["overlap"] == 40 and s["test_samples"] == 600 and s["kind"] == "transfer"
    assert s["test_accuracy"] == pytest.approx(rounds["test_accuracy"].iloc[-1])
    assert 0.5 < s["overlap_only_accuracy"] < 1.0
    assert s["test_accuracy"] > s["overlap_only_accuracy"] + 0.03


def test_ftl_beats_the_overlap_only_baseline_over_seeds(tmp_path):
    path = _write(tmp_path, "psi = false")
    pairs = np.array([
        [run(path, overrides=[f"experiment.seed={seed}"]).summary[k]
         for k in ("test_accuracy", "overlap_only_accuracy")]
        for seed in range(5)
    ])  # fmt: skip
    gain = pairs[:, 0] - pairs[:, 1]
    assert gain.mean() > 0.04 and (gain > 0).sum() >= 4, pairs


def test_same_seed_gives_identical_records(tmp_path):
    path = _write(tmp_path, "epochs = 5\npsi = false")
    for name in ("a", "b"):
        assert cli.main(["run", str(path), "--out", str(tmp_path / name), "-q"]) == 0
    a, b = (pd.read_csv(tmp_path / n / "rounds.csv").drop(columns="wall_time_s") for n in "ab")
    pd.testing.assert_frame_equal(a, b)
    assert a["bytes_up"][0] == 0  # known IDs: no alignment traffic


@pytest.mark.parametrize(
    ("transfer", "expected"),
    [
        ("overlap = 1", "transfer.overlap: must be >= 2"),
        ("gamma = -1.0", "transfer.gamma: must be >= 0"),
        ("label_flip = 0.5", "transfer.label_flip: must be in [0, 0.5)"),
        ("epochs = 2.5", "transfer.epochs: must be"),
        ("nope = 1", "transfer.nope: unknown key"),
        ('target = { name = "source" }', "transfer.target.name: both parties are named"),
        ("source = { features = 0 }", "transfer.source.features: must be > 0"),
        ('target = { speed = { dist = "tiers", values = [1.0] } }', "transfer.target.speed"),
    ],
)
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, transfer, expected):
    out = tmp_path / "out"
    assert cli.main(["run", str(_write(tmp_path, transfer)), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fedsim: error: {expected}"), err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def _to_csv(path: Path, data, labels: bool = True) -> None:
    frame = pd.DataFrame(data.x, columns=[f"f{j}" for j in range(data.x.shape[1])])
    frame.insert(0, "id", data.ids)
    if labels:
        frame["label"] = (data.y > 0).astype(int)
    frame.to_csv(path, index=False)


def test_parties_read_from_files_give_the_generated_run_exactly(tmp_path):
    path = _write(tmp_path, "epochs = 3\npsi = false")
    cfg = build(TransferConfig, {k: int(v) for k, v in SMALL.items()}, "transfer")
    source, target = generate(cfg, seed=0)
    _to_csv(tmp_path / "a.csv", source)
    _to_csv(tmp_path / "b.csv", target)
    (tmp_path / "f").mkdir()  # file paths are relative to the config's folder
    files = _write(tmp_path / "f", 'epochs = 3\npsi = false\nsource = { file = "../a.csv" }\n'
                   'target = { file = "../b.csv" }')  # fmt: skip
    generated = run(path).rounds.drop(columns="wall_time_s")
    read = run(files).rounds.drop(columns="wall_time_s")
    pd.testing.assert_frame_equal(generated, read)


@pytest.mark.parametrize(
    ("transfer", "labels", "expected"),
    [
        ('source = { file = "a.csv" }', True, "transfer.target.file: needed too"),
        ('source = { file = "a.csv" }\ntarget = { file = "nope.csv" }', True,
         "transfer.target.file: "),
        ('source = { file = "b.csv" }\ntarget = { file = "a.csv" }', False,
         "transfer.source.file: "),
        ('source = { file = "a.csv" }\ntarget = { file = "a.csv" }', True,
         "transfer.target.file: shares 1540 ids with the source and has 0 of its own"),
    ],
)  # fmt: skip
def test_unusable_party_files_exit_2_naming_the_key(tmp_path, capsys, transfer, labels, expected):
    cfg = build(TransferConfig, {k: int(v) for k, v in SMALL.items()}, "transfer")
    source, target = generate(cfg, seed=0)
    _to_csv(tmp_path / "a.csv", source)
    _to_csv(tmp_path / "b.csv", target, labels=labels)
    out = tmp_path / "out"
    assert cli.main(["run", str(_write(tmp_path, transfer)), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fedsim: error: {expected}"), err
    assert len(err.splitlines()) == 1 and not out.exists()
    if not labels:
        assert err.endswith("missing column 'label'")
