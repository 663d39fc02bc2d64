"""The floors of the benchmarks: the same FedAvg arithmetic as fedsim, in one plain numpy loop.

No framework, no scheduling, no stacking of clients, no heterogeneity: one client after the
other, one minibatch after the other. A simulator cannot do the same work in one process faster
than this except by doing it more cleverly; with several processes it can beat it.

Run one floor and print its per-round times as JSON:
``python -m fedsim.bench.floors CONFIG --rounds R [--threads T]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np

from fedsim import config as config_mod
from fedsim.bench.plain_loop import plain_fedavg
from fedsim.bench.probe import self_peak_rss
from fedsim.config import Config

Clients = Callable[[int], tuple[np.ndarray, np.ndarray]]


def softmax_sgd(
    w: np.ndarray, x: np.ndarray, y: np.ndarray, *, batch_size: int, learning_rate: float
) -> np.ndarray:
    """One epoch of minibatch SGD on softmax regression without bias, in data order."""
    w = w.copy()
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        z = xb @ w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1  # now d(loss)/dz times the batch size
        w -= learning_rate * (xb.T @ p) / len(yb)
    return w


def workload_client(k: int, w_true: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Client k of workload W, written out from the workload's definition."""
    rng = np.random.default_rng(1000 + k)
    x = rng.normal(size=(samples, w_true.shape[0])).astype(np.float32)
    y = np.argmax(x @ w_true + rng.gumbel(size=(samples, w_true.shape[1])), axis=1)
    return x, y


def softmax_round(
    w: np.ndarray,
    cohort: np.ndarray,
    clients: Clients,
    *,
    batch_size: int,
    learning_rate: float,
) -> np.ndarray:
    """One FedAvg round: every client of the cohort trains from w; sample-weighted mean."""
    total = np.zeros_like(w)
    weight = 0
    for k in cohort:
        x, y = clients(int(k))
        total += len(y) * softmax_sgd(w, x, y, batch_size=batch_size, learning_rate=learning_rate)
        weight += len(y)
    return total / weight


def softmax_floor(cfg: Config, rounds: int) -> tuple[list[float], np.ndarray]:
    """Workload W: per-round seconds and the final (D, K) model; cohorts from default_rng(1)."""
    opts = cfg.data.options
    w_true = np.random.default_rng(0).normal(size=(opts.num_features, opts.num_classes))
    n, k = cfg.population.num_clients, cfg.server.clients_per_round
    w = np.zeros((opts.num_features, opts.num_classes), np.float32)
    select = np.random.default_rng(1)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        cohort = select.choice(n, k, replace=False)
        w = softmax_round(
            w,
            cohort,
            lambda c: workload_client(c, w_true, opts.samples_per_client),
            batch_size=int(cfg.training.batch_size),
            learning_rate=cfg.training.learning_rate,
        )
        times.append(time.perf_counter() - t)
    return times, w


def mlp_floor(cfg: Config, rounds: int) -> tuple[list[float], list[np.ndarray]]:
    """A ReLU network (McMahan's 2NN for hidden = [200, 200]) trained with FedAvg, plainly."""
    from fedsim.runner import prepare

    ds = prepare(cfg).dataset
    widths = [int(np.prod(ds.input_shape)), *cfg.model.options.hidden, ds.num_classes]
    rng = np.random.default_rng(cfg.experiment.seed)
    params = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        bound = np.sqrt(3.0 * (1.0 if i == len(widths) - 2 else 2.0) / fan_in)
        params.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32))
        params.append(np.zeros(fan_out, np.float32))

    def step(local: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: np.float32) -> None:
        _mlp_step(local, x.reshape(len(y), -1), y, lr)

    return plain_fedavg(cfg, ds, params, step, rounds, rng)


def _mlp_step(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: np.float32) -> None:
    """One SGD step of mean cross-entropy, in place; params = [W1, b1, W2, b2, ...]."""
    acts = [x]
    layers = len(params) // 2
    for i in range(layers):
        a = acts[-1] @ params[2 * i] + params[2 * i + 1]
        if i < layers - 1:
            np.maximum(a, 0, out=a)
        acts.append(a)
    z = acts.pop()
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    delta = p / np.float32(len(y))
    for i in range(layers - 1, -1, -1):
        a_in = acts[i]
        grad_w = a_in.T @ delta
        grad_b = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ params[2 * i].T) * (a_in > 0)
        params[2 * i] -= lr * grad_w
        params[2 * i + 1] -= lr * grad_b


def run_floor(cfg: Config, rounds: int) -> list[float]:
    """Per-round seconds of the floor that matches the config's dataset and model."""
    if cfg.data.name == "softmax_bench":
        return softmax_floor(cfg, rounds)[0]
    if cfg.model.name == "mlp":
        return mlp_floor(cfg, rounds)[0]
    if cfg.model.name == "cnn" and cfg.model.options.backend == "numpy":
        from fedsim.bench.cnn_floor import cnn_floor

        return cnn_floor(cfg, rounds)[0]
    raise ValueError(f"no floor for dataset {cfg.data.name!r} with model {cfg.model.name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0, help="BLAS threads (0 = default)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = config_mod.load(args.config, args.set)
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    times = run_floor(cfg, args.rounds)
    print(json.dumps({"round_s": times, "peak_rss_bytes": self_peak_rss()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
