"""Small builders shared by the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from fedsim import config as config_mod

SMALL = """
[experiment]
name = "small"
seed = 3

[data]
dataset = "synthetic"
alpha = 0.5
beta = 0.5
max_samples = 300
eval_clients = 20

[population]
num_clients = 200
dropout_rate = 0.1
compute_jitter = 0.3
[[population.tiers]]
name = "slow"
weight = 0.6
[[population.tiers]]
name = "fast"
weight = 0.4
[population.speed]
dist = "tiers"
values = [60.0, 400.0]

[model]
name = "softmax"

[training]
local_epochs = 2
batch_size = 10
learning_rate = 0.05

[server]
rounds = 3
clients_per_round = 20
over_selection = 1.2
deadline_s = 8.0
straggler_policy = "partial"
min_completed = 2

[runtime]
backend = "local"
progress = false
"""


def small_config(*overrides: str) -> config_mod.Config:
    raw = config_mod.apply_overrides(tomllib.loads(SMALL), list(overrides))
    return config_mod.from_dict(raw)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


REPO = Path(__file__).resolve().parents[1]
# Longest wait for a child `fedsim run` (seconds): generous for two loaded cores, finite so
# that a hung child fails its test instead of hanging the suite.
DEADLINE_S = 240.0


def spawn_run(*args: str) -> subprocess.Popen:
    """``fedsim run ARGS -q`` as a child in its own session (so what it starts can be ended)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", *args, "-q"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    """Wait (at most DEADLINE_S) for a child to end, then end what its session left."""
    try:
        out, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    end_session(proc.pid)
    return out, err


def end_session(sid: int) -> None:
    """SIGKILL the live processes of session ``sid`` (what a killed run left behind)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
