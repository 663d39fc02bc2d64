"""McMahan's CNN with the PyTorch backend, against a plain torch loop, numpy and Flower, one run.

Workload A (``fedsim/bench/workloads/torch_cnn_10x600.toml``): 10 clients of 600 Fashion-MNIST
examples, all trained every round, E=1, B=10, data order, one thread. Times per round of
fedsim with the torch backend and with the numpy backend (one local worker) and of a plain
torch loop doing the same work: for each client, load the global model, run SGD with
``torch.optim.SGD`` over its batches, add its sample-weighted parameters; then average. The
plain loop runs one round after each fedsim round, in the same process, so that the load of a
shared machine falls on both alike.

Workload B (``fedsim/bench/workloads/torch_cnn_100x60.toml``): 100 clients of 60 examples per
round. fedsim's torch backend with one local worker and with two Ray workers, against Flower's
simulation engine (``flower_torch_cnn.py``, two client actors) when ``--flower-python`` names
a Python with ``flwr[simulation]`` and torch.

A round's time is the time between the ends of successive rounds as the caller sees them; the
first round (start-up) and the last (fedsim evaluates after it) are left out, the median of
the others is reported. Usage:
python benchmarks/torch_cnn.py [--rounds 4] [--flower-python PATH] [--out results/bench/torch_cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

import fedsim
from fedsim import config as config_mod
from fedsim.runner import prepare

HERE = Path(__file__).resolve().parent
CONFIG_A = HERE.parent / "fedsim/bench/workloads/torch_cnn_10x600.toml"
CONFIG_B = HERE.parent / "fedsim/bench/workloads/torch_cnn_100x60.toml"


def fedsim_rounds(
    path: Path, rounds: int, *sets: str, between: Callable[[], None] | None = None
) -> list[float]:
    """Seconds of each round of a fedsim run, as seen by the caller; ``between`` runs after
    each round, outside the timed span (to interleave the reference with it)."""
    cfg = config_mod.load(path, [f"server.rounds={rounds}", *sets])
    starts, times = [time.perf_counter()], []

    def on_round(record: dict) -> None:
        times.append(time.perf_counter() - starts[-1])
        if between is not None:
            between()
        starts.append(time.perf_counter())

    fedsim.run(cfg, on_round=on_round)
    return times


class PlainTorch:
    """FedAvg as a plain torch loop over the config's clients, one round per call."""

    def __init__(self, path: Path) -> None:
        exp = prepare(config_mod.load(path))
        self.model, self.batch = exp.model, int(exp.cfg.training.batch_size)
        self.module = self.model.builder()
        self.opt = torch.optim.SGD(self.module.parameters(), lr=exp.cfg.training.learning_rate)
        self.w = self.model.init(exp.cfg.experiment.seed)
        data = exp.dataset
        parts = [data.client_train(k) for k in range(data.num_clients)]
        self.clients = [(torch.from_numpy(x.copy()), torch.from_numpy(y)) for x, y in parts]
        self.times: list[float] = []

    def round(self) -> None:
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        acc = np.zeros(self.model.num_parameters, dtype=np.float64)
        for x, y in self.clients:
            self.model.load_into(self.w, self.module)
            for i in range(0, len(y), self.batch):
                self.opt.zero_grad()
                logits = self.module(x[i : i + self.batch])
                F.cross_entropy(logits, y[i : i + self.batch]).backward()
                self.opt.step()
            flat = torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])
            acc += len(y) * flat.numpy()
        self.w = (acc / sum(len(y) for _, y in self.clients)).astype(np.float32)
        self.times.append(time.perf_counter() - t0)


def flower_rounds(python: str, path: Path, rounds: int) -> list[float]:
    cfg = config_mod.load(path)
    args = [str(cfg.population.num_clients), str(cfg.partition.options.samples_per_client)]
    cmd = [python, str(HERE / "flower_torch_cnn.py"), *args, str(rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [float(line.split()[2]) for line in out.splitlines() if line.startswith("round ")]


def steady(times: list[float], last_evaluates: bool) -> float:
    """Median round time without the first (start-up) and, for fedsim, the last (evaluation)."""
    middle = times[1:-1] if last_evaluates else times[1:]
    return statistics.median(middle or times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--flower-python", default="")
    parser.add_argument("--out", default="results/bench/torch_cnn")
    parser.add_argument("--workloads", default="A,B", help="which workloads: A, B or A,B")
    args = parser.parse_args()
    r = args.rounds
    todo = set(args.workloads.split(","))
    rows: list[tuple[str, str, list[float], float]] = []

    def add(workload: str, what: str, times: list[float], last_evaluates: bool) -> None:
        rows.append((workload, what, times, steady(times, last_evaluates)))
        print(f"{workload} | {what} | {rows[-1][3]:.2f} s/round | {times}", flush=True)

    if "A" in todo:
        plain = PlainTorch(CONFIG_A)
        # One plain round after each fedsim round, in the same process: load hits both.
        times = fedsim_rounds(CONFIG_A, r, between=plain.round)
        add("A", "plain torch loop", plain.times, False)
        add("A", "fedsim torch, 1 worker", times, True)
        numpy_times = fedsim_rounds(CONFIG_A, r, "model.backend='numpy'")
        add("A", "fedsim numpy, 1 worker", numpy_times, True)
    if "B" in todo:
        ray = ("runtime.backend='ray'", "runtime.workers=2")
        add("B", "fedsim torch, 2 Ray workers", fedsim_rounds(CONFIG_B, r, *ray), True)
        if args.flower_python:
            flower = flower_rounds(args.flower_python, CONFIG_B, r - 1)
            add("B", "Flower, 2 actors", flower, False)
        add("B", "fedsim torch, 1 worker", fedsim_rounds(CONFIG_B, r), True)
    write(Path(args.out), rows, args)


def write(out: Path, rows: list, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ref = {w: dict((what, s) for ww, what, _, s in rows if ww == w) for w in ("A", "B")}
    base = {"A": "plain torch loop", "B": "fedsim torch, 2 Ray workers"}
    lines = ["| workload | run | s/round (steady) | vs reference |", "| --- | --- | --- | --- |"]
    for w, what, _, s in rows:
        lines.append(f"| {w} | {what} | {s:.2f} | {s / ref[w][base[w]]:.2f}x |")
    tag = args.workloads.replace(",", "")
    (out / f"table_{tag}.md").write_text("\n".join(lines) + "\n")
    runs = [{"workload": w, "run": what, "round_s": t, "steady_s": s} for w, what, t, s in rows]
    facts = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rounds": args.rounds,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "runs": runs,
    }
    (out / f"runs_{tag}.json").write_text(json.dumps(facts, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
