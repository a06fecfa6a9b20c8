"""Forward hooks as context managers: registered on entry, always removed on exit.

The cross-attention probabilities we need are an *intermediate* output of an attention module
(``output[1]`` of a Hugging Face self-attention block), so we capture them with a forward hook
rather than patching model code (the reference patched LAVIS in site-packages).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Mapping

import torch
from torch import nn


def second_output(output: object) -> torch.Tensor:
    """Attention modules return ``(context, probabilities, ...)``; take the probabilities."""
    if not isinstance(output, (tuple, list)) or len(output) < 2 or output[1] is None:
        raise RuntimeError(
            "attention module returned no probabilities; the model must run with eager attention"
        )
    return output[1]


@contextmanager
def capture_outputs(
    modules: Mapping[Hashable, nn.Module],
    select: Callable[[object], torch.Tensor] = second_output,
) -> Iterator[dict[Hashable, torch.Tensor]]:
    """Record ``select(output)`` of each module's forward under its key, for the duration of the block.

    If a module runs more than once inside the block, the last output wins.
    """
    store: dict[Hashable, torch.Tensor] = {}
    handles = []

    def make_hook(key: Hashable) -> Callable:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            store[key] = select(output)

        return hook

    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        yield store
    finally:
        for handle in handles:
            handle.remove()
