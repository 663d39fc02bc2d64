"""PyTorch modules behind the model contract: one flat float32 vector, clients on a leading axis.

A :class:`TorchModel` wraps a builder of an ``nn.Module``. The flat parameter vector is the
module's parameters in ``named_parameters()`` order, each flattened row-major, so strategies,
privacy, checkpoints and byte counts see the same (P,) float32 vector as for a numpy model.
``loss_and_grad`` takes the stacked numpy arrays of the engine and returns numpy: on the CPU,
``torch.from_numpy`` shares their memory. The gradient of a client is taken either

- one client at a time (``loop``): plain autograd on leaf tensors that are views of the
  client's row of the stack; or
- all clients at once (``vmap``): ``torch.func.vmap`` of ``torch.func.grad_and_value`` of
  ``functional_call`` over the client axis.

``stacking = "auto"`` picks per model and device (:func:`choose_stacking`). Torch is pinned to
one intra-op thread in a process that trains (as BLAS is pinned for numpy models), so a
client's result does not depend on the process or the stack it was computed in. Buffers (e.g.
BatchNorm running statistics) are not federated: each call works on a fresh copy of their
initial values.

This module imports torch; :mod:`fedsim.models.torch_models` is the torch-free entry point.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the usual alias)
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fedsim.models.base import Model

Stacking = Literal["auto", "vmap", "loop"]

#: Most samples per forward pass in :meth:`TorchModel.logits`.
EVAL_CHUNK = 1024

# Modules whose kernels ``vmap`` cannot batch, or only by falling back to a slow loop.
_NO_VMAP = (nn.RNNBase, nn.modules.batchnorm._BatchNorm)


def one_thread() -> None:
    """Pin torch to one intra-op thread in this process, as BLAS is pinned in the workers.

    Kept rather than restored after each call: changing torch's thread count rebuilds its
    thread pools, and doing so around every step made training over 3x slower (measured).
    """
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def resolve_device(device: str) -> str:
    """``cpu``/``cuda``/``auto`` -> the torch device to use; ValueError if CUDA is missing."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("'cuda' requested but torch finds no CUDA device")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"must be 'cpu', 'cuda' or 'auto', got {device!r}")
    return device


def choose_stacking(module: nn.Module, device: str) -> Literal["vmap", "loop"]:
    """``loop`` on a CPU; on a GPU ``vmap`` unless the module cannot be vmapped.

    Measured on one CPU thread at B=10 (``benchmarks/torch_stacking.py``, recorded in
    results/bench/torch_cnn/stacking.md): a vmapped stack of 10 clients is no faster per client
    than a loop for the 2NN and the CNN, only softmax regression gains (and loses alone), and a
    vmapped CNN client differs in its last bits from the same client computed alone, while a
    looped one cannot. Recurrent kernels, BatchNorm and dropout (whose masks must not depend
    on the stack) are looped on every device.
    """
    if device == "cpu" or _has_dropout(module):
        return "loop"
    if any(isinstance(m, _NO_VMAP) for m in module.modules()):
        return "loop"
    return "vmap"


def _has_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())


def flat_parameters(module: nn.Module) -> np.ndarray:
    """A module's parameters as one flat float32 vector, in ``parameters()`` order."""
    with torch.no_grad():
        parts = [p.detach().reshape(-1).to("cpu", torch.float32) for p in module.parameters()]
        return torch.cat(parts).numpy().copy()


