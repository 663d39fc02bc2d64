"""The torch-free side of the PyTorch backend: config options, registration and plug-ins.

Importing this module does not import torch; torch is imported when a torch model is built.
``model.backend = "torch"`` on ``softmax``, ``mlp`` or ``cnn`` builds the same architecture in
PyTorch; ``lstm`` and ``resnet`` exist only there. A plug-in ``model.name = "pkg.mod:factory"``
whose ``factory(input_shape, num_classes, **options)`` returns an ``nn.Module`` is wrapped by
:class:`fedsim.models.torch_backend.TorchModel`; one returning a :class:`Model` is used as is.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedsim.models.base import Model
from fedsim.options import ConfigError, check, positive
from fedsim.registry import MODELS, Entry, options_of

#: How to install the optional PyTorch dependency.
INSTALL_HINT = "pip install 'fedsim[torch]' (or pip install torch)"

Backend = Literal["numpy", "torch"]


def require_torch(key: str = "model.backend") -> Any:
    """The :mod:`fedsim.models.torch_backend` module; ConfigError on ``key`` without torch."""
    try:
        return importlib.import_module("fedsim.models.torch_backend")
    except ImportError as err:
        if getattr(err, "name", None) != "torch":
            raise
        raise ConfigError(
            f"{key}: 'torch' needs PyTorch, which is not installed; {INSTALL_HINT}"
        ) from None


@dataclass(frozen=True)
class ZooBuilder:
    """Builds the built-in module ``cls`` of :mod:`fedsim.models.torch_zoo` (picklable)."""

    cls: str
    kwargs: tuple[tuple[str, Any], ...]

    def __call__(self) -> Any:
        zoo = importlib.import_module("fedsim.models.torch_zoo")
        return getattr(zoo, self.cls)(**dict(self.kwargs))


@dataclass(frozen=True)
class PluginBuilder:
    """Calls a plug-in factory ``obj(input_shape, num_classes, **options)`` (picklable when
    ``obj`` is importable by name in the workers)."""

    obj: Callable[..., Any]
    input_shape: tuple[int, ...]
    num_classes: int
    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self) -> Any:
        return self.obj(self.input_shape, self.num_classes, **dict(self.options))


@dataclass(frozen=True)
class GivenModule:
    """Returns a copy of a module handed over as an object (``fedsim.run(cfg, model=...)``)."""

    module: Any

    def __call__(self) -> Any:
        import copy

        return copy.deepcopy(self.module)


def torch_builtin(
    cls: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    kwargs: dict[str, Any],
    init: Callable[[int], np.ndarray] | None = None,
) -> Model:
    """The zoo's module ``cls(**kwargs)`` as a Model (ConfigError without torch)."""
    backend = require_torch()
    builder = ZooBuilder(cls, tuple(sorted(kwargs.items())))
    dtype = backend.torch.long if cls == "CharLstm" else backend.torch.float32
    return backend.TorchModel(builder, input_shape, num_classes, init=init, input_dtype=dtype)


