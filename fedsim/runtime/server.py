"""The server: synchronous rounds as a sequence of stages, each with one job.

select -> plan (clock) -> client work (workers: client update, update pipeline, partial sums)
-> aggregate -> server step (the strategy) -> evaluate -> record.

The parts live in their own modules and are importable from here:

- :mod:`fedsim.runtime.synchronous`: :class:`Server` (the stages of a round),
  :func:`round_context`;
- :mod:`fedsim.runtime.round_records`: what a round hands between stages, what it costs and
  what it records (:class:`RoundResult`);
- :mod:`fedsim.runtime.server_state`: the checkpoint state;
- :mod:`fedsim.runtime.server_evaluation`: the evaluations a round runs (the loop's callbacks
  say which);
- :mod:`fedsim.runtime.server_actor`: :func:`server_class` and the Ray actor
  :class:`ServerActor`.
"""

from fedsim.runtime.round_records import RoundData, RoundResult
from fedsim.runtime.server_actor import ServerActor, server_class
from fedsim.runtime.server_state import ServerState
from fedsim.runtime.synchronous import Server, round_context

__all__ = [
    "RoundData",
    "RoundResult",
    "Server",
    "ServerActor",
    "ServerState",
    "round_context",
    "server_class",
]
