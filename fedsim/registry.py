"""Name -> component registries, so a TOML name selects a dataset, partitioner, model or strategy.

A component is registered with the dataclass of its options; the config loader validates the
TOML table of that component against those options (unknown keys and wrong types are errors).

Built-in components register themselves when their package is imported; the packages are
found through the ``fedsim.components`` entry-point group (``pyproject.toml``), which other
installed packages may join to add their own components. A name of the form
``"package.module:attribute"`` loads a user's component from any importable module instead,
without registering it: each registry turns the loaded object into an :class:`Entry` with its
``adapt`` function (for example, a strategy class with an ``Options`` dataclass).
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

#: Entry-point group naming the packages whose import registers built-in components.
ENTRY_POINT_GROUP = "fedsim.components"


@dataclass(frozen=True)
class NoOptions:
    """The options of a component that takes none."""


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    options: type


class PluginError(KeyError):
    """A ``module:attribute`` name that cannot be loaded; the message says why."""


def load_attribute(spec: str) -> Any:
    """The object named by ``"package.module:attribute"`` (dotted attributes allowed)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{spec!r}: expected 'module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise PluginError(f"{spec!r}: cannot import {module_name!r} ({err})") from None
    except Exception as err:  # a user's module failing on import is a bad plug-in, not a crash
        raise PluginError(
            f"{spec!r}: importing {module_name!r} failed ({type(err).__name__}: {err})"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{spec!r}: module {module_name!r} has no {attr!r}") from None
    return obj


def options_of(obj: Any) -> type:
    """A plug-in's options dataclass: its ``Options`` attribute, or :class:`NoOptions`."""
    opts = getattr(obj, "Options", NoOptions)
    if not (isinstance(opts, type) and dataclasses.is_dataclass(opts)):
        raise PluginError(f"{obj!r}: its Options attribute must be a dataclass")
    return opts


def _call_with_options(obj: Any) -> Entry:
    """Default adaptation: ``obj(*args, **kwargs, **options)``.

    ``args``/``kwargs`` are what the registry's built-in factories receive after their options
    (a model: ``input_shape, num_classes``; a dataset: ``num_clients=, seed=``; a strategy:
    nothing), and the options are the fields of the plug-in's ``Options`` dataclass, if any.
    """
    opts = options_of(obj)

    def factory(options: Any, *args: Any, **kwargs: Any) -> Any:
        fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        return obj(*args, **kwargs, **fields)

    return Entry(getattr(obj, "__name__", repr(obj)), factory, opts)


class Registry:
    """Components of one kind (``dataset``, ``partition scheme``, ``model``, ``strategy``)."""

    def __init__(self, kind: str, adapt: Callable[[Any], Entry] = _call_with_options) -> None:
        self.kind = kind
        self.adapt = adapt
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type) -> Callable[[Callable[..., Any]], Any]:
        if ":" in name:
            raise ValueError(f"{self.kind} name {name!r}: ':' is reserved for plug-ins")

        def decorate(factory: Callable[..., Any]) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, options)
            return factory

        return decorate

    def names(self) -> list[str]:
        load_builtin_components()
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        """The registered component ``name``, or the plug-in ``"module:attribute"``."""
        if ":" in name:
            load_builtin_components()  # a package may install this registry's adapter
            try:
                entry = self.adapt(load_attribute(name))
            except PluginError as err:
                raise KeyError(f"{self.kind} plug-in {err.args[0]}") from None
            return dataclasses.replace(entry, name=name)
        load_builtin_components()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}, "
                "or name your own as 'module:attribute'"
            ) from None


DATASETS = Registry("dataset")
PARTITIONERS = Registry("partition scheme")
MODELS = Registry("model")  # its package installs an adapter for torch modules
STRATEGIES = Registry("strategy")
AGGREGATORS = Registry("aggregator")

_loaded = False


def load_builtin_components() -> None:
    """Import, once, every package of the ``fedsim.components`` entry-point group."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    found = entry_points(group=ENTRY_POINT_GROUP)
    if not found:
        raise RuntimeError(
            f"no {ENTRY_POINT_GROUP!r} entry points: fedsim is not installed "
            "(pip install -e . from the source folder)"
        )
    for ep in sorted(found, key=lambda e: e.name):
        try:
            importlib.import_module(ep.value)
        except ModuleNotFoundError as err:
            if err.name != ep.value:
                raise
            # Metadata left by an older install names a package this one does not have.
            warnings.warn(
                f"{ENTRY_POINT_GROUP} entry point {ep.name!r}: no module {ep.value!r}; "
                "reinstall fedsim (pip install -e .) if this is unexpected",
                stacklevel=2,
            )
