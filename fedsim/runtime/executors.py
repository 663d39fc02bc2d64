"""Two backends of one contract: train a round's chunks, return their results in chunk order."""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

from fedsim.data.base import FederatedDataset
from fedsim.errors import WorkerFailedError
from fedsim.memory import keep_freed_memory
from fedsim.models.base import Model
from fedsim.models.torch_models import worker_resources
from fedsim.pipeline.base import Pipeline
from fedsim.runtime.work import Chunk, ChunkResult, TrainSpec, fold_leading, train_chunks
from fedsim.strategies.base import RoundContext

#: Models up to this size are sent with each worker call instead of through the object store.
INLINE_MODEL_BYTES = 64 * 1024


@dataclass(frozen=True)
class RoundWork:
    """What a round asks of the executor: train these chunks from this global model."""

    ctx: RoundContext
    w_global: np.ndarray
    chunks: list[Chunk]
    pipeline: Pipeline | None = None


class Executor(ABC):
    """Runs the training of a round's chunks somewhere."""

    num_workers: int

    async def train(
        self,
        ctx: RoundContext,
        w_global: np.ndarray,
        chunks: list[Chunk],
        pipeline: Pipeline | None = None,
    ) -> list[ChunkResult]:
        """Train every chunk from ``w_global``; results ordered by chunk index."""
        if not chunks:
            return []
        results = await self.run(RoundWork(ctx, w_global, chunks, pipeline))
        return sorted(results, key=lambda r: r.index)

    @abstractmethod
    async def run(self, work: RoundWork) -> list[ChunkResult]:
        """The results of ``work``'s chunks (at least one), in any order."""

    def shutdown(self) -> None:  # noqa: B027  (optional hook)
        """Release workers."""


class LocalExecutor(Executor):
    """Everything in the calling process, one chunk after another (debugging, tests)."""

    num_workers = 1

    def __init__(self, model: Model, dataset: FederatedDataset, spec: TrainSpec) -> None:
        self.model, self.dataset, self.spec = model, dataset, spec
        self._blas: ThreadpoolController | None = None

    async def run(self, work: RoundWork) -> list[ChunkResult]:
        # Finding the BLAS libraries reads the process's memory map (about 15 ms): once.
        if self._blas is None:
            self._blas = ThreadpoolController()
        with self._blas.limit(limits=1):
            return fold_leading(
                train_chunks(
                    self.model,
                    self.dataset,
                    work.w_global,
                    self.spec,
                    work.ctx,
                    work.chunks,
                    work.pipeline,
                )  # fmt: skip
            )


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
        # The same large temporaries are allocated and freed every call: keep them mapped.
        keep_freed_memory()

    def train(
        self,
        ctx: RoundContext,
        w_global: np.ndarray,
        chunks: list[Chunk],
        die: bool = False,
        pipeline: Pipeline | None = None,
    ) -> list[ChunkResult]:
        """Train ``chunks``; ``die`` (fault injection) ends the process after the first one."""
        if die:
            train_chunks(self.model, self.dataset, w_global, self.spec, ctx, chunks[:1], pipeline)
            # A real process death mid-call, as the OS or a lost node would cause it.
            os._exit(1)
        # One array back for this worker's leading chunks, not one each (same bits).
        return fold_leading(
            train_chunks(self.model, self.dataset, w_global, self.spec, ctx, chunks, pipeline)
        )

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


class RayExecutor(Executor):
    """A fixed pool of Ray worker actors; one call per busy worker per round.

    A worker that dies during a call is replaced by a new actor and its chunks are trained
    again; results are a function of the chunks alone, so they do not change. More than
    ``max_restarts`` deaths in one round raise :class:`WorkerFailedError`.
    ``kill_at_round``/``kill_times`` inject such deaths: the busiest worker of that round
    exits mid-call on its first ``kill_times`` attempts.
    """

    def __init__(
        self,
        model: Model,
        dataset_ref: Any,
        spec: TrainSpec,
        num_workers: int,
        *,
        max_restarts: int = 3,
        kill_at_round: int = 0,
        kill_times: int = 1,
    ) -> None:
        import ray

        # One CPU per worker, and an equal share of the GPU for a model that computes on CUDA.
        self._actor = ray.remote(**worker_resources(model, num_workers))(TrainWorker)
        self._args = (model, dataset_ref, spec)
        self.num_workers = num_workers
        self.max_restarts = max_restarts
        self.kill_at_round, self.kill_times = kill_at_round, kill_times
        self.restarts = 0  # over the executor's life
        self._kills = 0
        self.workers = [self._actor.remote(*self._args) for _ in range(num_workers)]

    async def run(self, work: RoundWork) -> list[ChunkResult]:
        import ray

        ctx, w_global = work.ctx, work.w_global
        # A small model travels inside the call itself; a put costs more than a copy of it
        # (about 2 ms per round, measured), while a large one is put once for all workers.
        w_ref = w_global if w_global.nbytes <= INLINE_MODEL_BYTES else ray.put(w_global)
        broadcast = sum(v.nbytes for v in ctx.broadcast.values())
        ctx_ref = ctx if broadcast <= INLINE_MODEL_BYTES else ray.put(ctx)
        # The round's stages (secure aggregation's keys and graph) are put once, by reference.
        p_ref = ray.put(work.pipeline) if work.pipeline else None
        plan = assign_chunks(work.chunks, self.num_workers)
        deaths = [0]  # this round's, shared by the per-worker calls
        calls = [
            self._train_on(i, ctx.round, ctx_ref, w_ref, part, deaths, p_ref)
            for i, part in enumerate(plan)
        ]
        return [r for part in await asyncio.gather(*calls) for r in part]

    async def _train_on(
        self,
        i: int,
        round_: int,
        ctx: Any,
        w_ref: Any,
        part: list[Chunk],
        deaths: list[int],
        pipeline: Any = None,
    ) -> list[ChunkResult]:
        import ray

        died = (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.OutOfMemoryError,
        )
        while True:
            die = i == 0 and round_ == self.kill_at_round and self._kills < self.kill_times
            self._kills += die
            try:
                return await self.workers[i].train.remote(ctx, w_ref, part, die, pipeline)
            except died as err:
                deaths[0] += 1
                if deaths[0] > self.max_restarts:
                    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    raise WorkerFailedError(
                        round_,
                        f"training workers died {deaths[0]} times in round {round_}, more than "
                        f"runtime.max_worker_restarts = {self.max_restarts} ({first})",
                    ) from None
                self.restarts += 1
                ray.kill(self.workers[i])
                self.workers[i] = self._actor.remote(*self._args)

    async def worker_nodes(self) -> list[str]:
        """The Ray node id of every worker, in worker order."""
        return list(await asyncio.gather(*(w.node_id.remote() for w in self.workers)))

    async def worker_pids(self) -> list[int]:
        return list(await asyncio.gather(*(w.pid.remote() for w in self.workers)))

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []
