"""The iterative-process API: the loop in the caller's hands, the numbers of ``fedsim run``."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL

import fedsim
from fedsim import learning
from fedsim.learning import SGD, Adam, State
from fedsim.models.softmax import SoftmaxRegression
from fedsim.options import ConfigError
from fedsim.strategies.local_sgd import local_sgd

ROOT = Path(__file__).resolve().parents[1]
RAW = tomllib.loads(SMALL)
# The SMALL experiment (tiers, dropout, jitter, over-selection, a deadline, partial work),
# evaluated after every round, for five rounds.
CONFIG = SMALL.replace("rounds = 3", "rounds = 5\neval_every = 1")
COHORT = math.ceil(1.2 * 20)


def _builder(path: Path, **changes: object) -> learning.IterativeProcess:
    """The SMALL experiment as a built process: FedAvg, SGD clients, SGD server."""
    raw = tomllib.loads(path.read_text())
    options = {
        "data": fedsim.data.load(path),
        "population": raw["population"],
        "server": {k: v for k, v in raw["server"].items() if k != "rounds"},
        "training": {"local_epochs": 2, "batch_size": 10},
        "seed": raw["experiment"]["seed"],
        **changes,
    }
    return learning.build_weighted_fed_avg(
        "softmax", SGD(learning_rate=0.05), ("sgd", {"learning_rate": 1.0}), **options
    )


def _loop(process: learning.IterativeProcess, rounds: int, state: State | None = None):
    state = state if state is not None else process.initialize()
    metrics = []
    for _ in range(rounds):
        state, m = process.next(state, process.sample_clients(state, COHORT))
        metrics.append(m)
    return state, metrics


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(CONFIG)
    return path


def test_loop_of_five_rounds_equals_fedsim_run_bit_for_bit(experiment: Path) -> None:
    run = fedsim.run(experiment)
    for process in (_builder(experiment), learning.from_config(experiment)):
        state, metrics = _loop(process, 5)
        assert state.model.dtype == np.float32
        np.testing.assert_array_equal(state.model, run.model)
        rows = run.rounds.to_dict("records")
        assert len(rows) == len(metrics) == 5
        for row, m in zip(rows, metrics, strict=True):
            for key, value in m.results().items():
                assert _same(value, row[key]), (m["round"], key, value, row[key])
        clients = run.clients[run.clients["round"] == 5]
        np.testing.assert_array_equal(metrics[-1].clients["client_id"], clients["client_id"])
        np.testing.assert_array_equal(metrics[-1].clients["outcome"], clients["outcome"])
    # The population and clock applied: some clients straggled and some dropped.
    assert sum(len(m.stragglers) for m in metrics) > 0
    assert sum(len(m.dropped) for m in metrics) > 0
    assert metrics[-1]["sim_time_s"] == pytest.approx(run.summary["sim_time_s"], abs=0)


@pytest.mark.parametrize(
    ("name", "options"), [("fedprox", {"mu": 0.1}), ("scaffold", {}), ("fedadam", {"beta1": 0.5})]
)
def test_build_fed_opt_equals_fedsim_run_of_that_strategy(
    experiment: Path, name: str, options: dict[str, float]
) -> None:
    table = "".join(f"{k} = {v}\n" for k, v in options.items())
    strategy = f"[strategy]\nname = '{name}'\n{table}\n[server]"
    experiment.write_text(
        experiment.read_text().replace("[server]", strategy).replace("rounds = 5", "rounds = 3")
    )
    run = fedsim.run(experiment)
    process = learning.build_fed_opt(
        "softmax",
        SGD(learning_rate=0.05),
        strategy=name,
        strategy_options=options,
        data=fedsim.data.load(experiment),
        population=RAW["population"],
        server={k: v for k, v in RAW["server"].items() if k != "rounds"},
        training={"local_epochs": 2, "batch_size": 10},
        seed=3,
    )
    state, metrics = _loop(process, 3)
    np.testing.assert_array_equal(state.model, run.model)
    assert metrics[-1]["test_accuracy"] == run.rounds["test_accuracy"].iloc[-1]
    if name == "scaffold":  # the clients' control variates travel in the state
        assert len(state.server["client_state"]["control"]["ids"]) > 0


def test_learning_rate_schedule_changes_the_model_as_predicted(experiment: Path) -> None:
    process = _builder(experiment)
    state, _ = _loop(process, 2)
    ids = process.sample_clients(state, COHORT)
    frozen, m = process.next(state, ids, learning_rate=0.0)
    # Clients that take no step send the global model back; their weighted mean is exact.
    np.testing.assert_array_equal(frozen.model, state.model)
    assert frozen.round == 3 and m["reporting"] > 0
    halved, _ = process.next(state, ids, learning_rate=0.025)
    slow = learning.build_weighted_fed_avg(
        "softmax",
        SGD(learning_rate=0.025),
        "sgd",
        data=process.data,
        population=RAW["population"],
        server={k: v for k, v in RAW["server"].items() if k != "rounds"},
        training={"local_epochs": 2, "batch_size": 10},
        seed=3,
    )
    expected, _ = slow.next(state, ids)
    np.testing.assert_array_equal(halved.model, expected.model)
    full, _ = process.next(state, ids)
    assert not np.array_equal(halved.model, full.model)


def test_same_state_through_next_twice_gives_equal_results(experiment: Path) -> None:
    process = _builder(experiment)
    state, _ = _loop(process, 2)
    ids = process.sample_clients(state, COHORT)
    a, ma = process.next(state, ids)
    b, mb = process.next(state, ids)
    assert a == b and a.round == 3 and a != state
    assert ma.results().keys() == mb.results().keys()
    assert all(_same(v, mb.results()[k]) for k, v in ma.results().items())


def _stateful(path: Path) -> learning.IterativeProcess:
    """Client momentum and weight decay, FedAdam's server step: state in the optimiser."""
    return learning.build_fed_opt(
        "softmax",
        lambda: SGD(learning_rate=0.05, momentum=0.9, weight_decay=1e-4),
        Adam(learning_rate=0.02),
        data=fedsim.data.load(path),
        population=RAW["population"],
        server={"clients_per_round": 20, "deadline_s": 8.0, "straggler_policy": "partial"},
        training={"local_epochs": 2, "batch_size": 10},
        seed=3,
    )


