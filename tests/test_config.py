"""Config loading, overrides, saving, and one-line errors for bad input."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from helpers import SMALL, small_config, write

from fedsim import cli
from fedsim import config as config_mod
from fedsim.config import ConfigError

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.toml"


def test_quickstart_loads_with_its_values():
    cfg = config_mod.load(QUICKSTART)
    assert cfg.population.num_clients == 1000
    assert cfg.server.clients_per_round == 100
    assert cfg.server.rounds >= 30
    assert [t.name for t in cfg.population.tiers] == ["low", "mid", "high"]
    assert cfg.population.speed.values == (100.0, 400.0, 1500.0)
    assert cfg.population.dropout_rate.value == 0.1


def test_overrides_use_toml_syntax_and_bare_strings():
    cfg = small_config(
        "server.deadline_s=inf",
        "training.batch_size='full'",
        "experiment.name=renamed",
        "strategy.name='fedprox'",
        "strategy.mu=0.5",
        "population.speed={dist='uniform', low=10, high=20}",
        "population.upload_bandwidth.dist='lognormal'",
        "population.upload_bandwidth.median=5e5",
        "population.upload_bandwidth.sigma=0.5",
    )
    assert math.isinf(cfg.server.deadline_s)
    assert cfg.training.full_batch
    assert cfg.experiment.name == "renamed"
    assert cfg.strategy.name == "fedprox" and cfg.strategy.options.mu == 0.5
    assert (cfg.population.speed.low, cfg.population.speed.high) == (10.0, 20.0)
    assert cfg.population.upload_bandwidth.median == 5e5


def test_resolved_config_round_trips_through_toml():
    cfg = small_config("server.deadline_s=inf", "strategy.name='fedprox'")
    text = config_mod.dumps_toml(cfg.to_dict())
    again = config_mod.from_dict(tomllib.loads(text))
    assert again == cfg


def test_defaults_fill_missing_sections():
    cfg = config_mod.from_dict({})
    assert cfg.data.name == "synthetic" and cfg.model.name == "softmax"
    assert cfg.server.over_selection == 1.0 and math.isinf(cfg.server.deadline_s)


BAD = [
    # (TOML text appended to / replacing the small config, key named in the message, what)
    ("[colour]\nx = 1\n", "colour: unknown section", None),
    ("[server]\nrounds = 3\nfoo = 1\n", "server.foo: unknown key", None),
    ("[server]\nrounds = 'many'\n", "server.rounds: must be an integer", None),
    ("[server]\nrounds = 0\n", "server.rounds: must be > 0, got 0", None),
    ("[population]\nnum_clients = -5\n", "population.num_clients: must be > 0", None),
    (
        "[population]\ndropout_rate = 1.5\n",
        "population.dropout_rate: must be in [0, 1), got 1.5",
        None,
    ),
    (
        "[server]\nclients_per_round = 500\n",
        "server.clients_per_round: must be <= population.num_clients (200)",
        None,
    ),
    ("[server]\nover_selection = 0.5\n", "server.over_selection: must be >= 1.0, got 0.5", None),
    ("[server]\ndeadline_s = 0\n", "server.deadline_s: must be > 0", None),
    (
        "[server]\nstraggler_policy = 'wait'\n",
        "server.straggler_policy: must be one of 'drop' | 'partial'",
        None,
    ),
    ("[training]\nlearning_rate = nan\n", "training.learning_rate: must be", None),
    ("[training]\nlearning_rate = inf\n", "training.learning_rate: must be finite", None),
    ("[training]\nbatch_size = -1\n", "training.batch_size: must be >= 0 or 'full'", None),
    ("[model]\nname = 'transformer'\n", "model.name: unknown model 'transformer'", None),
    ("[data]\ndataset = 'synthetic'\nalpha = -1\n", "data.alpha: must be >= 0", None),
    ("[strategy]\nname = 'fedprox'\nmu = -1\n", "strategy.mu: must be >= 0", None),
    (
        "[population]\nupload_bandwidth = { dist = 'gaussian' }\n",
        "population.upload_bandwidth.dist: must be one of",
        None,
    ),
    (
        "[population]\nupload_bandwidth = { dist = 'uniform', low = 5 }\n",
        "population.upload_bandwidth.high: required",
        None,
    ),
    (
        "[population]\nonline_probability = 1.5\n",
        "population.online_probability: must be in (0, 1]",
        None,
    ),
    ("[population]\nprofiles_csv = 'nowhere.csv'\n", "population.profiles_csv: ", "no such file"),
    ("[server\nrounds = 3\n", "TOML syntax error", None),
]


def _replace_sections(base: str, extra: str) -> str:
    """Drop from ``base`` every section that ``extra`` redefines, then append ``extra``."""
    redefined = {line.strip() for line in extra.splitlines() if line.startswith("[")}
    out, skip = [], False
    for line in base.splitlines():
        if line.startswith("["):
            skip = line.strip() in redefined
        if not skip:
            out.append(line)
    return "\n".join(out) + "\n" + extra


@pytest.mark.parametrize("extra, expected, also", BAD)
def test_bad_input_exits_2_with_one_line_naming_the_key(tmp_path, capsys, extra, expected, also):
    path = write(tmp_path / "bad.toml", _replace_sections(SMALL, extra))
    out = tmp_path / "out"
    code = cli.main(["run", str(path), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err
    if also:
        assert also in err
    assert "Traceback" not in err
    assert not out.exists(), "nothing is written for a bad experiment"


def test_missing_experiment_file_exits_2(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "none.toml")]) == 2
    assert "no such experiment file" in capsys.readouterr().err


def test_bad_override_exits_2(tmp_path, capsys):
    path = write(tmp_path / "ok.toml", SMALL)
    code = cli.main(["run", str(path), "--set", "server.rounds=-2", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "server.rounds: must be > 0, got -2" in capsys.readouterr().err


def test_clients_per_round_error_is_the_configerror_type():
    with pytest.raises(ConfigError, match="server.min_completed"):
        small_config("server.min_completed=50")
