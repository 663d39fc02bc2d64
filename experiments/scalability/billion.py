"""A billion clients against a million: round time, start-up and every process's peak memory.

Runs ``fedsim run experiments/scalability/population_1b.toml`` (workload W's data, a keyed
tiered population with Bernoulli availability and dropout, 10,000 clients per round) at
1,000,000,000 clients and at 1,000,000, and the 1M config with today's stored columns
(``population.draws = "columns"``), taking turns ``--repeat`` times in one invocation (each
repeat in a rotated order). For each
run: the steady-state round time (median ``wall_time_s`` of the rounds between the first and the
last, which warm up and evaluate), the start-up (from the command's launch to the start of its
first round: imports, Ray, dataset, population, actors; seen as the first row of rounds.csv,
which is flushed each round, within the 0.2 s poll), the wall time outside the rounds (start-up
plus the final evaluation, records and shut-down), the population's own build and first
selection in this process, and the peak resident memory
(``VmHWM``, read from /proc while the run lives) of every process of the run's tree: the driver,
the server actor, the workers and Ray's own daemons. Writes ``runs.csv``, ``summary.csv``,
``machine.json`` and prints the Markdown table of the README.

Usage: python experiments/scalability/billion.py [--repeat 2] [--rounds 6] [--workers 2]
                                                 [--backends ray,local]
                                                 [--out results/scalability/billion]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from fedsim.bench.probe import peak_rss, process_tree
from fedsim.config import load
from fedsim.population import Population
from fedsim.provenance import provenance
from fedsim.tables import markdown_table

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "scalability" / "population_1b.toml"
VARIANTS = {  # name: overrides of the 1B config
    "1M, stored columns": ["population.num_clients=1000000", "population.draws='columns'"],
    "1M, keyed": ["population.num_clients=1000000"],
    "1B, keyed": [],
}


def cmdline(pid: int) -> str:
    """A process's command line ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def role(pid: int) -> str:
    """What a process of the run is: driver, server actor, worker, or a Ray daemon."""
    cmd = cmdline(pid)
    if "fedsim.cli" in cmd:
        return "driver"
    if cmd.startswith("ray::"):
        name = cmd.split()[0][len("ray::") :]
        if name.startswith("ServerActor"):
            return "server actor"
        if name.startswith(("TrainWorker", "IDLE")):
            return f"worker ({name})"
        return f"ray daemon ({name})"  # Ray's own agents (dashboard, runtime environments)
    return f"ray daemon ({Path(cmd.split()[0]).name})" if cmd else "other"


def rows_written(path: Path) -> bool:
    """True once the CSV at ``path`` holds a row under its header."""
    try:
        return path.read_bytes().count(b"\n") >= 2
    except OSError:
        return False