def test_state_saved_at_round_3_continues_in_a_new_process_like_the_uninterrupted_loop(
    experiment: Path, tmp_path: Path
) -> None:
    process = _stateful(experiment)
    whole, _ = _loop(process, 5)
    third, _ = _loop(process, 3)
    assert set(third.server["strategy"]["optimizer"]) == {"m", "v"}
    third.save(tmp_path / "round3")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_learning import _loop, _stateful
        from fedsim.learning import State

        state = State.load({str(tmp_path / "round3")!r})
        process = _stateful(Path({str(experiment)!r}))
        state, _ = _loop(process, 2, state)
        state.save({str(tmp_path / "round5")!r})
        """
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = State.load(tmp_path / "round5")
    assert resumed.round == 5
    assert resumed == whole
    np.testing.assert_array_equal(resumed.model, whole.model)


def test_saved_state_loads_back_equal_without_pickle(experiment: Path, tmp_path: Path) -> None:
    state, _ = _loop(_stateful(experiment), 1)
    folder = state.save(tmp_path / "s")
    loaded = State.load(folder)
    assert loaded == state and loaded.seed == 3 and loaded.sim_time_s == state.sim_time_s
    files = sorted(p.suffix for p in (folder / "checkpoint").iterdir() if p.is_file())
    assert files == [".json", ".npz"]
    with np.load(next((folder / "checkpoint").glob("*.npz")), allow_pickle=False) as npz:
        assert "server.w" in npz.files
    with pytest.raises(ConfigError, match="holds no saved state"):
        State.load(tmp_path / "nothing")


def test_run_folder_checkpoint_continues_in_the_loop(experiment: Path, tmp_path: Path) -> None:
    full = fedsim.run(experiment)
    fedsim.run(experiment, overrides=["server.rounds=3"], out_dir=tmp_path / "run")
    state = State.load(tmp_path / "run")
    assert state.round == 3
    state, _ = _loop(learning.from_config(experiment), 2, state)
    np.testing.assert_array_equal(state.model, full.model)


def _momentum_problem() -> tuple[SoftmaxRegression, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A softmax model, one client's 12 samples and a start point; local SGD's result."""
    rng = np.random.default_rng(2)
    model = SoftmaxRegression((6,), 4)
    x = rng.standard_normal((1, 12, 6)).astype(np.float32)
    y = rng.integers(0, 4, (1, 12))
    w0 = rng.standard_normal(model.num_parameters).astype(np.float32) * 0.1
    got, _ = local_sgd(
        model, w0, x, y, epochs=1, batch_size=4, learning_rate=0.2, momentum=0.8,
        weight_decay=0.05,
    )  # fmt: skip
    plain, _ = local_sgd(model, w0, x, y, epochs=1, batch_size=4, learning_rate=0.2)
    assert not np.allclose(plain, got, atol=1e-4)
    return model, x, y, w0, got


