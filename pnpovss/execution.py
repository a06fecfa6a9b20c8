"""How the network passes execute, fenced in one module: the execution options and every trick
that reaches below torch's and transformers' public API.

An upgrade of torch or transformers that breaks a fast path breaks it here:

- **forward replacement** (:func:`replaced_forwards`): fused vision attention and BLIP's shared
  image attention (``backbones/blip.py``) and the reduced-precision linear layers
  (``precision.py``) run a module with another forward. A module gets a dispatching forward once
  (:func:`_dispatcher`); which replacement it runs is a context variable, so a replacement is seen
  only by the thread (context) that entered the block, never by another thread sharing the model;
- **prepacked bf16 linear layers** (private ``torch.ops.mkldnn`` ops, ``weight._version``):
  :mod:`pnpovss.prepacked`, probed once by :func:`pnpovss.prepacked.available`;
- **torch.compile** of the vision encoder with inductor's weight freezing (:func:`compiled_call`,
  ``torch._inductor.config``);
- **torchrun's key-value store** (:func:`default_store`, ``_get_default_store``);
- BridgeTower's private ``_apply_image_transform``/``_apply_text_transform`` (``backbones/bridgetower.py``;
  ``transformers`` is pinned below its next major version for them, see setup.cfg).

:class:`ExecutionOptions` says which fast paths a model runs; it is held by the backbone
(:attr:`pnpovss.backbones.base.Backbone.execution`), set when it is loaded, and recorded in every
result file and ``pnpovss_run.json``. Execution options never change a label (tested): they are not
:class:`~pnpovss.PipelineConfig` fields.
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from .errors import PnpOvssError


@dataclass(frozen=True)
class ExecutionOptions:
    """The fast paths a model runs (each falls back to the plain computation where it is unavailable)."""

    fused_attention: bool = True
    """BLIP's (gradient-free) vision tower with ``F.scaled_dot_product_attention`` instead of its
    eager softmax(QK^T)V: the same function to rounding, without the (heads, N, N) probabilities."""
    shared_image_attention: bool = True
    """Presence scoring on BLIP: the captions' queries against one image's keys/values projected once."""
    prepack: bool = True
    """bf16 on a CPU: gradient-free linear layers with weights cast and reordered once
    (:mod:`pnpovss.prepacked`) where the probe finds the ops; else autocast's linear."""
    compile_vision: bool = False
    """The vision encoder through ``torch.compile`` (BLIP only; tens of seconds once per process)."""

    def replace(self, **changes: Any) -> "ExecutionOptions":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ forward replacement
_ACTIVE: contextvars.ContextVar[dict[int, Callable]] = contextvars.ContextVar("pnpovss_forwards", default={})
_INSTALL = threading.Lock()


def _dispatcher(module: nn.Module) -> None:
    """Give ``module`` (once) a forward that runs this context's replacement, else its own class's."""
    with _INSTALL:
        if "_pnpovss_own_forward" in vars(module):
            return
        own = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            replacement = _ACTIVE.get().get(id(module))
            return (replacement or own)(*args, **kwargs)

        module._pnpovss_own_forward = own
        module.forward = forward


def replacement_of(module: nn.Module) -> Callable | None:
    """The forward ``module`` runs in this context instead of its own (None: its own)."""
    return _ACTIVE.get().get(id(module))


@contextmanager
def replaced_forwards(modules: Iterable[nn.Module], make_forward: Callable[[nn.Module], Callable]) -> Iterator[None]:
    """Within the block, and in this thread (context) only, each module runs ``make_forward(module)``
    as its forward; other threads running the same modules meanwhile run their own forwards. Always
    undone on exit."""
    modules = list(modules)
    for module in modules:
        _dispatcher(module)
    token = _ACTIVE.set({**_ACTIVE.get(), **{id(m): make_forward(m) for m in modules}})
    try:
        yield
    finally:
        _ACTIVE.reset(token)


# ------------------------------------------------------------------------------ torch.compile
def compiled_call(compiled: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call a ``torch.compile`` d module with inductor's weight freezing (read when (re)compiling,
    which any call may do; ``torch.compile(options=)`` ignores it). A compiler failure (no C++
    compiler, an unsupported op) is one line."""
    from torch._inductor import config as inductor_config

    try:
        with torch.no_grad(), inductor_config.patch(freezing=True):
            return compiled(*args, **kwargs)
    except Exception as exc:
        if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise PnpOvssError(f"torch.compile of the vision encoder failed ({reason}); load the model without "
                           "compile_vision") from None


# ------------------------------------------------------------------------------ torchrun's store
def default_store() -> Any:
    """torchrun's key-value store of the default process group (a private torch function), or
    None where there is none."""
    try:
        return torch.distributed.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


__all__ = ["ExecutionOptions", "compiled_call", "default_store", "replaced_forwards", "replacement_of"]