def run_once(overrides: list[str], backend: str, a: argparse.Namespace) -> dict:
    """One ``fedsim run``: its round times, start-up and every process's peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        sets = [
            f"server.rounds={a.rounds}",
            f"runtime.backend='{backend}'",
            f"runtime.workers={a.workers}",
            *overrides,
        ]
        cmd = [sys.executable, "-m", "fedsim.cli", "run", str(CONFIG), "-q", "--out", str(out)]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peaks: dict[int, tuple[str, int]] = {}
        first_row = None  # when rounds.csv (flushed each round) first held a round
        while child.poll() is None:
            if first_row is None and rows_written(out / "rounds.csv"):
                first_row = time.perf_counter() - t0
            for pid in process_tree(child.pid):
                seen = peak_rss(pid)
                kib = seen[1] // 1024 if seen else 0
                if kib:
                    # Ray names a process after the actor it hosts only once it hosts one.
                    known = peaks.get(pid, ("", 0))[0]
                    name = known if known.startswith(("server", "worker (Train")) else role(pid)
                    peaks[pid] = (name, max(kib, peaks.get(pid, ("", 0))[1]))
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        err = child.stderr.read().decode() if child.stderr else ""
        if child.returncode != 0:
            raise SystemExit(f"fedsim run failed ({child.returncode}): {err[-2000:]}")
        rounds = pd.read_csv(out / "rounds.csv")
        summary = json.loads((out / "summary.json").read_text())
    steady = rounds["wall_time_s"].iloc[1:-1]
    return {
        "round_s": float(steady.median()),
        "server_s": float(rounds["server_s"].iloc[1:-1].median()),
        "startup_s": (first_row or elapsed) - float(rounds["wall_time_s"].iloc[0]),
        "outside_rounds_s": elapsed - float(summary["wall_time_s"]),
        "elapsed_s": elapsed,
        "processes": sorted(peaks.values(), key=lambda x: -x[1]),
    }


def population_startup(overrides: list[str]) -> float:
    """Seconds to build the population and select one cohort, in this process."""
    cfg = load(CONFIG, overrides)
    t0 = time.perf_counter()
    pop = Population(cfg.population, cfg.experiment.seed)
    pop.select(1, 0.0, cfg.server.clients_per_round)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backends", default="ray,local", help="comma-separated, taking turns")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "scalability" / "billion")
    a = ap.parse_args()
    rows, load_before = [], os.getloadavg()
    variants = list(VARIANTS.items())
    for rep, backend, turn in itertools.product(
        range(a.repeat), a.backends.split(","), range(len(variants))
    ):
        # Each repeat starts one variant later, so no variant always runs first or last.
        name, overrides = variants[(turn + rep) % len(variants)]
        r = run_once(overrides, backend, a)
        build_s = population_startup(overrides)
        for proc, kib in r["processes"]:
            rows.append(
                {
                    "backend": backend,
                    "variant": name,
                    "repeat": rep,
                    "round_s": r["round_s"],
                    "server_s": r["server_s"],
                    "startup_s": r["startup_s"],
                    "outside_rounds_s": r["outside_rounds_s"],
                    "population_build_s": build_s,
                    "process": proc,
                    "peak_mib": kib / 1024,
                }
            )
        top = r["processes"][0]
        print(f"{backend}, {name} #{rep}: {r['round_s']:.3f} s/round, "
              f"start-up {r['startup_s']:.1f} s, largest {top[0]} {top[1] / 1024:.0f} MiB",
              flush=True)  # fmt: skip
    runs = pd.DataFrame(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(a.out / "runs.csv", index=False, float_format="%.4g")
    summary = summarise(runs)
    summary.to_csv(a.out / "summary.csv", index=False, float_format="%.4g")
    machine = {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        **provenance(sys.argv),
    }
    (a.out / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    cells = [[f"{v:.3g}" if isinstance(v, float) else v for v in row] for row in summary.values]
    print(markdown_table(list(summary.columns), cells))


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per backend and variant: medians over repeats, the round time's ratio to the 1M
    keyed run's (ratio of the medians, and median of the ratios of runs taken in turn), and the
    largest process of each kind."""
    out = []
    for (backend, name), v in runs.groupby(["backend", "variant"], sort=False):
        per_run = v.groupby("repeat").first()
        base = runs[(runs["backend"] == backend) & (runs["variant"] == "1M, keyed")]
        base_run = base.groupby("repeat").first()["round_s"]
        daemon = v["process"].str.startswith("ray daemon")
        out.append(
            {
                "backend": backend,
                "variant": name,
                "round_s": per_run["round_s"].median(),
                "ratio_to_1M_keyed": per_run["round_s"].median() / base_run.median(),
                "ratio_in_turn": (per_run["round_s"] / base_run).median(),
                "select_plan_s": per_run["server_s"].median(),
                "startup_s": per_run["startup_s"].median(),
                "population_build_s": per_run["population_build_s"].median(),
                "driver_mib": v[v["process"] == "driver"]["peak_mib"].max(),
                "server_actor_mib": v[v["process"] == "server actor"]["peak_mib"].max(),
                "worker_max_mib": v[v["process"].str.startswith("worker")]["peak_mib"].max(),
                "largest_fedsim_mib": v[~daemon]["peak_mib"].max(),
                "largest_ray_daemon_mib": v[daemon]["peak_mib"].max(),
            }
        )
    return pd.DataFrame(out)


if __name__ == "__main__":
    main()
