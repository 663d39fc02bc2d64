"""The algorithm contract: server optimisers, SCAFFOLD, FedNova, plug-ins, privacy composing."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL, small_config, write

import fedsim
from fedsim import checkpoint
from fedsim import config as config_mod
from fedsim.models.softmax import SoftmaxRegression
from fedsim.registry import STRATEGIES
from fedsim.runtime.client_state import ClientStateStore
from fedsim.strategies import Aggregate, ClientBatch, RoundContext, ServerAdaptive, ServerSGD
from fedsim.strategies.fednova import FedNova, step_weight_norm
from fedsim.strategies.local_sgd import local_sgd, local_steps
from fedsim.strategies.scaffold import CONTROL, Scaffold, ScaffoldClient

REPO = Path(__file__).resolve().parents[1]
NEW = ["fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold", "fednova"]


def _agg(delta, count=3, model=None, **payloads):
    return Aggregate(np.asarray(delta, dtype=np.float64), count, {}, payloads, model)


# --- server optimisers: one step by hand ---------------------------------------------------


def test_server_sgd_with_momentum_matches_hand_computation():
    opt = ServerSGD(learning_rate=0.5, momentum=0.9)
    w = np.array([1.0, -2.0], dtype=np.float32)
    d1, d2 = np.array([0.2, 0.4]), np.array([-0.1, 0.3])
    w1 = opt.step(w, _agg(d1))
    np.testing.assert_allclose(w1, w + 0.5 * d1, rtol=1e-7)
    w2 = opt.step(w1, _agg(d2))
    v2 = 0.9 * d1 + d2
    np.testing.assert_allclose(w2, w1 + 0.5 * v2, rtol=1e-7)


def test_fedavg_server_step_returns_the_exact_mean_model():
    w = np.array([0.1, 0.2], dtype=np.float32)
    mean = np.array([0.30000001, -0.7], dtype=np.float64)
    out = ServerSGD().step(w, _agg(mean - w, model=mean))
    assert np.array_equal(out, mean.astype(np.float32))


@pytest.mark.parametrize("rule", ["adam", "yogi", "adagrad"])
def test_adaptive_server_step_matches_reddi_et_al_by_hand(rule):
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    opt = ServerAdaptive(rule, eta, b1, b2, tau)
    w = np.array([0.5, -0.5, 0.0], dtype=np.float32)
    d = np.array([0.2, -0.05, 0.0])
    out = opt.step(w, _agg(d))
    m = (1 - b1) * d
    v0 = np.full(3, tau**2)
    v = {
        "adam": b2 * v0 + (1 - b2) * d**2,
        "yogi": v0 - (1 - b2) * d**2 * np.sign(v0 - d**2),
        "adagrad": v0 + d**2,
    }[rule]
    expected = w + eta * m / (np.sqrt(v) + tau)
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6)
    # A coordinate that never moves stays put; the moments carry over to the next step.
    assert out[2] == 0.0
    state = opt.state_dict()
    again = ServerAdaptive(rule, eta, b1, b2, tau)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.step(out, _agg(d)), opt.step(out, _agg(d)))


def test_adaptive_rules_differ_on_the_same_updates():
    w = np.zeros(2, dtype=np.float32)
    outs = {}
    for rule in ServerAdaptive.RULES:
        opt = ServerAdaptive(rule, 0.1)
        x = w
        for d in ([0.3, -0.1], [0.1, 0.2], [-0.2, 0.05]):
            x = opt.step(x, _agg(d))
        outs[rule] = x
    assert not np.allclose(outs["adam"], outs["yogi"], atol=1e-6)
    assert not np.allclose(outs["adam"], outs["adagrad"], atol=1e-6)


# --- SCAFFOLD -------------------------------------------------------------------------------


def _tiny_problem(c=2, n=12, seed=0):
    rng = np.random.default_rng(seed)
    model = SoftmaxRegression((4,), 3)
    x = rng.normal(size=(c, n, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=(c, n)).astype(np.int64)
    w0 = (0.1 * rng.normal(size=model.num_parameters)).astype(np.float32)
    return model, x, y, w0


def test_scaffold_client_runs_corrected_sgd_and_updates_its_control_variate_option_ii():
    model, x, y, w0 = _tiny_problem()
    rng = np.random.default_rng(1)
    c = (0.05 * rng.normal(size=model.num_parameters)).astype(np.float32)
    c_i = (0.05 * rng.normal(size=(2, model.num_parameters))).astype(np.float32)
    lr, bs, epochs = 0.1, 5, 2
    ctx = RoundContext(1, 0, lr, bs, False, {CONTROL: c})
    out = ScaffoldClient()(ClientBatch(model, w0, x, y, epochs, None, ctx, {CONTROL: c_i}))
    # By hand: K = 2 epochs x ceil(12 / 5) = 6 steps of y <- y - lr (g(y) - c_i + c).
    k = local_steps(12, epochs, bs)
    assert k == 6
    for j in range(2):
        yj = w0.copy()
        for _ in range(epochs):
            for s in range(0, 12, bs):
                _, g = model.loss_and_grad(
                    yj[None], x[j : j + 1, s : s + bs], y[j : j + 1, s : s + bs]
                )
                yj = yj - np.float32(lr) * (g[0] + (c - c_i[j]))
        np.testing.assert_allclose(out.w[j], yj, rtol=1e-5, atol=1e-6)
        c_new = c_i[j] - c + (w0 - yj) / (k * lr)
        np.testing.assert_allclose(out.state[CONTROL][j], c_new, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out.payloads[CONTROL][j], c_new - c_i[j], rtol=1e-4, atol=1e-6)


def test_scaffold_server_adds_the_control_deltas_over_the_population():
    s = Scaffold(server_learning_rate=1.0)
    s.setup(num_parameters=3, num_clients=10)
    w = np.zeros(3, dtype=np.float32)
    mean_dc = np.array([1.0, -2.0, 0.5])
    s.server_update(w, _agg([0.1, 0.1, 0.1], count=4, control=mean_dc))
    # c += (1/N) sum over the 4 reporting clients = (4/10) * their mean
    np.testing.assert_allclose(s.c, 0.4 * mean_dc, rtol=1e-6)


def test_scaffold_keeps_c_the_mean_of_every_clients_control_variate(tmp_path):
    cfg = small_config("strategy.name='scaffold'", "server.rounds=4")
    out = tmp_path / "run"
    result = fedsim.run(cfg, out_dir=out)
    state = checkpoint.load(out).state["server"]
    rows = state["client_state"][CONTROL]["rows"]
    c = state["strategy"]["c"]
    assert len(rows) > 20, "clients of several rounds hold a control variate"
    n = cfg.population.num_clients
    np.testing.assert_allclose(c, rows.astype(np.float64).sum(axis=0) / n, rtol=1e-4, atol=1e-6)
    assert np.abs(c).max() > 1e-4
    assert np.isfinite(result.rounds["test_accuracy"]).all()


def test_scaffold_uploads_and_downloads_twice_the_model():
    base = fedsim.run(small_config("server.rounds=1"))
    sc = fedsim.run(small_config("server.rounds=1", "strategy.name='scaffold'"))
    for col in ("bytes_up", "bytes_down"):
        assert sc.rounds[col].iloc[0] == 2 * base.rounds[col].iloc[0]


# --- FedNova --------------------------------------------------------------------------------


def test_fednova_server_step_by_hand_for_two_clients_with_unequal_steps():
    # Client a: 600 samples, tau 60, update da; client b: 200 samples, tau 20, update db.
    da, db = np.array([0.6, -0.3]), np.array([0.1, 0.4])
    pa, pb = 0.75, 0.25
    d = pa * da / 60 + pb * db / 20  # what the aggregate's delta is: mean of normalised updates
    tau_eff = pa * 60 + pb * 20
    strategy = FedNova()
    w = np.array([1.0, 1.0], dtype=np.float32)
    out = strategy.server_update(w, _agg(d, count=2, steps=np.array([tau_eff])))
    np.testing.assert_allclose(out, w + tau_eff * d, rtol=1e-6)
    # FedAvg would have moved by pa*da + pb*db: FedNova weighs the short client's direction up.
    assert not np.allclose(out, w + pa * da + pb * db, atol=1e-3)


def test_fednova_step_weights_with_a_proximal_term():
    assert step_weight_norm(10, 0.1, 0.0) == 10.0
    q = 1 - 0.1 * 0.5
    assert step_weight_norm(10, 0.1, 0.5) == pytest.approx(sum(q**j for j in range(10)))


def test_fednova_equals_fedavg_when_every_client_runs_the_same_steps():
    # Equal data sizes and no stragglers: tau_eff * mean(d_i) = mean(delta_i).
    raw = tomllib.loads(SMALL)
    raw["data"] = {"dataset": "softmax_bench", "samples_per_client": 30, "num_features": 8}
    raw["server"].update(deadline_s=math.inf, over_selection=1.0)
    raw["population"]["dropout_rate"] = 0.0
    b = fedsim.run(config_mod.from_dict(raw))
    raw["strategy"] = {"name": "fednova"}
    a = fedsim.run(config_mod.from_dict(raw))
    assert (b.clients["outcome"] == "completed").all()
    np.testing.assert_allclose(a.model, b.model, rtol=1e-4, atol=1e-6)


def test_fednova_differs_from_fedavg_with_partial_stragglers():
    a = fedsim.run(small_config("strategy.name='fednova'"))
    b = fedsim.run(small_config())
    assert (a.clients["outcome"] == "straggler").any()
    assert not np.allclose(a.model, b.model, atol=1e-4)


# --- every new strategy end to end, on both backends ------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_strategy_runs_end_to_end_identically_on_local_and_two_ray_workers(ray_session, name):
    local = fedsim.run(small_config(f"strategy.name='{name}'"))
    ray2 = fedsim.run(
        small_config(f"strategy.name='{name}'", "runtime.backend='ray'", "runtime.workers=2")
    )
    assert np.array_equal(local.model, ray2.model)
    cols = ["test_accuracy", "train_loss", "bytes_up"]
    assert local.rounds[cols].equals(ray2.rounds[cols])
    fedavg = fedsim.run(small_config())
    assert not np.array_equal(local.model, fedavg.model), "the strategy changes the model"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scaffold", "fedadam"])
def test_stateful_strategy_identical_for_one_and_two_workers(ray_session, name):
    one = fedsim.run(
        small_config(f"strategy.name='{name}'", "runtime.backend='ray'", "runtime.workers=1")
    )
    two = fedsim.run(
        small_config(f"strategy.name='{name}'", "runtime.backend='ray'", "runtime.workers=2")
    )
    assert np.array_equal(one.model, two.model)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scaffold", "fedadam"])
def test_stateful_strategy_resumed_after_sigkill_is_identical(tmp_path, name):
    from helpers import spawn_run
    from test_reliability import LONG, _assert_same_run, _kill_at, _reference

    strat = f"strategy.name='{name}'"
    path = write(tmp_path / "small.toml", SMALL)
    reference = _reference(tmp_path, *LONG, strat)
    out = tmp_path / "killed"
    sets = [a for o in (*LONG, strat) for a in ("--set", o)]
    _kill_at(spawn_run(str(path), "--out", str(out), *sets), out / "rounds.csv", 6)
    assert checkpoint.load(out).round < 40
    fedsim.resume(out)
    _assert_same_run(reference, out)


def test_unknown_strategy_option_is_a_one_line_config_error(tmp_path):
    path = write(tmp_path / "e.toml", SMALL + "\n[strategy]\nname = 'fedadam'\nmomentum = 0.9\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(path), "-q", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "strategy.momentum" in proc.stderr
    assert not (tmp_path / "o").exists()


# --- plug-ins from outside the package ------------------------------------------------------

PLUGIN = '''
from dataclasses import dataclass

import numpy as np

from fedsim.strategies import Strategy, ServerSGD


class HalfStep(Strategy):
    """FedAvg with the server moving a given fraction of the way."""

    @dataclass(frozen=True)
    class Options:
        fraction: float = 0.5

    def __init__(self, fraction: float) -> None:
        super().__init__(optimizer=ServerSGD(learning_rate=fraction))
'''


@pytest.mark.slow
def test_strategy_from_a_module_outside_the_package_changes_the_results(tmp_path):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "halfstep_strategy.py").write_text(PLUGIN)
    path = write(tmp_path / "e.toml", SMALL)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "plug")}
    outs = {}
    for tag, sets in {
        "plugin": ["strategy.name='halfstep_strategy:HalfStep'", "strategy.fraction=0.25"],
        "fedavg": [],
    }.items():
        out = tmp_path / tag
        args = [a for s in sets for a in ("--set", s)]
        proc = subprocess.run(
            [sys.executable, "-m", "fedsim.cli", "run", str(path), "-q", "--out", str(out), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        outs[tag] = checkpoint.load(out).state["server"]["w"]
    assert not np.allclose(outs["plugin"], outs["fedavg"], atol=1e-5)
    saved = (tmp_path / "plugin" / "config.toml").read_text()
    assert 'name = "halfstep_strategy:HalfStep"' in saved and "fraction = 0.25" in saved


def test_a_plugin_that_cannot_be_imported_is_a_one_line_error(tmp_path):
    path = write(tmp_path / "e.toml", SMALL + "\n[strategy]\nname = 'no_such_module:Thing'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(path), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "error: strategy.name: strategy plug-in 'no_such_module:Thing'" in proc.stderr
    assert "\n" not in proc.stderr.strip()


def test_python_api_takes_a_strategy_object():
    from fedsim.strategies import Strategy

    half = fedsim.run(small_config(), strategy=Strategy(optimizer=ServerSGD(0.5)))
    full = fedsim.run(small_config())
    assert not np.allclose(half.model, full.model, atol=1e-5)


def test_builtin_strategies_register_without_an_import_list_in_the_registry():
    assert set(NEW) | {"fedavg", "fedprox"} <= set(STRATEGIES.names())
    source = (REPO / "fedsim" / "registry.py").read_text()
    assert "import fedsim.strategies" not in source and "import fedsim.data" not in source


# --- privacy composes with the strategy ------------------------------------------------------

DP = (
    "privacy.enabled=true",
    "privacy.noise_multiplier=0.5",
    "privacy.clip_norm=1.0",
    "server.min_completed=1",
    "server.over_selection=1.0",
)


def test_dp_with_fedadam_runs_fedadam_on_the_noised_mean():
    adam = fedsim.run(small_config(*DP, "strategy.name='fedadam'"))
    avg = fedsim.run(small_config(*DP))
    assert np.isfinite(adam.rounds["epsilon"]).all()
    np.testing.assert_array_equal(adam.rounds["epsilon"], avg.rounds["epsilon"])
    assert not np.allclose(adam.model, avg.model, atol=1e-5)


def test_dp_with_a_strategy_that_uploads_more_than_the_update_is_refused():
    from fedsim.options import ConfigError
    from fedsim.runner import prepare

    with pytest.raises(ConfigError, match=r"^strategy.name: 'scaffold' uploads control"):
        prepare(small_config(*DP, "strategy.name='scaffold'"))


# --- the client-state store ----------------------------------------------------------------


def test_client_state_store_keeps_rows_of_written_clients_only():
    s = ClientStateStore(3)
    assert np.array_equal(s.get(np.array([5, 1])), np.zeros((2, 3), np.float32))
    s.put(np.array([9, 2]), np.array([[1, 1, 1], [2, 2, 2]], np.float32))
    s.put(np.array([2, 7]), np.array([[3, 3, 3], [4, 4, 4]], np.float32))
    got = s.get(np.array([7, 2, 9, 1000]))
    assert got.tolist() == [[4] * 3, [3] * 3, [1] * 3, [0] * 3]
    assert len(s) == 3
    state = s.state_dict()
    assert state["ids"].tolist() == [2, 7, 9]
    again = ClientStateStore(3)
    again.load_state_dict(state)
    assert np.array_equal(again.get(np.array([9, 7, 2])), s.get(np.array([9, 7, 2])))


def test_client_state_of_a_million_client_population_costs_only_its_written_rows():
    s = ClientStateStore(600)
    ids = np.random.default_rng(0).choice(1_000_000, 100, replace=False)
    s.put(ids, np.ones((100, 600), np.float32))
    assert s.nbytes < 200 * 600 * 4 + 10_000


def test_local_sgd_correction_is_added_to_every_gradient():
    model, x, y, w0 = _tiny_problem(c=1)
    corr = np.full((1, model.num_parameters), 0.5, dtype=np.float32)
    a, _ = local_sgd(model, w0, x, y, epochs=1, batch_size=0, learning_rate=0.1, correction=corr)
    b, _ = local_sgd(model, w0, x, y, epochs=1, batch_size=0, learning_rate=0.1)
    np.testing.assert_allclose(a - b, -0.1 * corr, rtol=1e-5, atol=1e-7)


def test_new_options_are_written_back_to_the_resolved_config(tmp_path):
    cfg = small_config("strategy.name='fedyogi'", "strategy.server_learning_rate=0.03")
    table = cfg.to_dict()["strategy"]
    assert table == {
        "name": "fedyogi",
        "server_learning_rate": 0.03,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 0.001,
    }


# --- the README's example and record schema ----------------------------------------------------


def _load_example():
    import importlib.util

    path = REPO / "docs" / "examples" / "server_momentum.py"
    spec = importlib.util.spec_from_file_location("server_momentum", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def test_readme_example_strategy_equals_the_builtin_fedavgm_bit_for_bit():
    module, path = _load_example()
    assert path.read_text() in (REPO / "README.md").read_text(), "README shows the file as is"
    mine = fedsim.run(small_config(), strategy=module.ServerMomentum(momentum=0.5))
    builtin = fedsim.run(small_config("strategy.name='fedavgm'", "strategy.momentum=0.5"))
    assert np.array_equal(mine.model, builtin.model)
    assert not np.array_equal(mine.model, fedsim.run(small_config()).model)


def test_readme_tables_of_record_columns_are_the_schema():
    from fedsim.metrics import CLIENT_SCHEMA, ROUND_SCHEMA, schema_table

    readme = (REPO / "README.md").read_text()
    assert schema_table(ROUND_SCHEMA) in readme
    assert schema_table(CLIENT_SCHEMA) in readme
    result = fedsim.run(small_config("server.rounds=1"))
    assert list(result.rounds.columns) == [c.name for c in ROUND_SCHEMA]
    optional = ("secure aggregation only", "async only")
    always = [c.name for c in CLIENT_SCHEMA if not c.meaning.startswith(optional)]
    assert list(result.clients.columns) == always


def test_a_run_written_before_columns_were_added_resumes_with_them(tmp_path):
    import pandas as pd

    reference = fedsim.run(small_config("server.rounds=4"), out_dir=tmp_path / "ref")
    out = tmp_path / "old"
    fedsim.run(small_config("server.rounds=2"), out_dir=out)
    # What an older fedsim wrote: rounds.csv without the last two privacy columns.
    rounds = pd.read_csv(out / "rounds.csv").drop(columns=["epsilon", "clip_norm"])
    rounds.to_csv(out / "rounds.csv", index=False, float_format="%.10g")
    ckpt = checkpoint.load(out)
    ckpt.state["records"]["rounds.csv"] = (out / "rounds.csv").stat().st_size
    digest = hashlib.sha256((out / "rounds.csv").read_bytes()).hexdigest()
    ckpt.state["records_sha256"]["rounds.csv"] = digest
    checkpoint.save(out, ckpt.state)
    resumed = fedsim.resume(out, overrides=["server.rounds=4"])
    got = pd.read_csv(out / "rounds.csv")
    assert list(got.columns) == list(reference.rounds.columns)
    keep = ["round", "test_accuracy", "train_loss", "cum_bytes"]
    pd.testing.assert_frame_equal(got[keep], reference.rounds[keep], check_dtype=False)
    np.testing.assert_array_equal(resumed.model, reference.model)