class TorchModel(Model):
    """A ``nn.Module`` (built lazily by ``builder``) as a :class:`Model` on a flat vector.

    ``builder()`` must return the same architecture in every process; it is pickled to the
    workers (so it must be importable there), the module itself is rebuilt in each process.
    ``init`` gives the initial vector for a seed (default: the module's own initialisation
    under ``torch.manual_seed(seed)``). ``input_dtype`` is the dtype the module expects
    (``torch.long`` for token ids: the engine's float32 arrays are cast).
    """

    def __init__(
        self,
        builder: Callable[[], nn.Module],
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        init: Callable[[int], np.ndarray] | None = None,
        input_dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        stacking: Stacking = "auto",
        module: nn.Module | None = None,
    ) -> None:
        self.builder = builder
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self._init = init
        self.input_dtype = input_dtype
        self.device = resolve_device(device)
        self.stacking = stacking
        self._module = module
        self._prepare()

    # -- construction ------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Build the module (if needed) and derive the flat layout and the stacking mode."""
        if self._module is None:
            self._module = self.builder()
        module = self._module.to(self.device)
        params = list(module.named_parameters())
        if not params:
            raise ValueError("the module has no parameters to train")
        self._names = [name for name, _ in params]
        self._shapes = [tuple(p.shape) for _, p in params]
        sizes = [p.numel() for _, p in params]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_parameters = int(self._offsets[-1])
        self._buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
        self._dropout = _has_dropout(module)
        self._mode = (
            choose_stacking(module, self.device) if self.stacking == "auto" else self.stacking
        )
        if self.device == "cuda":
            # Deterministic kernels (cuBLAS needs its workspace fixed before it starts).
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_module"] = None  # rebuilt where it is used
        for key in ("_names", "_shapes", "_offsets", "_buffers", "_dropout", "_mode"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._prepare()

    @property
    def module(self) -> nn.Module:
        """The module whose parameters the flat vector holds (its own values are not used)."""
        assert self._module is not None
        return self._module

    @property
    def mode(self) -> str:
        """How stacks are trained here: ``vmap`` or ``loop``."""
        return self._mode

    @property
    def max_stack(self) -> int:  # type: ignore[override]
        """A looped model trains its clients one after the other (see ``Model.max_stack``)."""
        return 1 if self._mode == "loop" else Model.max_stack

    def init(self, seed: int) -> np.ndarray:
        """Initial parameters (P,) float32, a pure function of ``seed``."""
        if self._init is not None:
            w = np.asarray(self._init(seed), dtype=np.float32)
            if w.shape != (self.num_parameters,):
                raise ValueError(f"init gave shape {w.shape}, expected ({self.num_parameters},)")
            return w
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = self.builder()
        return flat_parameters(fresh)

    def load_into(self, w: np.ndarray, module: nn.Module) -> None:
        """Copy a flat vector (P,) into a module's parameters (to use the trained model)."""
        flat = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        with torch.no_grad():
            for p, view in zip(module.parameters(), self._views(flat), strict=True):
                p.copy_(view)

    # -- the contract ------------------------------------------------------------------------

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each parameter as a view of ``flat`` (..., P), shaped (..., *parameter shape)."""
        o, lead = self._offsets, flat.shape[:-1]
        return [flat[..., o[i] : o[i + 1]].view(*lead, *s) for i, s in enumerate(self._shapes)]

    def _loss(
        self, params: tuple[torch.Tensor, ...], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy of one client's batch as a function of its parameters."""
        tensors: dict[str, torch.Tensor] = dict(zip(self._names, params, strict=True))
        for name, buf in self._buffers.items():
            tensors[name] = buf.clone()
        logits = functional_call(self.module, tensors, (x,))
        return F.cross_entropy(logits, y)

    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:  # torch tensors cannot be read-only; shared data may be
            x = x.copy()
        return torch.from_numpy(x).to(self.device, self.input_dtype)

    def loss_and_grad(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean cross-entropy per client (C,) float64 and its gradient (C, P) float32."""
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != self.num_parameters:
            raise ValueError(f"w must have shape (C, {self.num_parameters}), got {w.shape}")
        wt = torch.from_numpy(w).to(self.device)
        xt, yt = self._inputs(x), torch.from_numpy(np.ascontiguousarray(y)).to(self.device)
        self.module.train()
        # Gradients are taken per parameter tensor and copied once into the flat output:
        # differentiating through slices of a flat leaf would add up one full-size zero-padded
        # vector per parameter tensor.
        grad = torch.empty_like(wt)
        loss = torch.empty(len(wt), dtype=torch.float32, device=self.device)
        one_thread()
        if self._mode == "vmap":
            grads, value = vmap(grad_and_value(self._loss))(tuple(self._views(wt)), xt, yt)
            for out, g in zip(self._views(grad), grads, strict=True):
                out.copy_(g)
            loss.copy_(value)
        else:
            for k in range(len(wt)):
                with self._keyed_randomness(w[k], y[k]):
                    leaves = tuple(v.detach().requires_grad_() for v in self._views(wt[k]))
                    value = self._loss(leaves, xt[k], yt[k])
                    grads = torch.autograd.grad(value, leaves)
                for out, g in zip(self._views(grad[k]), grads, strict=True):
                    out.copy_(g)
                loss[k] = value.detach()
        return loss.cpu().numpy().astype(np.float64), grad.cpu().numpy()

    @contextlib.contextmanager
    def _keyed_randomness(self, w: np.ndarray, y: np.ndarray) -> Iterator[None]:
        """For modules with dropout: draw one client's masks from a generator keyed on its
        labels and first parameters, so they do not depend on the process or the stack."""
        if not self._dropout:
            yield
            return
        digest = hashlib.blake2b(digest_size=8)
        digest.update(np.ascontiguousarray(y).tobytes())
        digest.update(np.ascontiguousarray(w[:64]).tobytes())
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else None):
            torch.manual_seed(int.from_bytes(digest.digest(), "little") >> 1)
            yield

    def logits(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits (n, num_classes) of parameters w (P,) on x (n, *input_shape), in eval mode."""
        flat = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(self.device)
        tensors: dict[str, torch.Tensor] = dict(zip(self._names, self._views(flat), strict=True))
        tensors.update(self._buffers)
        out = np.empty((len(x), self.num_classes), dtype=np.float32)
        self.module.eval()
        one_thread()
        with torch.no_grad():
            for start in range(0, len(x), EVAL_CHUNK):
                xb = self._inputs(x[start : start + EVAL_CHUNK])
                z = functional_call(self.module, tensors, (xb,))
                out[start : start + len(xb)] = z.float().cpu().numpy()
        return out
