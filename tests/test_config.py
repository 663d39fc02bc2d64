"""Config loading, overrides, saving, and one-line errors for bad input."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
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


def test_strings_with_newline_quote_and_unicode_round_trip_through_toml():
    tricky = 'two\nlines, a "quote", a \\ backslash, a\ttab, \u00e9\u4e2d\U0001f600, \x7f'
    cfg = config_mod.from_dict({"population": {"profiles_csv": tricky}})
    text = config_mod.dumps_toml(cfg.to_dict())
    again = config_mod.from_dict(tomllib.loads(text))
    assert again.population.profiles_csv == tricky
    assert again == cfg
    # Keys that are not bare words are quoted, not read back as nested tables.
    tables = {"a": {"x.y": 1, "k": {"p q": tricky}}, "b c": {"": [1.5, -math.inf]}}
    assert tomllib.loads(config_mod.dumps_toml(tables)) == tables


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
    ('[server]\nrounds = "3\n', "TOML syntax error", None),
    # zero or negative sizes
    ("[server]\nclients_per_round = 0\n", "server.clients_per_round: must be > 0, got 0", None),
    ("[training]\nlocal_epochs = 0\n", "training.local_epochs: must be > 0, got 0", None),
    ("[runtime]\nchunks = 0\n", "runtime.chunks: must be > 0, got 0", None),
    ("[runtime]\nworkers = -1\n", "runtime.workers: must be >= 0, got -1", None),
    ("[runtime]\ncheckpoint_every = -1\n", "runtime.checkpoint_every: must be >= 0", None),
    ("[runtime]\nmax_worker_restarts = -2\n", "runtime.max_worker_restarts: must be >= 0", None),
    ("[faults]\nkill_worker_times = 0\n", "faults.kill_worker_times: must be > 0, got 0", None),
    ("[faults]\nkill_worker_at_round = -1\n", "faults.kill_worker_at_round: must be >= 0", None),
    # wrong types, unknown keys
    ("[runtime]\nmax_worker_restarts = 1.5\n", "runtime.max_worker_restarts: must be an", None),
    ("[faults]\nkill_worker_at_round = 'three'\n", "faults.kill_worker_at_round: must be", None),
    ("[faults]\nkill_everything = true\n", "faults.kill_everything: unknown key", None),
    ("[runtime]\naddress = 'somewhere'\n", "runtime.address: must be '', 'auto', 'ray://", None),
    ("[runtime]\naddress = 'ray://host:port'\n", "runtime.address: must be", None),
    # ranges
    ("[server]\ndeadline_s = -5\n", "server.deadline_s: must be > 0, got -5.0", None),
    ("[server]\nmax_update_norm = 0\n", "server.max_update_norm: must be > 0, got 0.0", None),
    ("[server]\nmax_update_norm = nan\n", "server.max_update_norm: must be > 0, got nan", None),
    ("[population]\ndropout_rate = -0.2\n", "population.dropout_rate: must be in [0, 1)", None),
    (
        "[faults]\nnan_update_rate = 1.5\n",
        "faults.nan_update_rate: must be in [0, 1], got 1.5",
        None,
    ),
    ("[faults]\nnan_update_rate = -0.1\n", "faults.nan_update_rate: must be in [0, 1]", None),
    ("[training]\nlearning_rate = -inf\n", "training.learning_rate: must be > 0", None),
    # missing data
    (
        "[data]\ndataset = 'mnist'\npath = 'nowhere'\n[partition]\nscheme = 'iid'\n",
        "data.path: directory nowhere",
        "does not exist",
    ),
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


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _mnist_dir(tmp_path: Path, damage: str) -> str:
    """A small MNIST folder with one file damaged; returns the [data] table using it."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 40),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 10),
    }
    for name, array in arrays.items():
        (folder / name).write_bytes(_idx_bytes(array))
    images = folder / "train-images-idx3-ubyte"
    if damage == "garbage":
        images.write_bytes(b"this is not an IDX file")
    elif damage == "truncated":
        images.write_bytes(images.read_bytes()[:500])
    elif damage == "gzip":
        labels = folder / "train-labels-idx1-ubyte"
        labels.unlink()
        (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    elif damage == "labels":
        (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(7)))
    return f"[data]\ndataset = 'mnist'\npath = '{folder}'\n[partition]\nscheme = 'iid'\n"


def _profiles(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "profiles.csv"
    path.write_bytes(content)
    return f"[population]\nnum_clients = 200\nprofiles_csv = '{path}'\n"


BAD_FILES = [
    # (what, builder of the TOML text using files made in tmp_path, message parts)
    ("corrupt IDX", lambda t: _mnist_dir(t, "garbage"), ["train-images-idx3-ubyte: not an IDX"]),
    (
        "truncated IDX",
        lambda t: _mnist_dir(t, "truncated"),
        ["train-images-idx3-ubyte: payload has 484 bytes", "need 31360"],
    ),
    ("corrupt gzip", lambda t: _mnist_dir(t, "gzip"), ["idx1-ubyte.gz: corrupt gzip data"]),
    (
        "label count",
        lambda t: _mnist_dir(t, "labels"),
        ["train-labels-idx1-ubyte: 7 labels for 40"],
    ),
    (
        "profiles with wrong columns",
        lambda t: _profiles(t, b"a,b\n1,2\n"),
        ["population.profiles_csv: ", "profiles.csv: missing column 'speed'"],
    ),
    (
        "profiles with an unknown column",
        lambda t: _profiles(
            t, b"speed,download_bandwidth,upload_bandwidth,colour,weight\n1,2,3,red,1\n"
        ),
        ["profiles.csv: unknown column 'colour'"],
    ),
    (
        "profiles with a non-numeric value",
        lambda t: _profiles(t, b"speed,download_bandwidth,upload_bandwidth,weight\nfast,2,3,1\n"),
        ["profiles.csv: column 'speed' has a non-numeric or empty value"],
    ),
    (
        "profiles not text",
        lambda t: _profiles(t, b"\x00\xff\xfe\x81garbage\x00"),
        ["profiles.csv: cannot be read as CSV"],
    ),
    ("empty profiles", lambda t: _profiles(t, b""), ["profiles.csv: cannot be read as CSV"]),
]


@pytest.mark.parametrize("what, build, expected", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_exit_2_with_one_line_naming_the_file(tmp_path, capsys, what, build, expected):
    path = write(tmp_path / "bad.toml", _replace_sections(SMALL, build(tmp_path)))
    out = tmp_path / "out"
    code = cli.main(["run", str(path), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fedsim: error: ")
    for part in expected:
        assert part in err
    assert "Traceback" not in err
    assert not out.exists(), "nothing is written for a bad experiment"


def test_experiment_file_that_is_not_text_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe[server]\n")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert f"{path}: is not UTF-8 text" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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
