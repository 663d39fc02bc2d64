"""fedsim reproduce: a finished run re-run from its config.toml gives the same records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import small_config

import fedsim
from fedsim.analysis.reproduce import PROVENANCE_FILE, record, reproduce
from fedsim.cli import main
from fedsim.errors import DivergedError
from fedsim.options import ConfigError


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished run (3 rounds, tiers, dropout, stragglers) with client records."""
    out = tmp_path_factory.mktemp("reproduce") / "run"
    fedsim.run(small_config("server.eval_every=1"), out_dir=out)
    return out


def copy_run(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_rerun_of_finished_run_is_identical_cell_for_cell(finished):
    result = reproduce(finished)
    assert result.identical
    names = [f.name for f in result.files]
    assert names == ["rounds.csv", "clients.csv"]
    rounds = result.files[0]
    assert rounds.rows == 3
    assert "test_accuracy" in rounds.columns and "wall_time_s" not in rounds.columns
    assert set(rounds.wall_time_columns) == {"server_s", "train_s", "wall_time_s"}
    assert result.files[1].rows == len(pd.read_csv(finished / "clients.csv")) > 20
    assert "reproduced, identical: rounds.csv 3 rows" in result.describe()


def test_rerun_with_other_worker_count_and_backend_is_identical(finished, ray_session, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    result = reproduce(run, overrides=["runtime.backend='ray'", "runtime.workers=2"])
    assert result.identical, result.describe()


def test_changed_cell_is_reported_with_round_and_column(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    rounds = (run / "rounds.csv").read_text().splitlines()
    header = rounds[0].split(",")
    col = header.index("train_loss")
    cells = rounds[2].split(",")
    cells[col] = "0.123"
    rounds[2] = ",".join(cells)
    (run / "rounds.csv").write_text("\n".join(rounds) + "\n")
    result = reproduce(run)
    assert not result.identical
    assert "rounds.csv round 2, train_loss: '0.123' then" in result.describe()
    assert record(result) is None and not (run / PROVENANCE_FILE).exists()
    assert main(["reproduce", str(run)]) == 1


def test_wall_time_columns_are_not_compared(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    df = pd.read_csv(run / "rounds.csv")
    text = (run / "rounds.csv").read_text()
    changed = text.replace(f"{df['wall_time_s'].iloc[0]:.10g}", "999.5", 1)
    assert changed != text
    (run / "rounds.csv").write_text(changed)
    assert reproduce(run).identical


def test_record_writes_provenance_once_and_never_overwrites(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    assert main(["reproduce", str(run), "--record"]) == 0
    data = json.loads((run / PROVENANCE_FILE).read_text())
    assert data["compared"]["rounds.csv"]["rows"] == 3
    assert data["compared"]["rounds.csv"]["not_compared"] == ["server_s", "train_s", "wall_time_s"]
    for key in ("fedsim_commit", "versions", "cpu", "blas", "command"):
        assert key in data
    assert isinstance(data["command"], list) and data["command"]
    before = (run / PROVENANCE_FILE).read_bytes()
    assert record(reproduce(run)) is None
    assert (run / PROVENANCE_FILE).read_bytes() == before


def test_result_changing_override_is_refused(finished, capsys):
    with pytest.raises(ConfigError, match="training.learning_rate"):
        reproduce(finished, overrides=["training.learning_rate=0.5"])
    assert main(["reproduce", str(finished), "--set", "server.rounds=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server.rounds" in err[0]


def test_folder_without_a_run_is_refused_before_anything_runs(finished, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", str(finished), str(tmp_path / "empty")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "empty: not a finished run" in err


def test_config_that_no_longer_validates_is_reported_not_raised(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    text = (run / "config.toml").read_text().replace("delta = 1e-05", "delta = 0.0001")
    assert "delta = 0.0001" in text
    (run / "config.toml").write_text(text)
    result = reproduce(run)
    assert not result.identical and result.error.startswith("privacy.delta")
    assert "does not run now: privacy.delta" in result.describe()


def test_run_that_diverged_is_reproduced_up_to_the_round_it_diverged(tmp_path):
    cfg = small_config("model.name='mlp'", "training.learning_rate=10.0", "server.rounds=6")
    with np.errstate(all="ignore"), pytest.raises(DivergedError):
        fedsim.run(cfg, out_dir=tmp_path / "run")
    rounds = len(pd.read_csv(tmp_path / "run" / "rounds.csv"))
    assert 0 < rounds < 6
    with np.errstate(all="ignore"):
        result = reproduce(tmp_path / "run")
    assert result.identical, result.describe()
    assert result.files[0].rows == rounds
