"""Federated averaging with the loop in your hands: build a process, initialize, call next.

The image-classification example in the shape TensorFlow Federated's tutorials made familiar
(softmax regression, clients run SGD, the server applies the mean update with SGD), on
Fashion-MNIST split across 100 non-IID clients. Run it with

    python experiments/notebook_style.py

Each round the loop picks 10 clients itself, ``process.next`` trains them (the same engine as
``fedsim run``, in this process; call ``fedsim.init(workers=2)`` first for Ray workers) and
returns the new state and the round's metrics.
"""

from __future__ import annotations

import numpy as np

import fedsim
from fedsim.learning import SGD

ROUNDS = 10
CLIENTS_PER_ROUND = 10


def main() -> None:
    data = fedsim.data.load(
        "fashion_mnist",
        partition={"scheme": "dirichlet", "alpha": 0.5},
        num_clients=100,
        seed=0,
    )
    process = fedsim.learning.build_weighted_fed_avg(
        model_fn="softmax",
        client_optimizer_fn=SGD(learning_rate=0.02),
        server_optimizer_fn=SGD(learning_rate=1.0),
        data=data,
        training={"local_epochs": 5, "batch_size": 20},
    )
    state = process.initialize()
    rng = np.random.default_rng(0)
    for round_num in range(1, ROUNDS + 1):
        clients = rng.choice(data.client_ids, CLIENTS_PER_ROUND, replace=False)
        state, metrics = process.next(state, clients)
        print(f"round {round_num:2d}, metrics={metrics}")
    final = fedsim.learning.evaluate(state, data)
    print(f"test accuracy after {state.round} rounds: {final['accuracy']:.4f}")


if __name__ == "__main__":
    main()