def test_client_momentum_and_weight_decay_follow_the_heavy_ball_rule() -> None:
    model, x, y, w, got = _momentum_problem()
    w, v = w[None], np.zeros((1, len(w)), np.float32)
    for s in range(0, 12, 4):
        _, g = model.loss_and_grad(w, x[:, s : s + 4], y[:, s : s + 4])
        v = np.float32(0.8) * v + (g + np.float32(0.05) * w)
        w = w - np.float32(0.2) * v
    np.testing.assert_allclose(got, w, rtol=1e-6, atol=1e-7)


def test_client_momentum_and_weight_decay_step_like_torch_sgd() -> None:
    torch = pytest.importorskip("torch")
    model, x, y, w0, got = _momentum_problem()
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch.optim.SGD([p], lr=0.2, momentum=0.8, weight_decay=0.05)
    for s in range(0, 12, 4):
        _, g = model.loss_and_grad(p.detach().numpy()[None], x[:, s : s + 4], y[:, s : s + 4])
        p.grad = torch.from_numpy(g[0].copy())
        opt.step()
    np.testing.assert_allclose(got[0], p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_torch_optimiser_factories_read_as_specs() -> None:
    torch = pytest.importorskip("torch")
    from functools import partial

    from fedsim.strategies.optimizer_specs import optimizer_spec

    factory = partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-4)
    assert optimizer_spec(factory, "k", 0.1) == SGD(0.05, 0.9, 1e-4)
    assert optimizer_spec(lambda ps: torch.optim.SGD(ps, lr=0.3), "k", 0.1) == SGD(0.3)
    with pytest.raises(ConfigError, match="k: made a Adam"):
        optimizer_spec(torch.optim.Adam, "k", 0.1)
    with pytest.raises(ConfigError, match="k: torch.optim.SGD with dampening"):
        optimizer_spec(partial(torch.optim.SGD, lr=0.1, nesterov=True, momentum=0.9), "k", 0.1)
    with pytest.raises(ConfigError, match="model_fn: a torch nn.Module needs data="):
        learning.build_weighted_fed_avg(lambda: torch.nn.Linear(4, 2), factory)


def test_a_torch_module_from_model_fn_trains_in_the_loop(experiment: Path) -> None:
    torch = pytest.importorskip("torch")
    from functools import partial

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(60, 10))
    process = learning.build_weighted_fed_avg(
        lambda: net,
        partial(torch.optim.SGD, lr=0.05),
        "sgd",
        data=fedsim.data.load(experiment),
        training={"local_epochs": 2, "batch_size": 10},
    )
    state = process.initialize()
    state, metrics = _loop(process, 3, state)
    assert state.model.size == 60 * 10 + 10  # the module's parameters as one flat vector
    # The local objective falls as the global model improves (numpy's softmax: 0.75 -> 0.58).
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 0.1
    again, _ = _loop(process, 3)
    assert np.array_equal(again.model, state.model)


def test_per_client_arrays_give_the_same_round_as_client_ids(experiment: Path) -> None:
    process = _builder(experiment)
    state = process.initialize()
    ids = process.sample_clients(state, COHORT)
    by_id, m_id = process.next(state, ids)
    arrays = {int(k): (c.x, c.y) for k in ids for c in [process.data.client(int(k))]}
    by_arrays, m_arrays = process.next(state, arrays)
    assert by_arrays == by_id
    assert m_arrays["test_accuracy"] == m_id["test_accuracy"]
    assert process.next(state, [process.data.client(int(k)) for k in ids])[0] == by_id


