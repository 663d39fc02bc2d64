"""Name -> component registries, so a TOML name selects a dataset, partitioner, model or strategy.

A component is registered with the dataclass of its options; the config loader validates the
TOML table of that component against those options (unknown keys and wrong types are errors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    options: type


class Registry:
    """Components of one kind (``dataset``, ``partition scheme``, ``model``, ``strategy``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type) -> Callable[[Callable[..., Any]], Any]:
        def decorate(factory: Callable[..., Any]) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, options)
            return factory

        return decorate

    def names(self) -> list[str]:
        _load_builtin_components()
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        _load_builtin_components()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            ) from None


DATASETS = Registry("dataset")
PARTITIONERS = Registry("partition scheme")
MODELS = Registry("model")
STRATEGIES = Registry("strategy")

_loaded = False


def _load_builtin_components() -> None:
    """Import the built-in component modules once; each registers itself on import."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import fedsim.data  # noqa: F401
    import fedsim.models  # noqa: F401
    import fedsim.strategies  # noqa: F401
