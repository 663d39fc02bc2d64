"""Many machines: a two-node Ray cluster on this machine gives the single-node numbers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL, small_config, write

import fedsim
from fedsim import checkpoint

# Runs in its own process: the test session already holds a local Ray instance, and a
# cluster needs a Ray of its own. One CPU per node, one CPU per worker: the two workers can
# only be placed one on each node.
SCRIPT = """
import json, sys
import ray
from ray.cluster_utils import Cluster
import fedsim

config, out = sys.argv[1], sys.argv[2]
node = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}
cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
try:
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    result = fedsim.run(
        config,
        overrides=[
            "runtime.backend='ray'",
            f"runtime.address='{cluster.address}'",
            "runtime.workers=2",
            "faults.kill_worker_at_round=2",
        ],
        out_dir=out,
    )
    ips = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
    print(json.dumps({"cluster_nodes": len(ray.nodes()), "node_ips": ips, **result.summary}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""

TIMING_COLUMNS = {"server_s", "train_s", "wall_time_s"}


def _records(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING_COLUMNS]
    return [[row[i] for i in keep] for row in rows]


@pytest.mark.slow
def test_two_node_cluster_run_equals_the_single_node_run(tmp_path):
    config = write(tmp_path / "small.toml", SMALL)
    out = tmp_path / "cluster"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(config), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["cluster_nodes"] == 2
    assert summary["node_ips"] == ["127.0.0.1"], "the test cluster stays on loopback"
    assert summary["nodes"] == 2, "the workers ran on both machines"
    assert summary["workers"] == 2
    assert summary["worker_restarts"] == 1, "a worker was killed and replaced on the cluster"

    local = tmp_path / "local"
    single = fedsim.run(small_config(), out_dir=local)
    assert single.summary["nodes"] == 1
    assert _records(out / "rounds.csv") == _records(local / "rounds.csv")
    assert (out / "clients.csv").read_bytes() == (local / "clients.csv").read_bytes()
    np.testing.assert_array_equal(checkpoint.load(out).state["server"]["w"], single.model)