def test_arrays_without_data_or_population_all_complete() -> None:
    rng = np.random.default_rng(1)
    clients = [(rng.standard_normal((n, 4)), rng.integers(0, 2, n)) for n in (8, 12, 5)]
    process = learning.build_weighted_fed_avg(
        lambda: SoftmaxRegression((4,), 2), ("sgd", {"learning_rate": 0.1}), "sgd"
    )
    state, m = process.next(process.initialize(), clients)
    assert list(m.completed) == [0, 1, 2] and m["reporting"] == 3
    assert not np.array_equal(state.model, np.zeros_like(state.model))
    x = np.concatenate([c[0] for c in clients]).astype(np.float32)
    y = np.concatenate([c[1] for c in clients])
    result = learning.evaluate(state, (x, y))
    assert 0.0 <= result["accuracy"] <= 1.0 and math.isfinite(result["loss"])
    assert math.isnan(m["test_accuracy"])  # no test set given


def test_next_works_inside_a_running_event_loop(experiment: Path) -> None:
    process = _builder(experiment)
    state = process.initialize()
    ids = process.sample_clients(state, COHORT)

    async def in_a_notebook() -> State:  # a notebook's cell runs inside an event loop
        return process.next(state, ids)[0]

    assert asyncio.run(in_a_notebook()) == process.next(state, ids)[0]


def test_regression_loop_equals_fedsim_run_and_reports_mae() -> None:
    path = ROOT / "experiments" / "traffic" / "federated.toml"
    overrides = ["server.rounds=2", "data.num_cities=3", "population.num_clients=3"]
    overrides += ["server.clients_per_round=3"]
    run = fedsim.run(path, overrides=overrides)
    process = learning.from_config(path, overrides=overrides)
    state, metrics = _loop(process, 2)
    np.testing.assert_array_equal(state.model, run.model)
    assert metrics[-1]["test_mae"] == run.rounds["test_mae"].iloc[-1]
    assert "test_mae=" in str(metrics[-1]) and "test_accuracy" not in str(metrics[-1])
    found = learning.evaluate(state, process.data)
    assert found["mae"] == metrics[-1]["test_mae"] and found["rmse"] > 0


def test_evaluate_matches_the_rounds_test_metrics(experiment: Path) -> None:
    process = _builder(experiment)
    state, metrics = _loop(process, 1)
    found = learning.evaluate(state, process.data)
    assert found == {"loss": metrics[0]["test_loss"], "accuracy": metrics[0]["test_accuracy"]}
    with pytest.raises(ValueError, match="model="):
        learning.evaluate(State(state.server, state.seed), process.data)


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (("sgd", {"learning_rate": -1.0}), "client_optimizer_fn.learning_rate: must be > 0"),
        (("rmsprop", {}), "client_optimizer_fn: unknown optimiser 'rmsprop'"),
        (Adam(), "client_optimizer_fn: clients run SGD"),
        (("sgd", {"momentum": 0.9, "nesterov": True}), "client_optimizer_fn.nesterov"),
    ],
)
def test_bad_optimiser_is_a_config_error_naming_the_key(
    experiment: Path, client: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        learning.build_weighted_fed_avg("softmax", client, data=fedsim.data.load(experiment))


def test_momentum_needs_the_local_sgd_client(experiment: Path) -> None:
    with pytest.raises(ConfigError, match="client_optimizer_fn: momentum"):
        learning.build_fed_opt(
            "softmax", SGD(momentum=0.9), strategy="scaffold", data=fedsim.data.load(experiment)
        )


def test_ray_workers_give_the_in_process_numbers(ray_session, experiment: Path) -> None:
    local, _ = _loop(_builder(experiment), 2)
    learning.init(workers=2)
    try:
        process = _builder(experiment)
        state, _ = _loop(process, 2)
        assert process._server is not None and process._server.executor.num_workers == 2
        process.close()
    finally:
        learning.process._workers.clear()
    assert state == local


def test_notebook_style_script_prints_ten_rounds_of_metrics() -> None:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    script = ROOT / "experiments" / "notebook_style.py"
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rounds = [line for line in lines if line.startswith("round ")]
    assert [int(line.split(",")[0].split()[1]) for line in rounds] == list(range(1, 11))
    assert all("metrics={train_loss=" in line for line in rounds)
    accuracy = float(lines[-1].rsplit(":", 1)[1])
    assert lines[-1].startswith("test accuracy after 10 rounds")
    assert 0.5 < accuracy < 1.0  # softmax regression learns Fashion-MNIST well above chance
