"""Devices: ``auto``'s order, and one line naming the usable devices for any device this machine lacks."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pnpovss import PnpOvssError
from pnpovss import devices
from pnpovss.devices import available_devices, resolve_device


def fake_counts(monkeypatch, **counts):
    monkeypatch.setattr(devices, "device_count", lambda kind: counts.get(kind, 1 if kind == "cpu" else 0))


def test_auto_takes_the_first_available_backend_in_order(monkeypatch):
    fake_counts(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    fake_counts(monkeypatch, mps=1)
    assert resolve_device("auto") == torch.device("mps") and available_devices() == ["mps", "cpu"]
    fake_counts(monkeypatch, mps=1, xpu=1)
    assert resolve_device(None) == torch.device("xpu")
    fake_counts(monkeypatch, mps=1, xpu=1, cuda=2)
    assert resolve_device("auto") == torch.device("cuda")
    assert available_devices() == ["cuda", "cuda:0", "cuda:1", "xpu", "xpu:0", "mps", "cpu"]
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize("name, what", [("mps", "device 'mps'"), ("xpu", "device 'xpu'"), ("meta", "device 'meta'"),
                                        ("cuda", "device 'cuda'"), ("cuda:7", "device 'cuda:7'"),
                                        ("cpu:1", "cpu device 1"), ("tpu", "unknown device 'tpu'")])
def test_unavailable_device_names_the_usable_ones(monkeypatch, name, what):
    fake_counts(monkeypatch)
    with pytest.raises(PnpOvssError, match=f"^{what}.*; devices usable here: auto, cpu$"):
        resolve_device(name)


def test_cuda_index_beyond_the_gpus(monkeypatch):
    fake_counts(monkeypatch, cuda=1)
    with pytest.raises(PnpOvssError, match="cuda device 3 is not available on this machine; devices usable here: "
                                           "auto, cuda, cuda:0, cpu"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["mps", "xpu", "meta"])
def test_cli_unavailable_device_one_line_exit_1(tiny_blip_dir, tmp_path, name):
    """The real command in a fresh process (no monkeypatching): one line, exit 1, nothing written."""
    if devices.device_count(name):
        pytest.skip(f"this machine has {name}")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pnpovss", "segment", str(tmp_path / "a.png"), "--classes", "cat",
                           "--model", str(tiny_blip_dir), "--out", str(out), "--device", name],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: device '{name}' is not available on this machine; devices usable here: auto")
    assert not out.exists()
