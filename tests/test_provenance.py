"""Every run says how it was made: code version, libraries, machine, BLAS, command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from helpers import small_config

import fedsim
from fedsim.provenance import git_commit, provenance

REPO = Path(__file__).resolve().parents[1]


def test_summary_records_commit_versions_machine_blas_and_command(tmp_path):
    fedsim.run(small_config("server.rounds=1"), out_dir=tmp_path / "run")
    p = json.loads((tmp_path / "run" / "summary.json").read_text())["provenance"]
    assert p["versions"]["numpy"] and p["versions"]["ray"] and p["python"].count(".") == 2
    assert p["cpu"] and p["cpu_count"] >= 1
    assert p["training_blas_threads"] == 1
    assert isinstance(p["command"], list) and p["command"]
    if (REPO / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert p["fedsim_commit"].removesuffix("+dirty") == head


def test_provenance_is_json_and_names_the_command_it_is_given():
    p = provenance(["fedsim", "run", "x.toml"])
    assert json.loads(json.dumps(p))["command"] == ["fedsim", "run", "x.toml"]
    assert git_commit() is None or len(git_commit().removesuffix("+dirty")) == 40


def test_command_names_the_program_not_its_install_path_and_keeps_paths_relative(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    argv = ["/opt/venv/bin/fedsim", "run", str(tmp_path / "exp" / "a.toml"), "--out", "/elsewhere"]
    assert provenance(argv)["command"] == ["fedsim", "run", "exp/a.toml", "--out", "/elsewhere"]
    assert provenance(["/src/fedsim/cli/__main__.py", "run"])["command"] == ["fedsim", "run"]
