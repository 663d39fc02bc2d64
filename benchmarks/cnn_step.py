"""Time of one CNN gradient per sample: one client and one chunk at a time against one pass.

``Cnn.loss_and_grad`` computes clients one at a time and splits a batch into chunks of at most
``fedsim.models.cnn.GRAD_CHUNK`` samples. This script times it against a single forward and
backward pass over the whole stack of clients and samples (what the model did before), in the
same process, on one BLAS thread, alternating the two so machine noise hits both alike.

Usage: python benchmarks/cnn_step.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fedsim.models.cnn import Cnn

SHAPES = [(1, 10), (10, 10), (1, 600), (10, 600)]  # (clients, batch): B=10 steps and FedSGD


def one_pass(model: Cnn, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    out = np.empty_like(w)
    model._chunk_loss_and_grad(model.unflatten(w), x, y, y.shape[1], out)


def seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = Cnn((28, 28), 10)
    rng = np.random.default_rng(0)
    print("| clients x batch | one pass (ms/sample) | per client, chunked (ms/sample) | ratio |")
    print("| --- | --- | --- | --- |")
    with threadpool_limits(1):
        for clients, batch in SHAPES:
            w = np.stack([model.init(s) for s in range(clients)])
            x = rng.random((clients, batch, 28, 28), dtype=np.float32)
            y = rng.integers(0, 10, (clients, batch))
            model.loss_and_grad(w, x, y)  # warm-up
            whole, chunked = [], []
            for _ in range(args.repeat):
                whole.append(seconds(one_pass, model, w, x, y))
                chunked.append(seconds(model.loss_and_grad, w, x, y))
            a = float(np.median(whole)) / (clients * batch) * 1e3
            b = float(np.median(chunked)) / (clients * batch) * 1e3
            print(f"| {clients} x {batch} | {a:.2f} | {b:.2f} | {a / b:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
