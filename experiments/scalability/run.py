"""Time per round against cohort size, population size and number of workers.

Run from the repository root:  python experiments/scalability/run.py
Writes CSV and figures to results/scalability/ (see the README beside this file). Every point
runs in its own process (fedsim.bench.target, or the numpy floor), measured from outside for
peak memory; seconds per round are the median of the rounds after the first two.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# A checkout runs this without installing fedsim.
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedsim import config as config_mod  # noqa: E402
from fedsim.bench.harness import Run, machine, run_fedsim, run_floor  # noqa: E402

CONFIG = ROOT / "experiments" / "scalability" / "population_1m.toml"
COHORTS = (100, 300, 1_000, 3_000, 10_000)
POPULATIONS = (10_000, 100_000, 1_000_000)


def rounds_for(cohort: int) -> int:
    """Enough rounds for a steady state after two warm-up rounds, fewer for big cohorts."""
    return 10 if cohort <= 1_000 else 6 if cohort <= 3_000 else 5


def cohort_sweep(workers: str, repeat: int, with_floor: bool) -> list[dict[str, Any]]:
    rows = []
    for rep in range(repeat):
        for k in COHORTS:
            sets = [f"server.clients_per_round={k}"]
            run = run_fedsim("1M", CONFIG, rounds_for(k), workers, rep, sets)
            rows.append({"sweep": "cohort", "clients_per_round": k, "num_clients": 1_000_000,
                         **asdict(run)})  # fmt: skip
            _show(rows[-1])
            if with_floor:
                floor = run_floor("1M", CONFIG, 3, 1, rep, sets)
                rows.append({"sweep": "cohort", "clients_per_round": k, "num_clients": 1_000_000,
                             **asdict(floor)})  # fmt: skip
                _show(rows[-1])
    return rows


def population_sweep(workers: str, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for rep in range(repeat):
        for n in POPULATIONS:
            sets = ["server.clients_per_round=1000", f"population.num_clients={n}"]
            run = run_fedsim(f"N={n}", CONFIG, 10, workers, rep, sets)
            rows.append({"sweep": "population", "clients_per_round": 1000, "num_clients": n,
                         **asdict(run)})  # fmt: skip
            _show(rows[-1])
    return rows


def worker_sweep(counts: list[str], repeat: int) -> list[dict[str, Any]]:
    rows = []
    sets = ["server.clients_per_round=1000", "population.num_clients=10000"]
    for rep in range(repeat):
        for w in counts:
            run = run_fedsim("W2", CONFIG, 10, w, rep, sets)
            rows.append({"sweep": "workers", "clients_per_round": 1000, "num_clients": 10_000,
                         **asdict(run)})  # fmt: skip
            _show(rows[-1])
    return rows


def server_split(cohort: int, rounds: int) -> dict[str, float]:
    """Where a round's time goes, measured on the real server code in one process.

    Selection and training are timed by wrapping the population and the executor; the
    timeline is the rest of the server's selection phase, aggregation the rest of its training
    phase (cutting chunks, summing their results, the strategy's update).
    """
    from threadpoolctl import threadpool_limits

    from fedsim.runner import prepare
    from fedsim.runtime.executors import LocalExecutor
    from fedsim.runtime.server import Server
    from fedsim.runtime.work import train_spec

    cfg = config_mod.load(CONFIG, [f"server.clients_per_round={cohort}", "runtime.backend='local'"])
    exp = prepare(cfg)
    spent = {"select": 0.0, "train": 0.0}
    select = exp.population.select

    def timed_select(*args: Any) -> Any:
        t = time.perf_counter()
        out = select(*args)
        spent["select"] += time.perf_counter() - t
        return out

    class TimedExecutor(LocalExecutor):
        async def train(self, *args: Any) -> Any:
            t = time.perf_counter()
            out = await super().train(*args)
            spent["train"] += time.perf_counter() - t
            return out

    exp.population.select = timed_select  # type: ignore[method-assign]
    executor = TimedExecutor(exp.model, exp.dataset, train_spec(cfg, exp.strategy))
    server = Server(cfg, exp.dataset, exp.model, exp.strategy, exp.population, executor)
    parts: dict[str, list[float]] = {k: [] for k in ("selection", "timeline", "training",
                                                     "aggregation", "round")}  # fmt: skip
    with threadpool_limits(limits=1):
        for _ in range(rounds):
            spent.update(select=0.0, train=0.0)
            rec = asyncio.run(server.run_round()).record
            parts["selection"].append(spent["select"])
            parts["timeline"].append(rec["server_s"] - spent["select"])
            parts["training"].append(spent["train"])
            parts["aggregation"].append(rec["train_s"] - spent["train"])
            parts["round"].append(rec["wall_time_s"])
    return {k: statistics.median(v[1:]) for k, v in parts.items()}


def _show(row: dict[str, Any]) -> None:
    print(
        f"  {row['sweep']:10s} N={row['num_clients']:>9,} K={row['clients_per_round']:>6,} "
        f"{row['system']:6s} workers={row['workers']:>5s}: {row['steady_s']:.4f} s/round, "
        f"peak {row['peak_rss_mib']:.0f} MiB ({row['peak_process']})",
        flush=True,
    )


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over repetitions of each (sweep, system, workers, N, K) point."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["sweep"], r["system"], r["workers"], r["num_clients"], r["clients_per_round"])
        groups.setdefault(key, []).append(r)
    out = []
    for (sweep, system, workers, n, k), rs in groups.items():
        steady = statistics.median(r["steady_s"] for r in rs)
        out.append(
            {
                "sweep": sweep,
                "system": system,
                "workers": workers,
                "num_clients": n,
                "clients_per_round": k,
                "runs": len(rs),
                "s_per_round": steady,
                "us_per_client": 1e6 * steady / k,
                "server_s": statistics.median(r["server_s"] for r in rs),
                "train_s": statistics.median(r["train_s"] for r in rs),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                "peak_process": max(rs, key=lambda r: r["peak_rss_mib"])["peak_process"],
            }
        )
    return out


def plot(summary: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for system, style in (("fedsim", "o-"), ("floor", "s--")):
        pts = sorted(
            (r["clients_per_round"], r["s_per_round"])
            for r in summary
            if r["sweep"] == "cohort" and r["system"] == system
        )
        if pts:
            label = "fedsim" if system == "fedsim" else "numpy floor (one process)"
            ax.plot(*zip(*pts, strict=True), style, label=label)
    ref = sorted(
        (r["clients_per_round"], r["s_per_round"])
        for r in summary
        if r["sweep"] == "cohort" and r["system"] == "fedsim"
    )
    if ref:
        k0, t0 = ref[-1]
        xs = [k for k, _ in ref]
        ax.plot(xs, [t0 * k / k0 for k in xs], ":", color="grey", label="linear in cohort")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients per round (population 1,000,000)")
    ax.set_ylabel("seconds per round (steady state)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"time_vs_cohort.{ext}")
    plt.close(fig)

    pts = [r for r in summary if r["sweep"] == "workers"]
    if pts:
        fig, ax = plt.subplots(figsize=(5, 3.8))
        labels = [r["workers"] for r in pts]
        ax.bar(labels, [r["s_per_round"] for r in pts], color="tab:blue")
        floor = [r for r in summary if r["sweep"] == "workers-floor"]
        if floor:
            ax.axhline(floor[0]["s_per_round"], ls="--", color="grey", label="numpy floor")
            ax.legend()
        ax.set_xlabel("workers ('local' = in-process backend)")
        ax.set_ylabel("seconds per round, W2 (1,000 of 10,000)")
        fig.tight_layout()
        for ext in ("png", "svg"):
            fig.savefig(out / f"time_vs_workers.{ext}")
        plt.close(fig)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if rows:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "scalability"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["cohort", "population",
                        "workers", "split"])  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    counts = list(dict.fromkeys(["local", "1", "2", str(cpus)]))
    rows: list[dict[str, Any]] = []
    if "cohort" not in args.skip:
        rows += cohort_sweep(str(cpus), args.repeat, with_floor=True)
    if "population" not in args.skip:
        rows += population_sweep(str(cpus), args.repeat)
    if "workers" not in args.skip:
        rows += worker_sweep(counts, args.repeat)
        for rep in range(args.repeat):
            sets = ["server.clients_per_round=1000", "population.num_clients=10000"]
            floor: Run = run_floor("W2", CONFIG, 6, 1, rep, sets)
            rows.append({"sweep": "workers-floor", "clients_per_round": 1000,
                         "num_clients": 10_000, **asdict(floor)})  # fmt: skip
            _show(rows[-1])
    summary = summarise(rows)
    write_csv(out / "runs.csv", rows)
    write_csv(out / "summary.csv", summary)
    if "split" not in args.skip:
        split = server_split(10_000, 4)
        print("server split at 10,000 clients per round (in-process):", split)
        write_csv(out / "server_split.csv", [split])
    (out / "machine.json").write_text(json.dumps(machine(), indent=2) + "\n")
    plot(summary, out)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
