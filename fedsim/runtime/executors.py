"""Two backends of one contract: train a round's chunks, return their results in chunk order."""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fedsim.data.base import FederatedDataset
from fedsim.models.base import Model
from fedsim.runtime.work import Chunk, ChunkResult, TrainSpec, train_chunk


class Executor(ABC):
    """Runs the training of a round's chunks somewhere."""

    num_workers: int

    @abstractmethod
    async def train(
        self, round_: int, w_global: np.ndarray, chunks: list[Chunk]
    ) -> list[ChunkResult]:
        """Train every chunk from ``w_global``; results ordered by chunk index."""

    def shutdown(self) -> None:  # noqa: B027  (optional hook)
        """Release workers."""


class LocalExecutor(Executor):
    """Everything in the calling process, one chunk after another (debugging, tests)."""

    num_workers = 1

    def __init__(self, model: Model, dataset: FederatedDataset, spec: TrainSpec) -> None:
        self.model, self.dataset, self.spec = model, dataset, spec

    async def train(
        self, round_: int, w_global: np.ndarray, chunks: list[Chunk]
    ) -> list[ChunkResult]:
        with threadpool_limits(limits=1):
            return [
                train_chunk(self.model, self.dataset, w_global, self.spec, round_, c)
                for c in chunks
            ]


def assign_chunks(chunks: list[Chunk], num_workers: int) -> list[list[Chunk]]:
    """Longest-processing-time-first assignment of chunks to workers, balanced by work."""
    loads = [0] * num_workers
    out: list[list[Chunk]] = [[] for _ in range(num_workers)]
    for c in sorted(chunks, key=lambda c: (-c.work, c.index)):
        i = min(range(num_workers), key=lambda j: (loads[j], j))
        out[i].append(c)
        loads[i] += c.work
    return [a for a in out if a]


class TrainWorker:
    """A worker process: holds the model and the shared dataset, trains many clients per call."""

    def __init__(self, model: Model, dataset: FederatedDataset, spec: TrainSpec) -> None:
        self.model, self.dataset, self.spec = model, dataset, spec
        # One BLAS thread per worker: a worker is one CPU's worth of work, and a BLAS result
        # can depend on its thread count, which would make results depend on the backend.
        threadpool_limits(limits=1)

    def train(self, round_: int, w_global: np.ndarray, chunks: list[Chunk]) -> list[ChunkResult]:
        return [
            train_chunk(self.model, self.dataset, w_global, self.spec, round_, c) for c in chunks
        ]

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(Executor):
    """A fixed pool of Ray worker actors; one call per busy worker per round."""

    def __init__(self, model: Model, dataset_ref: Any, spec: TrainSpec, num_workers: int) -> None:
        import ray

        actor = ray.remote(num_cpus=1)(TrainWorker)
        self.num_workers = num_workers
        self.workers = [actor.remote(model, dataset_ref, spec) for _ in range(num_workers)]

    async def train(
        self, round_: int, w_global: np.ndarray, chunks: list[Chunk]
    ) -> list[ChunkResult]:
        import ray

        if not chunks:
            return []
        w_ref = ray.put(w_global)
        plan = assign_chunks(chunks, self.num_workers)
        calls = [self.workers[i].train.remote(round_, w_ref, part) for i, part in enumerate(plan)]
        results = [r for part in await asyncio.gather(*calls) for r in part]
        return sorted(results, key=lambda r: r.index)

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []
