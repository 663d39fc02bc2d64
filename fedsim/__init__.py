"""fedsim: fast, honest simulation of federated learning over heterogeneous client populations."""

from fedsim import learning
from fedsim.config import Config, ConfigError, load
from fedsim.learning import init
from fedsim.runner import RunResult, resume, run

__all__ = ["Config", "ConfigError", "RunResult", "init", "learning", "load", "resume", "run"]
__version__ = "0.1.0"
