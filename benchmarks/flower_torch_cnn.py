"""Flower's simulation engine training McMahan et al.'s CNN (PyTorch) with FedAvg, as a reference.

Run from a virtual environment with ``flwr[simulation]``, numpy and torch (Flower pins its own
Ray). Usage: python flower_torch_cnn.py NUM_CLIENTS SAMPLES_PER_CLIENT ROUNDS [FMNIST_DIR]

Every client trains every round: one epoch of SGD, batch 10, learning rate 0.05, in data order,
on one torch thread; Flower runs one client actor per CPU. Client k holds Fashion-MNIST
training samples [k*n, (k+1)*n). Prints one line per round, ``round R s``, the time between
the ends of successive aggregations (the first is measured from the start of the simulation).
"""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

N, PER, R = (int(a) for a in sys.argv[1:4])
ROOT = Path(sys.argv[4] if len(sys.argv) > 4 else "/usr/share/datasets/fashion-mnist")


def _idx(name: str) -> np.ndarray:
    raw = gzip.decompress((ROOT / name).read_bytes())
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


X = _idx("train-images-idx3-ubyte.gz")[: N * PER].astype(np.float32)[:, None] / 255.0
Y = _idx("train-labels-idx1-ubyte.gz")[: N * PER].astype(np.int64)


class Cnn(nn.Module):
    """5x5 conv 32, pool, 5x5 conv 64, pool, dense 512, dense 10 (1,663,370 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc = nn.Linear(7 * 7 * 64, 512)
        self.out = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(F.max_pool2d(self.conv1(x), 2))
        a = F.relu(F.max_pool2d(self.conv2(a), 2))
        return self.out(F.relu(self.fc(a.flatten(1))))


from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.common import Context, ndarrays_to_parameters  # noqa: E402
from flwr.server import ServerApp, ServerAppComponents, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402


class Client(NumPyClient):
    def __init__(self, cid: int) -> None:
        torch.set_num_threads(1)
        self.x = torch.from_numpy(X[cid * PER : (cid + 1) * PER])
        self.y = torch.from_numpy(Y[cid * PER : (cid + 1) * PER])
        self.model = Cnn()

    def fit(self, params, config):
        with torch.no_grad():
            for p, v in zip(self.model.parameters(), params, strict=True):
                p.copy_(torch.from_numpy(v))
        opt = torch.optim.SGD(self.model.parameters(), lr=0.05)
        for i in range(0, PER, 10):
            opt.zero_grad()
            F.cross_entropy(self.model(self.x[i : i + 10]), self.y[i : i + 10]).backward()
            opt.step()
        return [p.detach().numpy().copy() for p in self.model.parameters()], PER, {}


class TimedFedAvg(FedAvg):
    def aggregate_fit(self, server_round, results, failures):
        out = super().aggregate_fit(server_round, results, failures)
        now = time.perf_counter()
        print(f"round {server_round} {now - STAMP[-1]:.3f}", flush=True)
        STAMP.append(now)
        return out


def client_fn(context: Context):
    return Client(int(context.node_config["partition-id"])).to_client()


def server_fn(context: Context):
    torch.manual_seed(0)
    init = [p.detach().numpy() for p in Cnn().parameters()]
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=N,
        min_available_clients=N,
        initial_parameters=ndarrays_to_parameters(init),
    )
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=R))


STAMP = [time.perf_counter()]
run_simulation(
    server_app=ServerApp(server_fn=server_fn),
    client_app=ClientApp(client_fn=client_fn),
    num_supernodes=N,
    backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
)
