"""Parameter sweeps: grid parsing, run names, validation before running, resuming, the command."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedsim
from fedsim.analysis.sweep import (
    DIVERGED_FILE,
    SWEEP_FILE,
    SweepPoint,
    parse_grid,
    plan_sweep,
    run_name,
    split_values,
    sweep,
)
from fedsim.cli import main
from fedsim.metrics import WALL_TIME_COLUMNS
from fedsim.options import ConfigError

TINY = """
[experiment]
name = "tiny"
seed = 7

[data]
dataset = "synthetic"
alpha = 0.5
beta = 0.5
max_samples = 100
eval_clients = 5

[population]
num_clients = 30

[training]
local_epochs = 1
batch_size = 10
learning_rate = 0.05

[server]
rounds = 2
clients_per_round = 5

[runtime]
backend = "local"
progress = false
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_grid_values_parse_like_set_values() -> None:
    (axis,) = parse_grid(["training.learning_rate=0.1, 0.05,1e-3"])
    assert axis.key == "training.learning_rate" and axis.values == (0.1, 0.05, 0.001)
    (names,) = parse_grid(["strategy.name=fedavg,fedprox"])
    assert names.values == ("fedavg", "fedprox")
    (hidden,) = parse_grid(["model.hidden=[64, 64],[32],[]"])
    assert hidden.values == ([64, 64], [32], [])
    assert split_values('"a,b",c,{dist = "uniform", low = 1, high = 2}') == [
        '"a,b"',
        "c",
        '{dist = "uniform", low = 1, high = 2}',
    ]
    (flags,) = parse_grid(["training.shuffle=true,false"])
    assert flags.values == (True, False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("server.rounds", "expected section.key=value1"),
        ("server.rounds=", "empty value"),
        ("server.rounds=1,,2", "empty value"),
        ("rounds=1,2", "expected section.key=value"),
        ("experiment.seed=1,2", "use --seeds"),
        ("server.rounds=1,2,1", "listed twice"),
    ],
)
def test_bad_grid_specs_are_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_grid([spec])
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["server.rounds=1,2", "server.rounds=3"])


def test_run_names_are_readable_and_file_safe() -> None:
    assert (
        run_name({"strategy.name": "fedprox", "server.clients_per_round": 20}, 1)
        == "strategy.name=fedprox,server.clients_per_round=20,seed=1"
    )
    assert run_name({"model.hidden": [64, 64]}, 0) == "model.hidden=64_64,seed=0"
    assert run_name({"experiment.name": "a b/c"}, 0) == "experiment.name=a_b_c,seed=0"
    assert run_name({"server.deadline_s": float("inf")}, 2) == "server.deadline_s=inf,seed=2"
    assert run_name({}, 3) == "seed=3"
    long = run_name({"experiment.name": "x" * 400}, 0)
    assert len(long) == 150 and long != run_name({"experiment.name": "x" * 401}, 0)


def test_plan_is_grid_product_times_seeds(tiny: Path) -> None:
    runs = plan_sweep(
        tiny,
        ["strategy.name=fedavg,fedprox", "training.learning_rate=0.1,0.05,0.01"],
        seeds=2,
        overrides=["server.rounds=3"],
    )
    assert len(runs) == 2 * 3 * 2
    assert [r.index for r in runs] == list(range(1, 13))
    assert [r.seed for r in runs[:4]] == [7, 8, 7, 8]  # base seed 7, seeds innermost
    assert runs[3].name == "strategy.name=fedavg,training.learning_rate=0.05,seed=8"
    cfg = runs[-1].config
    assert cfg.strategy.name == "fedprox" and cfg.training.learning_rate == 0.01
    assert cfg.experiment.seed == 8 and cfg.server.rounds == 3
    assert len({r.name for r in runs}) == len(runs)


def test_names_that_sanitise_alike_are_told_apart(tiny: Path) -> None:
    runs = plan_sweep(tiny, ['experiment.name="a b","a_b"'])
    assert runs[0].name != runs[1].name
    assert all(r.name.startswith("experiment.name=a_b,seed=7") for r in runs)


