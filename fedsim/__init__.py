"""fedsim: fast, honest simulation of federated learning over heterogeneous client populations."""

from fedsim.config import Config, ConfigError, load
from fedsim.runner import RunResult, run

__all__ = ["Config", "ConfigError", "RunResult", "load", "run"]
__version__ = "0.1.0"
