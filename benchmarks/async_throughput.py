"""Client updates per wall second, asynchronous (FedBuff) vs synchronous mode, one invocation.

Both modes run the heterogeneous population and model of experiments/async (sync_fedavg.toml
and fedbuff.toml; the latter also with K = 100, the former also without over-selection) for
about the same number of client updates, without evaluation until the last step, taking turns
--repeat times; the table gives medians and the ratios to the first row. Throughput counts the
updates that reached the server (rounds.csv ``reporting``) and the samples they were trained on
(clients.csv ``num_samples * epochs_done``) over the run's wall time (summary.json
``wall_time_s``: rounds, training, aggregation and records).

Usage: python benchmarks/async_throughput.py [--updates 2000] [--repeat 3]
                                             [--backend local] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import fedsim

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "async"

RUNS = {  # name: (config, client updates per round or step, overrides)
    "sync FedAvg, 100 of 130 per round": ("sync_fedavg.toml", 100, []),
    "sync FedAvg, 100 of 100 per round": ("sync_fedavg.toml", 100, ["server.over_selection=1.0"]),
    "async FedBuff, K=10, concurrency 100": ("fedbuff.toml", 10, []),
    "async FedBuff, K=100, concurrency 100": ("fedbuff.toml", 100, ["async.buffer_size=100"]),
}


def throughput(config: str, rounds: int, extra: list[str], a: argparse.Namespace) -> tuple:
    """(client updates per wall second, trained samples per wall second) of one run."""
    result = fedsim.run(
        EXPERIMENTS / config,
        overrides=[
            f"server.rounds={rounds}",
            "server.eval_every=0",
            f"runtime.backend='{a.backend}'",
            f"runtime.workers={a.workers}",
            *extra,
        ],
    )
    wall = result.summary["wall_time_s"]
    c = result.clients
    used = c[(c["epochs_done"] > 0) & ~c["rejected"]]
    samples = float((used["num_samples"] * used["epochs_done"]).sum())
    return float(result.rounds["reporting"].sum()) / wall, samples / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", choices=["local", "ray"], default="local")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    throughput("sync_fedavg.toml", 1, [], a)  # warm-up: Ray's start is nobody's throughput
    got: dict[str, list[tuple]] = {name: [] for name in RUNS}
    for _ in range(a.repeat):
        for name, (config, per_step, extra) in RUNS.items():
            got[name].append(throughput(config, a.updates // per_step, extra, a))
    ups = {name: statistics.median(u for u, _ in v) for name, v in got.items()}
    sps = {name: statistics.median(s for _, s in v) for name, v in got.items()}
    base = next(iter(RUNS))
    workers = a.workers if a.backend == "ray" else 1
    print(f"backend {a.backend}, {workers} worker(s), ~{a.updates} client updates per run, "
          f"median of {a.repeat}")  # fmt: skip
    print("| mode | updates / wall s | ratio | samples / wall s | ratio | runs (updates/s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, v in got.items():
        print(
            f"| {name} | {ups[name]:.0f} | {ups[name] / ups[base]:.2f} | {sps[name]:.0f} | "
            f"{sps[name] / sps[base]:.2f} | {', '.join(f'{u:.0f}' for u, _ in v)} |"
        )


if __name__ == "__main__":
    main()
