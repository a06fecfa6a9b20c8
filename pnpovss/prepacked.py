"""bf16 linear layers on a CPU with weights reordered once for oneDNN ("prepacked").

Under ``torch.autocast`` a bf16 linear layer casts its fp32 weight and lets the matmul reorder
it into oneDNN's blocked layout on every call. At one image on BLIP-large (577 tokens) that costs
about a fifth of each vision matmul. Here each weight is cast and reordered once, and oneDNN's
linear is called with it. The results equal autocast's bit for bit (tested), and the result dtype
is the same (bf16). ``torch.compile``'s weight freezing does the same for the vision encoder;
this gets most of that gain without compiling (docs/results/precision.md).

The two ops (``torch.ops.mkldnn._reorder_linear_weight`` and ``_linear_pointwise``) are the ones
``torch.compile``'s CPU backend emits, but they are not public API. :func:`available` therefore
checks them once against ``torch.nn.functional.linear``. Where they are missing or disagree,
callers keep autocast's linear. Whether a model uses them at all is its execution options'
``prepack`` (:mod:`pnpovss.execution`).
"""

from __future__ import annotations

import weakref
from functools import lru_cache

import torch
from torch import nn

_PACKED: "weakref.WeakKeyDictionary[nn.Linear, tuple[tuple[int, int], torch.Tensor, torch.Tensor | None]]" = (
    weakref.WeakKeyDictionary())


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether this torch build has oneDNN's prepacked bf16 linear and it agrees with
    ``torch.nn.functional.linear`` in bf16 on a small probe."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=gen, dtype=torch.bfloat16) for s in ((2, 5, 16), (24, 16), (24,)))
        packed = torch.ops.mkldnn._reorder_linear_weight(w)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        ref = torch.nn.functional.linear(x, w, b)
        return y.dtype == torch.bfloat16 and y.shape == ref.shape and torch.allclose(y.float(), ref.float(), atol=1e-2)
    except (AttributeError, RuntimeError, NotImplementedError, TypeError):
        return False


def _weights(module: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The module's packed bf16 weight and bf16 bias, made on first use and again whenever the
    weight is replaced or changed in place (its storage or version counter moves)."""
    key = (module.weight.data_ptr(), module.weight._version)
    entry = _PACKED.get(module)
    if entry is None or entry[0] != key:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach().to(torch.bfloat16))
            bias = None if module.bias is None else module.bias.detach().to(torch.bfloat16)
        entry = (key, packed, bias)
        _PACKED[module] = entry
    return entry[1], entry[2]


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` in bf16 with the packed weight. The packed op has no gradient, so an input
    that needs one (never the case in the pipeline: these layers are outside GradCAM's backward)
    takes the plain bf16 product instead."""
    if torch.is_grad_enabled() and (x.requires_grad or module.weight.requires_grad):
        bias = None if module.bias is None else module.bias.to(torch.bfloat16)
        return torch.nn.functional.linear(x.to(torch.bfloat16), module.weight.to(torch.bfloat16), bias)
    weight, bias = _weights(module)
    return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias, "none", [], "")


def linears(*modules: nn.Module) -> list[nn.Linear]:
    """Every ``nn.Linear`` inside ``modules`` whose forward is its own (``F.linear`` of the input):
    what :func:`linear` may stand in for."""
    return [m for root in modules for m in root.modules() if type(m) is nn.Linear]


__all__ = ["available", "linear", "linears"]
