"""Small builders shared by the tests."""

from __future__ import annotations

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
