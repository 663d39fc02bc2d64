"""Training time per sample of dense networks against the number of clients stacked in a step.

A stack of C clients trains in one call per step (``Model.loss_and_grad`` on (C, B, ...)
batches). Small models gain from large stacks (the per-call cost is shared); large ones lose
once the stack's parameters and gradients outgrow the CPU's caches. ``STACK_BYTES`` in
``fedsim/models/base.py`` is set from this table. One BLAS thread, B = 10, 10 steps per client.

Usage: python benchmarks/stacking.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fedsim.memory import keep_freed_memory
from fedsim.models.mlp import DenseNetwork

STACKS = (1, 2, 4, 8, 20, 40)
MODELS = [((60,), ()), ((784,), ()), ((784,), (32,)), ((784,), (64,)), ((784,), (200,)),
          ((784,), (200, 200))]  # fmt: skip


def us_per_sample(model: DenseNetwork, stack: int, repeat: int, clients: int = 40) -> float:
    """Best of ``repeat`` timings of 10 SGD steps of B = 10 for ``clients`` clients."""
    rng = np.random.default_rng(0)
    steps, batch = 10, 10
    x = rng.random((clients, steps * batch, *model.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, (clients, steps * batch))
    lr = np.float32(0.05)

    def run() -> None:
        for s in range(0, clients, stack):
            w = np.repeat(model.init(0)[None], min(stack, clients - s), axis=0)
            for b in range(0, steps * batch, batch):
                _, g = model.loss_and_grad(w, x[s : s + stack, b : b + batch],
                                           y[s : s + stack, b : b + batch])  # fmt: skip
                g *= lr
                w -= g

    run()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best / (clients * steps * batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()  # as in a training worker
    stacks = " | ".join(f"C={c} (us/sample)" for c in STACKS)
    print(f"| input | hidden | parameters | {stacks} |")
    print("| --- " * (3 + len(STACKS)) + "|")
    with threadpool_limits(1):
        for shape, hidden in MODELS:
            model = DenseNetwork(shape, 10, hidden, bias=bool(hidden))
            cells = [f"{us_per_sample(model, c, args.repeat):.2f}" for c in STACKS]
            print(f"| {shape[0]} | {list(hidden)} | {model.num_parameters:,} | "
                  + " | ".join(cells) + " |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
