"""fedsim: fast, honest simulation of federated learning over heterogeneous client populations."""

from fedsim.config import Config, ConfigError, load
from fedsim.runner import RunResult, resume, run

__all__ = ["Config", "ConfigError", "RunResult", "load", "resume", "run"]
__version__ = "0.1.0"
