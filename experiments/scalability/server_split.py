"""Where a round's time goes at a large cohort, on the real server code in one process.

Selection and training are timed by wrapping the population and the executor; the timeline is
the rest of the server's selection phase, aggregation the rest of its training phase (cutting
chunks, summing their results, the strategy's update). run.py writes the medians of the rounds
after the first to server_split.csv; alone:

    python experiments/scalability/server_split.py [--clients-per-round 10000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# A checkout runs this without installing fedsim.
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedsim import config as config_mod  # noqa: E402


def server_split(config: Path, cohort: int, rounds: int) -> dict[str, float]:
    """Where a round's time goes, on the real server code in one process: selection and
    training timed by wrapping the population and the executor; the timeline is the rest of
    the selection phase, aggregation the rest of the training phase."""
    from threadpoolctl import threadpool_limits

    from fedsim.runner import prepare
    from fedsim.runtime.executors import LocalExecutor
    from fedsim.runtime.server import Server
    from fedsim.runtime.work import train_spec

    cfg = config_mod.load(config, [f"server.clients_per_round={cohort}", "runtime.backend='local'"])
    exp, spent = prepare(cfg), {"select": 0.0, "train": 0.0}
    select = exp.population.select

    def timed_select(*args: Any) -> Any:
        t = time.perf_counter()
        out = select(*args)
        spent["select"] += time.perf_counter() - t
        return out

    class TimedExecutor(LocalExecutor):
        async def train(self, *args: Any) -> Any:
            t = time.perf_counter()
            out = await super().train(*args)
            spent["train"] += time.perf_counter() - t
            return out

    exp.population.select = timed_select  # type: ignore[method-assign]
    executor = TimedExecutor(exp.model, exp.dataset, train_spec(cfg, exp.strategy))
    server = Server(cfg, exp.dataset, exp.model, exp.strategy, exp.population, executor)
    parts: dict[str, list[float]] = {k: [] for k in ("selection", "timeline", "training",
                                                     "aggregation", "round")}  # fmt: skip
    with threadpool_limits(limits=1):
        for _ in range(rounds):
            spent.update(select=0.0, train=0.0)
            rec = asyncio.run(server.run_round()).record
            parts["selection"].append(spent["select"])
            parts["timeline"].append(rec["server_s"] - spent["select"])
            parts["training"].append(spent["train"])
            parts["aggregation"].append(rec["train_s"] - spent["train"])
            parts["round"].append(rec["wall_time_s"])
    return {k: statistics.median(v[1:]) for k, v in parts.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients-per-round", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    config = ROOT / "experiments" / "scalability" / "population_1m.toml"
    print(server_split(config, args.clients_per_round, args.rounds))
