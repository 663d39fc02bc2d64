"""TensorBoard and MLflow loggers: read back, the scalars per round equal rounds.csv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, SMALL, small_config, write
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import fedsim
from fedsim import cli
from fedsim.callbacks import loggers
from fedsim.metrics import FLOAT_FORMAT, read_rounds
from fedsim.options import ConfigError

LOGGED = ["logging.tensorboard=true", "logging.mlflow=true"]


def _expected(rounds: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """Per column of rounds.csv, its (round, value) pairs where it holds a number."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in rounds.to_dict("records"):
        for name, value in loggers.scalars(record).items():
            out.setdefault(name, []).append((int(record["round"]), value))
    return out


def _tensorboard(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _mlflow(store):
    from mlflow.tracking import MlflowClient

    os.environ.update(loggers.MLFLOW_ENV)
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    # The file store makes a "Default" experiment of its own; the run is in fedsim's.
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = {
        name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        for name in run.data.metrics
    }
    return experiment, run, metrics


def _assert_logs_equal_rounds_csv(out) -> None:
    expected = _expected(read_rounds(out / "rounds.csv"))
    assert {"test_accuracy", "train_loss", "cum_bytes", "sim_time_s"} <= set(expected)
    events = _tensorboard(out / "tensorboard")
    assert set(events) == set(expected)
    for name, pairs in expected.items():
        # TensorBoard keeps scalars as float32.
        assert events[name] == [(r, float(np.float32(v))) for r, v in pairs], name
    _, run, metrics = _mlflow(out / "mlruns")
    assert set(metrics) == set(expected)
    for name, pairs in expected.items():
        assert sorted(metrics[name]) == pairs, name


def test_tensorboard_and_mlflow_logs_hold_every_round_of_rounds_csv(tmp_path):
    out = tmp_path / "run"
    cfg = small_config("server.rounds=4", "server.eval_every=2", *LOGGED)
    result = fedsim.run(cfg, out_dir=out)
    _assert_logs_equal_rounds_csv(out)
    # Rounds 1 and 3 are not evaluated: no accuracy is logged for them.
    assert [r for r, _ in _tensorboard(out / "tensorboard")["test_accuracy"]] == [2, 4]
    experiment, run, _ = _mlflow(out / "mlruns")
    assert experiment.name == "small" and run.info.run_name == "run"
    assert run.info.status == "FINISHED"
    assert run.data.params["server.rounds"] == "4"
    assert run.data.params["training.learning_rate"] == "0.05"
    final = float(FLOAT_FORMAT % result.summary["final_test_accuracy"])  # as rounds.csv has it
    assert run.data.metrics["test_accuracy"] == final


def test_logs_after_a_crash_and_resume_equal_rounds_csv_without_duplicates(tmp_path):
    out = tmp_path / "run"
    cfg = small_config("server.rounds=5", "runtime.checkpoint_every=2", *LOGGED)

    def crash(record):
        if record["round"] == 3:
            raise RuntimeError("crash after round 3")

    with pytest.raises(RuntimeError):
        fedsim.run(cfg, out_dir=out, on_round=crash)
    _, run, _ = _mlflow(out / "mlruns")
    assert run.info.status == "KILLED"
    fedsim.resume(out)
    _assert_logs_equal_rounds_csv(out)
    assert [r for r, _ in _tensorboard(out / "tensorboard")["train_loss"]] == [1, 2, 3, 4, 5]


def test_a_logger_turned_on_when_resuming_logs_the_rounds_before_too(tmp_path):
    out = tmp_path / "run"
    fedsim.run(small_config("server.rounds=2"), out_dir=out)
    fedsim.resume(out, overrides=["server.rounds=4", *LOGGED])
    _assert_logs_equal_rounds_csv(out)
    assert len(_tensorboard(out / "tensorboard")["cum_bytes"]) == 4


def test_a_missing_logger_package_exits_2_naming_the_key_and_the_install(
    tmp_path, capsys, monkeypatch
):
    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(
        loggers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else real(name, *a),
    )
    path = write(tmp_path / "c.toml", SMALL + "\n[logging]\nmlflow = true\n")
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("fedsim: error: logging.mlflow: needs the mlflow package")
    assert "pip install 'fedsim[mlflow]'" in err
    assert not out.exists()


def test_a_logger_without_a_run_folder_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^logging\.tensorboard: writes into the run folder"):
        fedsim.run(small_config("logging.tensorboard=true"))


def test_logging_keys_are_checked_as_booleans():
    with pytest.raises(ConfigError, match=r"^logging\.mlflow"):
        small_config("logging.mlflow='yes'")
    assert small_config().logging.tensorboard is False and small_config().logging.mlflow is False


NETWORK_PROBE = textwrap.dedent(
    """
    import ipaddress, json, socket, sys
    contacted = []

    def audit(event, args):
        if event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple):
                contacted.append(str(address[0]))
        elif event == "socket.getaddrinfo":
            contacted.append(str(args[0]))

    sys.addaudithook(audit)
    import fedsim
    from fedsim import config as config_mod

    cfg = config_mod.from_dict(json.loads(sys.argv[1]))
    fedsim.run(cfg, out_dir=sys.argv[2])
    import mlflow.telemetry

    def loopback(host):
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    print(json.dumps({
        "outside": sorted({h for h in contacted if not loopback(h)}),
        "telemetry_client": mlflow.telemetry.get_telemetry_client() is not None,
    }))
    """
)


def test_the_loggers_contact_no_address_and_mlflow_telemetry_stays_off(tmp_path):
    # A child without the variables (CI, pytest) that MLflow itself reads as "do not report":
    # what keeps its telemetry off there is fedsim's own switch.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "PYTEST_CURRENT_TEST", "DO_NOT_TRACK") and "MLFLOW" not in k
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    raw = tomllib.loads(SMALL)
    raw["server"]["rounds"] = 2
    raw["logging"] = {"tensorboard": True, "mlflow": True}
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", NETWORK_PROBE, json.dumps(raw), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"outside": [], "telemetry_client": False}
    assert (out / "mlruns").is_dir() and (out / "tensorboard").is_dir()