def test_invalid_grid_point_stops_before_anything_runs(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match=r"server.clients_per_round: .*sweep run"):
        sweep(tiny, ["server.clients_per_round=5,50"], out_dir=out, log=None)
    assert not out.exists()
    # Errors spanning sections are found by building each grid point, before the first run.
    with pytest.raises(ConfigError, match="partition.scheme"):
        sweep(tiny, ["partition.scheme=natural,iid"], out_dir=out, log=None)
    assert not out.exists()


@pytest.mark.slow
def test_sweep_writes_runs_table_comparison_and_plots(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    lines: list[str] = []
    result = sweep(tiny, ["strategy.name=fedavg,fedprox"], seeds=2, out_dir=out, log=lines.append)
    assert result.ran == 4 and result.skipped == 0
    assert [line.split(":")[0] for line in lines] == [f"run {i}/4" for i in range(1, 5)]
    assert "final acc" in lines[0] and lines[0].endswith(" s")
    table = pd.read_csv(out / SWEEP_FILE)
    assert list(table.columns[:4]) == ["strategy.name", "seed", "status", "rounds"]
    assert table.columns[-1] == "run_dir" and set(table["status"]) == {"finished"}
    assert table["strategy.name"].tolist() == ["fedavg", "fedavg", "fedprox", "fedprox"]
    assert table["seed"].tolist() == [7, 8, 7, 8]
    for column in ("final_accuracy", "best_accuracy", "total_bytes", "sim_time_s", "wall_time_s"):
        assert column in table.columns
    for row in table.itertuples():
        summary = json.loads((out / row.run_dir / "summary.json").read_text())
        assert row.final_accuracy == pytest.approx(summary["final_test_accuracy"])
        assert row.total_bytes == summary["bytes_up_total"] + summary["bytes_down_total"]
        assert row.sim_time_s == pytest.approx(summary["sim_time_s"])
    assert (out / "comparison.csv").is_file() and (out / "comparison.md").is_file()
    assert (out / "plots" / "accuracy_vs_bytes.png").is_file()
    assert (out / "plots" / "accuracy_vs_bytes.csv").is_file()


def test_sweep_run_equals_a_direct_run(tiny: Path, tmp_path: Path) -> None:
    result = sweep(
        tiny, ["training.learning_rate=0.1"], out_dir=tmp_path / "s", plots=False, log=None
    )
    fedsim.run(tiny, overrides=["training.learning_rate=0.1"], out_dir=tmp_path / "direct")
    swept = pd.read_csv(result.run_dirs[0] / "rounds.csv")
    direct = pd.read_csv(tmp_path / "direct" / "rounds.csv")
    for column in ("test_accuracy", "train_loss", "cum_bytes", "sim_time_s"):
        pd.testing.assert_series_equal(swept[column], direct[column], check_exact=True)


def test_rerun_skips_finished_runs_and_resumes_interrupted(tiny: Path, tmp_path: Path) -> None:
    grid = ["server.clients_per_round=5,10"]
    base = ["server.rounds=4", "runtime.checkpoint_every=1"]
    reference = sweep(tiny, grid, overrides=base, out_dir=tmp_path / "ref", plots=False, log=None)
    out = tmp_path / "sweep"
    runs = plan_sweep(tiny, grid, overrides=base)
    # The first run finishes; the second is stopped after two of its four rounds.
    fedsim.run(tiny, overrides=[*base, *runs[0].overrides], out_dir=out / runs[0].name)

    def stop(record: dict) -> None:
        if record["round"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fedsim.run(
            tiny, overrides=[*base, *runs[1].overrides], out_dir=out / runs[1].name, on_round=stop
        )
    assert not (out / runs[1].name / "summary.json").exists()
    finished_mtime = (out / runs[0].name / "rounds.csv").stat().st_mtime_ns

    lines: list[str] = []
    result = sweep(tiny, grid, overrides=base, out_dir=out, plots=False, log=lines.append)
    assert result.ran == 1 and result.skipped == 1
    assert lines[0].endswith("finished before, skipped") and lines[1].endswith("(resumed)")
    assert (out / runs[0].name / "rounds.csv").stat().st_mtime_ns == finished_mtime
    # The resumed run ends as if it had never been interrupted.
    for name in (runs[0].name, runs[1].name):
        got = pd.read_csv(out / name / "rounds.csv")
        want = pd.read_csv(tmp_path / "ref" / name / "rounds.csv")
        for column in ("round", "test_accuracy", "train_loss", "cum_bytes", "sim_time_s"):
            pd.testing.assert_series_equal(got[column], want[column], check_exact=True)
    assert result.table["status"].tolist() == ["finished", "finished"]
    pd.testing.assert_series_equal(
        result.table["final_accuracy"], reference.table["final_accuracy"]
    )


def test_folder_without_config_or_checkpoint_is_rerun(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    first = sweep(tiny, ["server.rounds=1,2"], out_dir=out, plots=False, log=None)
    # A start killed before config.toml was written ...
    stale = first.run_dirs[0]
    shutil.rmtree(stale)
    (stale / "checkpoint").mkdir(parents=True)
    (stale / "checkpoint" / "lock").touch()  # a run takes the lock before anything else
    (stale / "rounds.csv").write_text("round,test_accuracy\n1,0.99\n")
    # ... and an unfinished run whose checkpoint is damaged.
    damaged = first.run_dirs[1]
    (damaged / "summary.json").unlink()
    (damaged / "checkpoint" / "state.json").write_text("{not json")
    lines: list[str] = []
    second = sweep(tiny, ["server.rounds=1,2"], out_dir=out, plots=False, log=lines.append)
    assert second.ran == 2 and not any("resumed" in line for line in lines)
    pd.testing.assert_frame_equal(
        second.table.drop(columns="wall_time_s"), first.table.drop(columns="wall_time_s")
    )


def test_more_rounds_extend_finished_runs(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    sweep(tiny, overrides=["server.rounds=2"], out_dir=out, plots=False, log=None)
    lines: list[str] = []
    longer = sweep(tiny, overrides=["server.rounds=3"], out_dir=out, plots=False, log=lines.append)
    assert lines[0].endswith("(resumed)") and longer.table["rounds"].tolist() == [3]
    fedsim.run(tiny, overrides=["server.rounds=3"], out_dir=tmp_path / "direct")
    got = pd.read_csv(longer.run_dirs[0] / "rounds.csv")
    want = pd.read_csv(tmp_path / "direct" / "rounds.csv")
    pd.testing.assert_series_equal(got["test_accuracy"], want["test_accuracy"], check_exact=True)
    with pytest.raises(ConfigError, match="holds a run of 3 rounds, the sweep now has 2"):
        sweep(tiny, overrides=["server.rounds=2"], out_dir=out, plots=False, log=None)


def test_diverged_run_is_recorded_and_the_sweep_goes_on(tiny: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    result = sweep(
        tiny,
        ["faults.nan_update_rate=1,0"],
        out_dir=tmp_path / "sweep",
        plots=False,
        log=lines.append,
    )
    assert "training diverged at round 1" in lines[0] and "final acc" in lines[1]
    assert result.table["status"].tolist() == ["diverged at round 1", "finished"]
    assert math.isnan(result.table["final_accuracy"][0])
    assert result.table["final_accuracy"][1] > 0
    assert result.table["rounds"].tolist()[1] == 2


def test_finished_run_of_another_config_is_an_error(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    sweep(tiny, ["server.rounds=1"], out_dir=out, plots=False, log=None)
    with pytest.raises(ConfigError, match="learning_rate=0.05, the sweep now has 0.2"):
        sweep(
            tiny,
            ["server.rounds=1"],
            overrides=["training.learning_rate=0.2"],
            out_dir=out,
            plots=False,
            log=None,
        )
    # How a run is executed does not matter.
    again = sweep(
        tiny,
        ["server.rounds=1"],
        overrides=["runtime.workers=3", "runtime.progress=true"],
        out_dir=out,
        plots=False,
        log=None,
    )
    assert again.skipped == 1


def test_sweep_command(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "sweep",
            str(tiny),
            "--grid",
            "training.learning_rate=0.1,0.05",
            "--set",
            "server.rounds=1",
            "--seeds",
            "1",
            "--out",
            str(out),
            "--target",
            "0.2",
            "--no-plots",
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "run 1/2: training.learning_rate=0.1,seed=7: final acc" in captured.out
    assert "run 2/2: training.learning_rate=0.05,seed=7: final acc" in captured.out
    assert f"results: {out}" in captured.out
    assert "rounds_to_target" in pd.read_csv(out / SWEEP_FILE).columns
    assert not (out / "plots").exists()


def test_sweep_command_bad_grid_exits_2(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(["sweep", str(tiny), "--grid", "server.bogus=1,2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.startswith("fedsim: error: server.bogus: unknown key") and err.count("\n") == 1
    assert main(["sweep", str(tiny), "--seeds", "0", "--out", str(out)]) == 2
    assert "--seeds: must be >= 1" in capsys.readouterr().err


def test_default_folder_is_results_experiment_sweep(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = sweep(tiny, overrides=["server.rounds=1"], plots=False, log=None)
    assert result.out_dir == Path("results") / "tiny-sweep"
    assert (tmp_path / "results" / "tiny-sweep" / "seed=7" / "summary.json").is_file()


@pytest.mark.slow
def test_ray_sweep_shares_one_ray_instance(ray_session, tiny: Path, tmp_path: Path) -> None:
    ray = ray_session
    ray_overrides = ["runtime.backend=ray", "runtime.workers=2"]
    result = sweep(
        tiny,
        ["strategy.name=fedavg,fedprox"],
        overrides=ray_overrides,
        out_dir=tmp_path / "ray",
        plots=False,
        log=None,
    )
    # ensure_ray found the session's instance and did not start another.
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 4
    local = sweep(
        tiny, ["strategy.name=fedavg,fedprox"], out_dir=tmp_path / "local", plots=False, log=None
    )
    # Same numbers, whichever backend ran them.
    for column in ("final_accuracy", "total_bytes", "sim_time_s"):
        pd.testing.assert_series_equal(result.table[column], local.table[column])


def test_named_points_run_in_order_with_their_values_and_own_config(
    tiny: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace('name = "tiny"', 'name = "other"'))
    points = [
        SweepPoint("plain", ("experiment.seed=1",), {"method": "FedAvg", "seed": 1}),
        SweepPoint("prox/mu0.1", ("strategy.name='fedprox'", "strategy.mu=0.1"), {"mu": 0.1}),
        SweepPoint("other", (), {"file": "other"}, other),
    ]
    result = sweep(tiny, points=points, out_dir=tmp_path / "s", tables=False, log=None)
    assert [o.folder.relative_to(tmp_path / "s").as_posix() for o in result.runs] == [
        "plain",
        "prox/mu0.1",
        "other",
    ]
    assert [o.values for o in result.runs] == [p.values for p in points]
    assert [o.run.seed for o in result.runs] == [1, 7, 7]
    assert result.runs[1].run.config.strategy.name == "fedprox"
    assert result.runs[2].summary["experiment"] == "other"
    assert result.runs[0].summary["rounds"] == 2 and len(result.runs[0].rounds) == 2
    assert not (tmp_path / "s" / SWEEP_FILE).exists()
    direct = fedsim.run(tiny, overrides=["experiment.seed=1"], out_dir=tmp_path / "direct")
    assert result.runs[0].summary["final_test_accuracy"] == direct.summary["final_test_accuracy"]
    again = sweep(tiny, points=points, out_dir=tmp_path / "s", tables=False, log=None)
    assert again.ran == 0 and again.skipped == 3
    assert [o.summary for o in again.runs] == [o.summary for o in result.runs]


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([SweepPoint("a"), SweepPoint("a")], "the name is given twice"),
        ([SweepPoint("../up")], "not a relative folder name"),
        ([SweepPoint("a", ("training.learning_rate=-1",))], "learning_rate"),
    ],
)
def test_bad_points_stop_before_anything_runs(
    tiny: Path, tmp_path: Path, points: list[SweepPoint], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep(tiny, points=points, out_dir=tmp_path / "s", log=None)
    assert not (tmp_path / "s").exists()


def test_points_and_grid_together_are_refused(tiny: Path) -> None:
    with pytest.raises(ConfigError, match="either named points or a grid"):
        plan_sweep(tiny, ["server.rounds=1,2"], points=[SweepPoint("a")])


def test_diverged_run_is_skipped_when_the_sweep_runs_again(tiny: Path, tmp_path: Path) -> None:
    points = [SweepPoint("nan", ("faults.nan_update_rate=1",))]
    first = sweep(tiny, points=points, out_dir=tmp_path / "s", tables=False, log=None)
    assert first.runs[0].diverged_at == 1 and first.runs[0].summary == {}
    marker = json.loads((tmp_path / "s" / "nan" / DIVERGED_FILE).read_text())
    assert marker["round"] == 1
    again = sweep(tiny, points=points, out_dir=tmp_path / "s", tables=False, log=None)
    assert again.ran == 0 and again.runs[0].diverged_at == 1


def test_run_that_reached_its_target_is_not_extended_by_more_rounds(
    tiny: Path, tmp_path: Path
) -> None:
    points = [SweepPoint("early", ("server.target_accuracy=0.01", "server.rounds=2"))]
    first = sweep(tiny, points=points, out_dir=tmp_path / "s", tables=False, log=None)
    assert first.runs[0].summary["rounds"] == 1
    longer = [SweepPoint("early", ("server.target_accuracy=0.01", "server.rounds=5"))]
    again = sweep(tiny, points=longer, out_dir=tmp_path / "s", tables=False, log=None)
    assert again.ran == 0 and len(again.runs[0].rounds) == 1


def test_finished_folder_without_its_checkpoint_counts_as_finished(
    tiny: Path, tmp_path: Path
) -> None:
    # As results are committed: config.toml, rounds.csv and summary.json only.
    points = [SweepPoint("a")]
    sweep(tiny, points=points, out_dir=tmp_path / "s", tables=False, log=None)
    for extra in ("checkpoint", "clients.csv", "partition.csv"):
        path = tmp_path / "s" / "a" / extra
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    again = sweep(tiny, points=points, out_dir=tmp_path / "s", tables=False, log=None)
    assert again.ran == 0 and again.runs[0].summary["rounds"] == 2


def test_fresh_reruns_and_models_keeps_the_final_models(tiny: Path, tmp_path: Path) -> None:
    points = [SweepPoint("a"), SweepPoint("b", ("experiment.seed=8",))]
    first = sweep(tiny, points=points, out_dir=tmp_path / "s", tables=False, log=None)
    assert all(o.model is None for o in first.runs)
    again = sweep(
        tiny, points=points, out_dir=tmp_path / "s", tables=False, fresh=True, models=True, log=None
    )
    assert again.ran == 2
    direct = fedsim.run(tiny, overrides=["experiment.seed=8"], out_dir=tmp_path / "direct")
    assert all(np.array_equal(a, b) for a, b in zip(again.runs[1].model, direct.model, strict=True))


def test_jobs_give_the_same_runs_as_one_at_a_time(tiny: Path, tmp_path: Path) -> None:
    points = [SweepPoint(f"s{i}", (f"experiment.seed={i}",)) for i in range(3)]
    one = sweep(tiny, points=points, out_dir=tmp_path / "one", tables=False, log=None)
    two = sweep(tiny, points=points, out_dir=tmp_path / "two", tables=False, jobs=2, log=None)
    for a, b in zip(one.runs, two.runs, strict=True):
        pd.testing.assert_frame_equal(
            a.rounds.drop(columns=[c for c in a.rounds if c in WALL_TIME_COLUMNS]),
            b.rounds.drop(columns=[c for c in b.rounds if c in WALL_TIME_COLUMNS]),
        )
