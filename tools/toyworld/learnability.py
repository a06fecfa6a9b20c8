"""Can a network learn the shape world's outlines from image labels at all, and how fast? (prints JSON)

Why: the shape-world BLIP's vision tower stayed at chance through an hour of training, which leaves
two readings: the world cannot be learned from labels, or the tiny ViT learns it too slowly for the
budget. This separates them on the easiest version of the task (one object per image, plain fills,
plain background by default): a small CNN and the trainer's own BLIP vision tower (``train_itm``'s
default sizes), each with a linear head, trained with the same optimiser on fresh images every step
(training seeds, so nothing can be memorised) and scored on held-out evaluation images.

    python -m tools.toyworld.learnability --net cnn --steps 1200 --json bench/results/shape_learnability_cnn.json
    python -m tools.toyworld.learnability --net vit --steps 2000 --json bench/results/shape_learnability_vit.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pnpovss.toyworld.shapes import FILLS, fill_probs, make_shape_sample
from pnpovss.toyworld.world import SHAPES, TRAIN_SEED_BASE

from .arches import BlipArch
from .pixels import to_pixels

HELD_OUT_SEED = 901
"""Evaluation seed of the held-out images (the evaluation range, apart from the benches' seeds)."""


class SmallCNN(nn.Module):
    """Four 3x3 conv + batch-norm + ReLU blocks (three 2x poolings), global average pooling, linear."""

    def __init__(self, classes: int, width: int = 128) -> None:
        super().__init__()
        chans, layers = [3, 32, 64, width, width], []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.body, self.head = nn.Sequential(*layers), nn.Linear(width, classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(pixels).mean((2, 3)))


class TowerClassifier(nn.Module):
    """The trainer's BLIP vision tower (its default sizes) with a linear head on the [CLS] token."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        from .train_itm import TrainConfig

        cfg = TrainConfig()
        self.tower = BlipArch().build(cfg, BlipArch().tokenizer()).vision_model
        self.head = nn.Linear(cfg.vision_hidden, classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(pixel_values=pixels).pooler_output)


NETS = {"cnn": SmallCNN, "vit": TowerClassifier}


def images(seed: int, count: int, task: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` one-object samples of ``seed`` (indices 0..count-1) as pixels and class indices."""
    samples = [make_shape_sample(seed, i, objects=1, **task) for i in range(count)]
    samples = [s for s in samples if len(s.labels) == 1]  # (an object can fall under the visibility rule)
    return (to_pixels(np.stack([s.image for s in samples])),
            torch.tensor([SHAPES.index(s.labels[0]) for s in samples]))


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    task = {"object_fills": fill_probs(tuple(args.fills)), "background_fills": fill_probs(tuple(args.background)),
            "radius": (args.radius[0], args.radius[1])}
    net = NETS[args.net](len(SHAPES))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.05)
    x_val, y_val = images(HELD_OUT_SEED, args.held_out, task)
    curve, start = [], time.time()

    def score(step: int, loss: float) -> None:
        net.eval()
        with torch.no_grad():
            acc = float((net(x_val).argmax(1) == y_val).float().mean())
        net.train()
        curve.append({"step": step, "train_loss": round(loss, 4), "held_out_accuracy": round(acc, 4),
                      "seconds": round(time.time() - start, 1)})
        print(json.dumps(curve[-1]), flush=True)

    loss = float("nan")
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        x, y = images(TRAIN_SEED_BASE + 700_000 + args.seed * 100_000 + step, args.batch, task)
        batch_loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        batch_loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        loss = batch_loss.item()
        if step % args.every == 0:
            score(step, loss)
    score(args.steps, loss)
    return {"net": args.net, "task": {"objects": 1, "fills": args.fills, "background": args.background,
                                      "radius": args.radius},
            "settings": {k: getattr(args, k) for k in ("steps", "batch", "lr", "warmup", "seed", "held_out")},
            "chance": round(1 / len(SHAPES), 4), "held_out_seed": HELD_OUT_SEED,
            "parameters": sum(p.numel() for p in net.parameters()), "curve": curve}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=sorted(NETS), required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--fills", nargs="+", choices=FILLS, default=["plain"])
    ap.add_argument("--background", nargs="+", choices=FILLS, default=["plain"])
    ap.add_argument("--radius", type=float, nargs=2, default=[0.12, 0.28])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    record = {"command": "python -m tools.toyworld.learnability " + " ".join(argv or sys.argv[1:]),
              **run(args)}
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
