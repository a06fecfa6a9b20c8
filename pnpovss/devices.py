"""Which devices this machine can run, and what a ``--device`` setting means here.

``auto`` takes the first available backend in :data:`AUTO_ORDER` (cuda, xpu, mps, cpu; only CPU
runs are tested here, docs/how-to/devices.md); any device that torch can name
but this machine cannot run (``mps`` off Apple silicon, ``xpu`` without an Intel GPU, ``meta``,
``cuda:3`` on a one-GPU machine) is a one-line :class:`~pnpovss.errors.PnpOvssError` naming the
devices that would work, instead of a traceback from deep inside the model load.
"""

from __future__ import annotations

import torch

from .defaults import DEVICE_ORDER as AUTO_ORDER
from .errors import PnpOvssError


def _backend(name: str):
    """torch's module for an accelerator backend (``torch.cuda``, ``torch.xpu``, ``torch.mps``), or None."""
    return getattr(torch, name, None)


def device_count(kind: str) -> int:
    """How many devices of ``kind`` torch reports usable here (``cpu``: 1; unknown kinds: 0)."""
    if kind == "cpu":
        return 1
    try:
        if kind == "mps":
            return int(torch.backends.mps.is_available())
        module = _backend(kind)
        if module is None or not module.is_available():
            return 0
        return int(module.device_count())
    except (RuntimeError, AttributeError, AssertionError):  # a broken driver counts as no device
        return 0


def available_devices() -> list[str]:
    """Every device name this machine can run, in ``auto``'s order: ``cuda``, ``cuda:0``, ..., ``cpu``."""
    names: list[str] = []
    for kind in AUTO_ORDER:
        n = device_count(kind)
        if n and kind in ("cpu", "mps"):
            names.append(kind)
        elif n:
            names += [kind] + [f"{kind}:{i}" for i in range(n)]
    return names


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> the first available kind of :data:`AUTO_ORDER`; anything else must be a
    device this machine has, else one line naming the ones it has."""
    if device is None or str(device) == "auto":
        return torch.device(next(kind for kind in AUTO_ORDER if device_count(kind)))
    usable = ", ".join(["auto", *available_devices()])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PnpOvssError(f"unknown device {device!r}; devices usable here: {usable}") from None
    count = device_count(dev.type)
    if count == 0 or (dev.index is not None and dev.index >= count) or (dev.type == "cpu" and dev.index not in (None, 0)):
        what = f"{dev.type} device {dev.index}" if dev.index is not None and count else f"device {str(device)!r}"
        raise PnpOvssError(f"{what} is not available on this machine; devices usable here: {usable}")
    return dev


__all__ = ["AUTO_ORDER", "available_devices", "device_count", "resolve_device"]
