"""Arithmetic precision of the network passes: which dtype a ``dtype`` setting means on a device,
and the autocast context the backbone runs its forwards under.

Reduced precision is applied with ``torch.autocast`` (weights stay fp32 and are cast per op), so
that the same loaded model serves every setting and the parts kept in fp32 stay exact: the
GradCAM maps are always formed in fp32 from the captured attention and gradient. bf16 on a CPU
runs the gradient-free linear layers with weights cast and reordered once instead
(:mod:`~pnpovss.prepacked`: the same numbers, faster). ``auto`` picks
bf16 on a CPU with native bf16 instructions (avx512_bf16 / amx_bf16 / Arm bf16), bf16 on a CUDA
GPU that supports it and fp16 on an older one, and fp32 everywhere else.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ContextManager, Iterable, Iterator

import torch

from . import prepacked
from .errors import PnpOvssError
from .execution import replaced_forwards

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Does this CPU execute bf16 arithmetic natively? Without it, bf16 is emulated and slower
    than fp32, so ``auto`` must not choose it. Read from /proc/cpuinfo (Linux); elsewhere False."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"}) or (platform.machine().lower() in ("aarch64", "arm64")
                                                          and "bf16" in flags)


@dataclass(frozen=True)
class Precision:
    """A resolved ``dtype`` setting: what runs, and why (``note`` is empty when it is what was asked)."""

    name: str
    """``fp32``, ``bf16`` or ``fp16``."""
    device_type: str
    note: str = ""
    text: bool = False
    """Whether the text-side forward/backward (GradCAM's) also runs in ``name``; the vision
    encoder always does. Off, by measurement (docs/results/precision.md;
    ``bench/precision_parts.py``): on the toy world (dev seed 0, 40 images) bf16 in the vision
    encoder and the image key/value projections left 99.97% of label pixels as in fp32, bf16 on the
    whole text side 99.67% (the gradient decides which patches are dropped), while the rest of the
    text side is a small part of the time on BLIP-large."""

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def describe(self) -> str:
        parts = "vision and text" if self.text or self.name == "fp32" else "vision encoder and image key/value projections"
        return self.name + ("" if self.name == "fp32" else f" ({parts})") + (f"; {self.note}" if self.note else "")

    def _autocast(self, enabled: bool) -> ContextManager:
        if self.name == "fp32" or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def prepacks(self, allowed: bool = True) -> bool:
        """Whether gradient-free linear layers run prepacked (:mod:`~pnpovss.prepacked`): bf16 on a
        CPU whose torch has the oneDNN ops, where the execution options allow it (``allowed``:
        :attr:`~pnpovss.execution.ExecutionOptions.prepack`)."""
        return allowed and self.name == "bf16" and self.device_type == "cpu" and prepacked.available()

    @contextlib.contextmanager
    def vision_autocast(self, linears: Iterable[torch.nn.Linear] = (), prepack: bool = True) -> Iterator[None]:
        """The context the vision encoder runs in (a no-op for fp32). ``linears``
        (:meth:`~pnpovss.backbones.base.Backbone.vision_linears`) run prepacked where
        :meth:`prepacks` (``prepack``: the execution options' say)."""
        packed = (replaced_forwards(linears, self._packed_linear) if self.prepacks(prepack)
                  else contextlib.nullcontext())
        with self._autocast(True), packed:
            yield

    def text_autocast(self, image_projections: Iterable[torch.nn.Module] = (), prepack: bool = True) -> ContextManager:
        """The context the text-side forward and GradCAM backward run in: fp32 unless ``text``,
        except ``image_projections`` (:meth:`~pnpovss.backbones.base.Backbone.image_projections`:
        linear layers applied to the image tokens only, outside the gradient's path), which compute
        in ``name`` whenever the vision encoder does and hand fp32 on."""
        if self.name == "fp32" or self.text:
            return self._autocast(self.text)
        packs = self.prepacks(prepack)
        return replaced_forwards(image_projections, lambda module: self._reduced_linear(module, packs))

    @staticmethod
    def _packed_linear(module: torch.nn.Linear):
        return lambda x: prepacked.linear(module, x)

    def _reduced_linear(self, module: torch.nn.Module, packs: bool):
        def forward(x: torch.Tensor) -> torch.Tensor:
            if packs:
                return prepacked.linear(module, x).float()
            with torch.autocast(self.device_type, dtype=self.dtype):
                return torch.nn.functional.linear(x, module.weight, module.bias).float()

        return forward


def resolve_precision(setting: str, device: torch.device | str,
                      native_bf16: bool | None = None, cuda_bf16: bool | None = None) -> Precision:
    """``auto|fp32|bf16|fp16`` on ``device`` -> :class:`Precision`. ``native_bf16`` / ``cuda_bf16``
    override the hardware probes (for tests). fp16 on a CPU is an error: CPUs have no fast fp16
    path and its range makes the GradCAM gradient underflow; bf16 is the CPU's reduced precision."""
    if setting not in DTYPE_CHOICES:
        raise PnpOvssError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {setting!r}")
    dev = torch.device(device)
    if dev.type == "cuda":
        if cuda_bf16 is None:
            cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if setting == "auto":
            return Precision("bf16" if cuda_bf16 else "fp16", "cuda")
        if setting == "bf16" and not cuda_bf16:
            raise PnpOvssError("this GPU does not support bf16; use --dtype fp16 or fp32")
        return Precision(setting, "cuda")
    if dev.type != "cpu":
        if setting in ("auto", "fp32"):
            return Precision("fp32", dev.type, "" if setting == "fp32" else f"fp32: no reduced precision on {dev.type}")
        raise PnpOvssError(f"dtype {setting} is supported on cpu and cuda only, not {dev.type}; use --dtype fp32")
    if setting == "fp16":
        raise PnpOvssError("dtype fp16 is for CUDA GPUs; on a CPU use --dtype bf16 (or auto)")
    if native_bf16 is None:
        native_bf16 = cpu_has_native_bf16()
    if setting == "auto":
        if native_bf16:
            return Precision("bf16", "cpu")
        return Precision("fp32", "cpu", "fp32: this CPU has no native bf16 (avx512_bf16/amx_bf16), where bf16 is slower")
    return Precision(setting, "cpu")


__all__ = ["DTYPES", "DTYPE_CHOICES", "Precision", "cpu_has_native_bf16", "resolve_precision"]