def is_torch_module(obj: Any) -> bool:
    """Whether obj is a ``torch.nn.Module`` (without importing torch when it is not loaded)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def as_model(obj: Any, input_shape: tuple[int, ...], num_classes: int, key: str) -> Model:
    """A Model as is, or an ``nn.Module`` wrapped (its current parameters are the initial ones)."""
    if isinstance(obj, Model):
        return obj
    if is_torch_module(obj):
        backend = require_torch(key)
        start = _Fixed(backend.flat_parameters(obj))
        return backend.TorchModel(GivenModule(obj), input_shape, num_classes, init=start)
    raise ConfigError(f"{key}: expected a fedsim Model or a torch nn.Module, got {type(obj)!r}")


@dataclass(frozen=True)
class _Fixed:
    """An init function that returns the same vector for every seed."""

    w: np.ndarray

    def __call__(self, seed: int) -> np.ndarray:
        return self.w.copy()


def adapt_plugin(obj: Any) -> Entry:
    """A model plug-in: ``obj(input_shape, num_classes, **options)`` returning a Model or an
    ``nn.Module`` (wrapped by the torch backend, rebuilt from ``obj`` in every worker)."""
    opts = options_of(obj)

    def factory(options: Any, input_shape: tuple[int, ...], num_classes: int) -> Model:
        fields = tuple((f.name, getattr(options, f.name)) for f in dataclasses.fields(options))
        builder = PluginBuilder(obj, tuple(input_shape), int(num_classes), fields)
        try:
            made = builder()
        except Exception as err:  # a user's factory failing is a bad plug-in, not a crash
            raise ConfigError(
                f"model.name: plug-in {getattr(obj, '__qualname__', obj)!r} failed "
                f"({type(err).__name__}: {err})"
            ) from None
        if isinstance(made, Model):
            return made
        if not is_torch_module(made):
            raise ConfigError(
                f"model.name: plug-in returned {type(made).__name__}, expected a fedsim Model "
                "or a torch nn.Module"
            )
        backend = require_torch("model.name")
        return backend.TorchModel(builder, input_shape, num_classes, module=made)

    return Entry(getattr(obj, "__name__", repr(obj)), factory, opts)


def on_device(model: Model, device: str) -> Model:
    """Place a torch model on ``runtime.device``; a numpy model runs on the CPU only."""
    if is_torch_module(getattr(model, "module", None)):
        backend = require_torch("runtime.device")
        try:
            resolved = backend.resolve_device(device)
        except ValueError as err:
            raise ConfigError(f"runtime.device: {err}") from None
        if resolved != model.device:  # type: ignore[attr-defined]
            model.device = resolved  # type: ignore[attr-defined]
            model._prepare()  # type: ignore[attr-defined]
        return model
    if device == "cuda":
        raise ConfigError(
            "runtime.device: 'cuda' runs torch models only; set model.backend = 'torch'"
        )
    return model


def worker_resources(model: Model, num_workers: int) -> dict[str, float]:
    """Ray resources of one training worker: a CPU, and an equal share of one GPU when the
    model computes on CUDA (so ``num_workers`` workers share it)."""
    if getattr(model, "device", "cpu") == "cuda":
        return {"num_cpus": 1, "num_gpus": 1.0 / max(1, num_workers)}
    return {"num_cpus": 1}


# --- torch-only built-in models -----------------------------------------------------------------


@dataclass(frozen=True)
class LstmOptions:
    """The character LSTM of McMahan et al. (2017): defaults as there (80 symbols, 8, 2x256)."""

    backend: Literal["torch"] = "torch"
    vocab_size: int = field(default=80, metadata=check(positive))
    embedding: int = field(default=8, metadata=check(positive))
    hidden: int = field(default=256, metadata=check(positive))
    layers: int = field(default=2, metadata=check(positive))


@dataclass(frozen=True)
class ResNetOptions:
    """A small ResNet with GroupNorm; ``blocks = 3`` per stage is ResNet-20."""

    backend: Literal["torch"] = "torch"
    blocks: int = field(default=3, metadata=check(positive))
    width: int = field(default=16, metadata=check(positive))
    groups: int = field(default=2, metadata=check(positive))


@MODELS.register("lstm", LstmOptions)
def make_lstm(options: LstmOptions, input_shape: tuple[int, ...], num_classes: int) -> Model:
    """Next-symbol model on sequences of token ids of shape (T,)."""
    if len(input_shape) != 1:
        raise ConfigError(f"model.lstm: needs sequences of token ids (T,), got {input_shape}")
    kwargs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    del kwargs["backend"]
    return torch_builtin(
        "CharLstm", input_shape, num_classes, {**kwargs, "num_classes": num_classes}
    )


@MODELS.register("resnet", ResNetOptions)
def make_resnet(options: ResNetOptions, input_shape: tuple[int, ...], num_classes: int) -> Model:
    """ResNet for images (channels, height, width)."""
    if len(input_shape) != 3:
        raise ConfigError(f"model.resnet: needs images (channels, H, W), got {input_shape}")
    width = options.width
    if width % options.groups:
        raise ConfigError(f"model.groups: must divide width ({width}), got {options.groups}")
    kwargs = {"blocks": options.blocks, "width": width, "groups": options.groups}
    shape = tuple(input_shape)
    kwargs.update(input_shape=shape, num_classes=num_classes)
    return torch_builtin("ResNet", shape, num_classes, kwargs)
