"""Hostile input: every bad config, path or file is a one-line exit 2 that writes nothing;
racing runs leave one run's records; a tampered checkpoint is refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SMALL, finish, small_config, spawn_run, write

import fedsim
from fedsim import checkpoint, cli, rundir
from fedsim.runner import prepare

# A run of 3 rounds on the local backend: the base every bad value is set on.
QUICK = ("server.rounds=3",)

# (id, --set overrides, what the one line must start with after "fedsim: error: ")
BAD_VALUES = [
    ("speed-overflows-float32", ["population.speed=1e39"], "population.speed"),
    ("speed-underflows-float32", ["population.speed=1e-40"], "population.speed"),
    ("speed-infinite", ["population.speed=inf"], "population.speed"),
    ("speed-nan", ["population.speed=nan"], "population.speed"),
    (
        "bandwidth-lognormal-overflows",
        ["population.download_bandwidth={dist='lognormal', median=1e6, sigma=30.0}"],
        "population.download_bandwidth",
    ),
    (
        "bandwidth-uniform-overflows",
        ["population.upload_bandwidth={dist='uniform', low=1.0, high=1e300}"],
        "population.upload_bandwidth",
    ),
    ("tier-values-infinite", ["population.speed.values=[1.0, inf]"], "population.speed"),
    (
        "tier-weights-sum-infinite",
        ["population.tiers=[{name='a', weight=1e308}, {name='b', weight=1e308}]"],
        "population.tiers",
    ),
    ("dropout-certain", ["population.dropout_rate=1.0"], "population.dropout_rate"),
    (
        "never-online-underflow",
        ["population.availability='bernoulli'", "population.online_probability=1e-300"],
        "population.online_probability",
    ),
    (
        "period-that-overflows-time",
        ["population.availability='periodic'", "population.period_s=1e-300"],
        "population.period_s",
    ),
    ("jitter-infinite", ["population.compute_jitter=inf"], "population.compute_jitter"),
    (
        "population-too-big-for-memory",
        [f"population.num_clients={10**15}"],
        "population.num_clients",
    ),
    ("model-too-big-for-memory", ["model.name='mlp'", "model.hidden=[200000, 200000]"], "model"),
    ("features-too-big-for-memory", ["data.num_features=1000000000"], "data.num_features"),
    (
        "cnn-kernel-above-the-image",
        ["data.num_features=784", "model.name='cnn'", "model.kernel=29"],
        "model.kernel",
    ),
    (
        "more-tiers-than-uint8-holds",
        [
            "population.tiers=["
            + ", ".join(f"{{name='t{i}', weight=1.0}}" for i in range(257))
            + "]"
        ],
        "population.tiers",
    ),
    ("over-selection-infinite", ["server.over_selection=inf"], "server.over_selection"),
    ("learning-rate-nan", ["training.learning_rate=nan"], "training.learning_rate"),
    ("deadline-nan", ["server.deadline_s=nan"], "server.deadline_s"),
    ("rounds-zero", ["server.rounds=0"], "server.rounds"),
    ("cohort-above-population", ["server.clients_per_round=201"], "server.clients_per_round"),
    ("mu-with-fedavg", ["strategy.mu=0.1"], "strategy.mu"),
    ("unknown-section", ["nonsense.key=1"], "nonsense"),
    ("dp-key-with-dp-off", ["privacy.noise_multiplier=2.0"], "privacy.noise_multiplier"),
    ("dp-delta-with-dp-off", ["privacy.delta=1e-6"], "privacy.delta"),
    ("secagg-key-with-secagg-off", ["privacy.bits=16"], "privacy.bits"),
    (
        "online-probability-with-always-online",
        ["population.online_probability=0.5"],
        "population.online_probability",
    ),
    (
        "secagg-cohort-of-one",
        [
            "privacy.secure_aggregation=true",
            "server.clients_per_round=1",
            "server.over_selection=1.0",
            "server.min_completed=1",
        ],
        "privacy.secure_aggregation",
    ),
    (
        "secagg-more-neighbours-than-cohort",
        ["privacy.secure_aggregation=true", "privacy.neighbours=40"],
        "privacy.neighbours",
    ),
    (
        "dp-budget-below-one-round",
        ["privacy.enabled=true", "privacy.target_epsilon=1e-6"],
        "privacy.target_epsilon",
    ),
    ("name-climbs-out", ["experiment.name='../..'"], "experiment.name"),
    ("name-absolute", ["experiment.name='/tmp/elsewhere'"], "experiment.name"),
    ("name-with-newline", ['experiment.name="a\\nb"'], "experiment.name"),
    ("name-with-nul", ['experiment.name="a\\u0000b"'], "experiment.name"),
    ("name-empty", ["experiment.name=''"], "experiment.name"),
    (
        "address-that-refuses",
        ["runtime.backend='ray'", "runtime.address='127.0.0.1:1'"],
        "runtime.address",
    ),
]


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def _one_line_exit_2(args: list[str], capsys: pytest.CaptureFixture[str], start: str) -> str:
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fedsim: error: {start}"), lines[0]
    return lines[0]


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    return write(tmp_path / "small.toml", SMALL)


@pytest.mark.parametrize(
    ("sets", "start"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES]
)
def test_a_bad_value_is_one_line_exit_2_and_nothing_is_written(
    experiment: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sets: list[str],
    start: str,
) -> None:
    before = _tree(tmp_path)
    args = ["run", str(experiment), "--out", str(tmp_path / "out"), "-q"]
    for s in (*QUICK, *sets):
        args += ["--set", s]
    _one_line_exit_2(args, capsys, start)
    assert _tree(tmp_path) == before


def test_a_name_that_climbs_out_writes_nothing_anywhere_even_by_default(
    experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    args = ["run", str(experiment), "-q", "--set", "experiment.name='../../escaped'"]
    _one_line_exit_2(args, capsys, "experiment.name")
    assert _tree(tmp_path) == before and not (tmp_path.parent / "escaped").exists()


# --- bad files and paths ----------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    exp = write(tmp_path / "small.toml", SMALL)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "summary.json").write_text('{"my": "own results"}\n')
    (user / "clients.csv").write_text("name,phone\nann,1\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    (tmp_path / "syntax.toml").write_text("[server\nrounds = 3\n")
    (tmp_path / "latin1.toml").write_bytes('[experiment]\nname = "caf\xe9"\n'.encode("latin-1"))
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    (tmp_path / "weights.csv").write_text(
        "speed,download_bandwidth,upload_bandwidth,weight\n1,1,1,1e308\n2,2,2,1e308\n"
    )
    (tmp_path / "huge.csv").write_text(
        "speed,download_bandwidth,upload_bandwidth,weight\n1e39,1,1,1\n"
    )
    csv_set = ["--set", "population.tiers=[]", "--set", "population.speed=100.0"]
    return [
        (
            "profiles-weights-sum-infinite",
            ["run", str(exp), *csv_set, "--set", "population.profiles_csv='weights.csv'"],
            "population.profiles_csv",
        ),
        (
            "profiles-speed-overflows-float32",
            ["run", str(exp), *csv_set, "--set", "population.profiles_csv='huge.csv'"],
            "population.profiles_csv",
        ),
        ("out-is-a-file", ["run", str(exp), "--out", str(a_file)], str(a_file)),
        ("out-under-a-file", ["run", str(exp), "--out", str(a_file / "run")], str(a_file / "run")),
        ("out-is-the-users-folder", ["run", str(exp), "--out", str(user)], str(user)),
        ("out-cannot-be-created", ["run", str(exp), "--out", "/proc/fedsim-run"], "/proc"),
        ("config-missing", ["run", str(tmp_path / "none.toml")], str(tmp_path / "none.toml")),
        ("config-is-a-folder", ["run", str(empty_folder)], str(empty_folder)),
        ("config-syntax", ["run", str(tmp_path / "syntax.toml")], str(tmp_path / "syntax.toml")),
        ("config-not-utf8", ["run", str(tmp_path / "latin1.toml")], str(tmp_path / "latin1.toml")),
        ("resume-a-missing-folder", ["run", "--resume", str(tmp_path / "nope")], str(tmp_path)),
        ("resume-a-folder-not-a-run", ["run", "--resume", str(user)], str(user)),
        ("resume-with-out", ["run", "--resume", str(user), "--out", str(user)], "--out"),
        ("set-without-equals", ["run", str(exp), "--set", "server.rounds"], "--set"),
    ]


_FILE_CASES = [
    "profiles-weights-sum-infinite",
    "profiles-speed-overflows-float32",
    "out-is-a-file",
    "out-under-a-file",
    "out-is-the-users-folder",
    "out-cannot-be-created",
    "config-missing",
    "config-is-a-folder",
    "config-syntax",
    "config-not-utf8",
    "resume-a-missing-folder",
    "resume-a-folder-not-a-run",
    "resume-with-out",
    "set-without-equals",
]


@pytest.mark.parametrize("case", _FILE_CASES)
def test_a_bad_path_or_file_is_one_line_exit_2_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch, case: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a default results/ folder would appear here
    cases = {c[0]: c for c in _bad_files(tmp_path)}
    assert set(cases) == set(_FILE_CASES)
    _, args, start = cases[case]
    before = _tree(tmp_path)
    _one_line_exit_2([*args, "-q"], capsys, start)
    assert _tree(tmp_path) == before


def test_names_become_one_path_component_and_round_trip_through_the_saved_config(
    experiment: Path, tmp_path: Path
) -> None:
    name = 'quote" back\\slash tab\tand é'
    with pytest.raises(fedsim.ConfigError, match="experiment.name: must not contain control"):
        fedsim.run(experiment, overrides=[f"experiment.name={json.dumps(name)}"])
    name = "quote\" and 'é' ∑ #[x] = y"
    out = tmp_path / "run"
    fedsim.run(experiment, overrides=[f"experiment.name={json.dumps(name)}", *QUICK], out_dir=out)
    from fedsim import config as config_mod

    assert config_mod.load(out / "config.toml").experiment.name == name
    assert rundir.default_out_dir(config_mod.load(out / "config.toml"), tmp_path).parent == (
        tmp_path / name
    )


# --- the run folder: claims and races ---------------------------------------------------------


@pytest.mark.slow
def test_two_racing_runs_on_one_folder_leave_exactly_one_runs_records(experiment, tmp_path):
    out = tmp_path / "race"
    rounds = 30
    sets = ["--set", f"server.rounds={rounds}", "--set", "runtime.checkpoint_every=5"]
    second_sets = [*sets, "--set", "experiment.seed=4"]  # a different run: its rows would differ
    first = spawn_run(str(experiment), "--out", str(out), *sets)
    second = spawn_run(str(experiment), "--out", str(out), *second_sets)
    errors = [finish(p)[1] for p in (first, second)]
    codes = [p.returncode for p in (first, second)]
    assert sorted(codes) == [0, 2], errors
    err = errors[codes.index(2)]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "already holds a run" in err or "another fedsim process is running" in err
    winner_seed = 3 if codes[0] == 0 else 4
    rows = pd.read_csv(out / "rounds.csv")
    assert rows["round"].tolist() == list(range(1, rounds + 1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == winner_seed and summary["rounds"] == rounds
    ckpt = checkpoint.load(out)
    assert ckpt.round == rounds and ckpt.state["config"]["experiment"]["seed"] == winner_seed
    reference = fedsim.run(
        experiment,
        overrides=[f"server.rounds={rounds}", f"experiment.seed={winner_seed}"],
        out_dir=tmp_path / "reference",
    )
    np.testing.assert_array_equal(ckpt.state["server"]["w"], reference.model)
    assert (out / "clients.csv").read_bytes() == (
        tmp_path / "reference" / "clients.csv"
    ).read_bytes()


def test_a_claim_rechecks_the_folder_once_it_holds_the_lock(experiment, tmp_path, monkeypatch):
    out = tmp_path / "run"
    fedsim.run(experiment, overrides=list(QUICK), out_dir=out)
    before = _tree(out)
    # As if the other run committed its config.toml between the first check and the lock.
    real = rundir.check_out_dir
    calls = []

    def first_check_sees_nothing(path, *, resume=False):
        calls.append(path)
        if len(calls) == 1:
            return rundir.FolderState.EMPTY
        return real(path, resume=resume)

    monkeypatch.setattr(rundir, "check_out_dir", first_check_sees_nothing)
    with pytest.raises(fedsim.ConfigError, match="already holds a run"):
        rundir.claim(out)
    assert len(calls) == 2 and _tree(out) == before


def test_a_start_that_fails_after_its_claim_removes_the_folder_it_created(experiment, tmp_path):
    out = tmp_path / "deep" / "run"

    def stop(record):
        raise KeyboardInterrupt

    held = rundir.claim(out)
    assert (out / "checkpoint" / "lock").is_file()
    held.release()
    assert not (tmp_path / "deep").exists(), "nothing committed: the created folders went"
    with pytest.raises(KeyboardInterrupt):
        fedsim.run(experiment, overrides=list(QUICK), out_dir=out, on_round=stop)
    assert (out / "config.toml").is_file(), "a started run keeps its folder to be resumed"


# --- tampering ----------------------------------------------------------------------------


@pytest.fixture
def interrupted(experiment: Path, tmp_path: Path) -> Path:
    """A run stopped in round 6 of 9, checkpointed at round 3 (records up to round 6)."""
    out = tmp_path / "run"

    def stop(record):
        if record["round"] == 6:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        fedsim.run(
            experiment,
            overrides=["server.rounds=9", "runtime.checkpoint_every=3"],
            out_dir=out,
            on_round=stop,
        )
    assert checkpoint.load(out).round == 3
    return out


def _edit_state(out: Path, edit) -> None:
    path = checkpoint.state_path(out)
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state, indent=1))


TAMPERING = {
    "round-number": (lambda out: _edit_state(out, lambda s: s.update(round=2)), "state.json"),
    "records-offset": (
        lambda out: _edit_state(out, lambda s: s["records"].update({"rounds.csv": 10})),
        "state.json",
    ),
    "config-in-state": (
        lambda out: _edit_state(out, lambda s: s["config"]["training"].update(learning_rate=9.0)),
        "state.json",
    ),
    "state-not-json": (
        lambda out: checkpoint.state_path(out).write_text("{not json"),
        "state.json",
    ),
    "state-of-another-format": (
        lambda out: checkpoint.state_path(out).write_text('{"format": 1, "round": 6}'),
        "state.json",
    ),
    "model-removed": (
        lambda out: next((out / "checkpoint").glob("model-*.npz")).unlink(),
        "model-000003.npz",
    ),
    "rounds-edited": (
        lambda out: (out / "rounds.csv").write_text(
            (out / "rounds.csv").read_text().replace("\n1,", "\n7,", 1)
        ),
        "rounds.csv",
    ),
    "clients-truncated": (lambda out: os.truncate(out / "clients.csv", 100), "clients.csv"),
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_a_tampered_checkpoint_or_record_is_refused_naming_the_file(
    interrupted: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    tamper, name = TAMPERING[how]
    tamper(interrupted)
    before = _tree(interrupted)
    line = _one_line_exit_2(["run", "--resume", str(interrupted), "-q"], capsys, str(interrupted))
    assert name in line
    assert _tree(interrupted) == before


def test_resuming_a_finished_run_changes_nothing_and_says_so(experiment, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(experiment), "--out", str(out), "-q", "--set", *QUICK]) == 0
    capsys.readouterr()
    before = _tree(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    time.sleep(0.01)
    assert cli.main(["run", "--resume", str(out), "-q"]) == 0
    assert "had already finished (3 rounds); nothing changed" in capsys.readouterr().out
    assert _tree(out) == before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
    # Its records are still checked against the checkpoint.
    rounds = out / "rounds.csv"
    rounds.write_text(rounds.read_text().replace("\n2,", "\n5,", 1))
    line = _one_line_exit_2(["run", "--resume", str(out), "-q"], capsys, str(rounds))
    assert "checksum mismatch" in line


# --- faults and rejections ----------------------------------------------------------------


def test_updates_rejected_by_the_norm_bound_are_reported_as_rejected_not_diverged(experiment):
    result = fedsim.run(experiment, overrides=[*QUICK, "server.max_update_norm=1e-9"])
    rounds = result.rounds
    assert rounds["rejected"].tolist() == rounds["reporting"].tolist()
    assert (rounds["reporting"] > 0).all() and rounds["failed"].all()
    assert result.summary["rejected_updates"] == int(rounds["reporting"].sum())
    # No update was applied: the model is still the initial one.
    exp = prepare(result.config)
    np.testing.assert_array_equal(result.model, exp.model.init(result.config.experiment.seed))


def test_more_ray_workers_than_cpus_is_refused_instead_of_waiting_forever(ray_session, tmp_path):
    cpus = int(ray_session.cluster_resources()["CPU"])
    cfg = small_config("runtime.backend='ray'", f"runtime.workers={cpus + 1}")
    with pytest.raises(fedsim.ConfigError, match=f"runtime.workers: {cpus + 1} workers need"):
        fedsim.run(cfg, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_cluster_address_that_does_not_answer_as_ray_is_refused_in_bounded_time():
    import socket
    import threading

    from fedsim.runtime.address import probe_address

    with socket.socket() as silent, socket.socket() as chatty:
        for s in (silent, chatty):
            s.bind(("127.0.0.1", 0))
            s.listen(4)

        def answer_in_plain_text() -> None:
            conn, _ = chatty.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_in_plain_text, daemon=True).start()
        silent_at = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(fedsim.ConfigError, match=f"cannot reach '{silent_at}' .no answer"):
            probe_address(silent_at, timeout=0.5)
        assert time.monotonic() - t0 < 5
        chatty_at = f"ray://127.0.0.1:{chatty.getsockname()[1]}"
        with pytest.raises(fedsim.ConfigError, match="answers, but not as a Ray cluster"):
            probe_address(chatty_at, timeout=5)
    with pytest.raises(fedsim.ConfigError, match="runtime.address: cannot reach '127.0.0.1:1'"):
        probe_address("127.0.0.1:1", timeout=5)  # nothing listens: refused at once
