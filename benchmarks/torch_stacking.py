"""Per-client time of a torch model's gradient, one client at a time against a vmapped stack.

For the built-in torch ``softmax``, ``mlp`` (2NN) and ``cnn`` on 28x28 inputs at B=10, one
thread: a stack of 1 and of 10 clients computed by ``stacking = "loop"`` and ``"vmap"``,
alternated so machine noise hits both alike; also whether a vmapped client's gradient is
bit-identical to the same client computed alone. This is what ``choose_stacking`` rests on.

Usage: python benchmarks/torch_stacking.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fedsim.models.torch_backend import TorchModel
from fedsim.registry import MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("| model | clients | loop (ms/client) | vmap (ms/client) | vmap client = alone |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("softmax", "mlp", "cnn"):
        entry = MODELS.get(name)
        base = entry.factory(entry.options(backend="torch"), (28, 28), 10)
        models = {
            mode: TorchModel(base.builder, (28, 28), 10, init=base.init, stacking=mode)
            for mode in ("loop", "vmap")
        }
        for clients in (1, 10):
            w = np.stack([base.init(s) for s in range(clients)])
            w += rng.normal(0, 0.01, w.shape).astype(np.float32)
            x = rng.random((clients, 10, 28, 28), dtype=np.float32)
            y = rng.integers(0, 10, (clients, 10))
            times: dict[str, list[float]] = {"loop": [], "vmap": []}
            for m in models.values():
                m.loss_and_grad(w, x, y)  # warm-up
            for _ in range(args.repeat):
                for mode, m in models.items():
                    t0 = time.perf_counter()
                    _, grad = m.loss_and_grad(w, x, y)
                    times[mode].append((time.perf_counter() - t0) / clients * 1e3)
            alone = models["vmap"].loss_and_grad(w[-1:], x[-1:], y[-1:])[1][0]
            same = bool(np.array_equal(alone, grad[-1]))
            loop, vmap = (float(np.median(times[k])) for k in ("loop", "vmap"))
            print(f"| {name} | {clients} | {loop:.2f} | {vmap:.2f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
