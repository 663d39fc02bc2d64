"""Property: whatever value any config key is given, ``fedsim run`` ends with exit 2 and one
line, writing nothing, or runs to the end; never a traceback."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import tomli_w
from helpers import SMALL
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedsim import cli
from fedsim.config import from_dict
from fedsim.rundir import flatten_config

KEYS = sorted(flatten_config(from_dict(tomllib.loads(SMALL)).to_dict()))
# Keys whose size is the run's work or memory: drawn small here, so an accepted value still
# makes a run of seconds (their huge values are refused by the memory checks, tested in
# test_hostile_inputs).
WORK_KEYS = {
    "server.rounds",
    "training.local_epochs",
    "population.num_clients",
    "server.clients_per_round",
    "data.num_features",
    "data.num_classes",
    "data.min_samples",
    "data.max_samples",
    "data.size_log_mean",
    "data.eval_clients",
    "server.client_eval_clients",
    "runtime.chunks",
}
# Values that sit on the edges of what a key may mean.
EDGE_FLOATS = [0.0, -0.0, 5e-324, 1e-300, 1e-40, -1.0, 0.5, 1.0, 3.0, 1e39, 1e308]
EDGE_FLOATS += [math.inf, -math.inf, math.nan]
EDGE_INTS = [0, 1, -1, 2, 3, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]

scalars = st.one_of(
    st.sampled_from(EDGE_FLOATS),
    st.sampled_from(EDGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=10),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(
        st.sampled_from(["dist", "value", "low", "high", "median", "sigma", "values", "name"]),
        scalars,
        max_size=3,
    ),
)
small_values = st.one_of(
    st.integers(min_value=-2, max_value=6),
    st.sampled_from([0.0, 0.5, 2.0, math.nan, math.inf]),
    st.text(max_size=3),
)


def toml_value(value: object) -> str:
    """``value`` in TOML syntax, as the right-hand side of ``--set key=value``."""
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


@st.composite
def overrides(draw: st.DrawFn) -> list[str]:
    """One to three ``key=value`` overrides of random keys, values in TOML syntax."""
    out = []
    for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)):
        value = draw(small_values if key in WORK_KEYS else values)
        # The Ray backend starts a cluster: that is tested elsewhere, not per example here.
        assume(not (key == "runtime.backend" and value == "ray"))
        out.append(f"{key}={toml_value(value)}")
    return out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("property") / "small.toml"
    path.write_text(SMALL)
    return path


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every machine: the suite passes or fails alike
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sets=overrides())
def test_any_value_of_any_key_is_a_one_line_exit_2_or_a_finished_run(
    experiment: Path, tmp_path_factory: pytest.TempPathFactory, sets: list[str], capsys
) -> None:
    out = tmp_path_factory.mktemp("run") / "out"
    args = ["run", str(experiment), "--out", str(out), "-q", "--set", "server.rounds=1"]
    for s in sets:
        args += ["--set", s]
    code = cli.main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fedsim: error: "), captured.err
        assert not out.exists(), f"{sets}: refused, yet wrote {out}"
    else:
        assert code == 0, f"{sets}: exit {code}: {captured.err}"
        assert (out / "summary.json").is_file() and (out / "rounds.csv").is_file()
