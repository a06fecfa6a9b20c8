"""Give a toy ITM model's vision tower shape features first: a small CNN learns the shape world from
image labels, then the tower regresses the CNN's feature map patch by patch (prints progress; saves a
checkpoint that ``train_itm --init`` continues with the image-text objectives).

Why: on the shape world, the tiny ViT stayed at chance for thousands of steps of image-level losses,
while a small CNN leaves chance after a few hundred (``learnability.py``). A dense per-patch target is
a far stronger signal for a ViT than one label per image. The CNN sees only what the captions say (the
shapes present), like every other part of the toy training; masks are never used.

    python -m tools.toyworld.distill --arch blip --out DIR --teacher-stages 800:easy 1500:world \\
        --distill-steps 1500
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pnpovss.toyworld.shapes import fill_probs, make_shape_sample
from pnpovss.toyworld.world import SHAPES, TRAIN_SEED_BASE

from .arches import ARCHES
from .learnability import SmallCNN
from .pixels import to_pixels
from .train_itm import TrainConfig, _auc, save_checkpoint

TASKS = {
    "easy": {"objects": 1, "object_fills": fill_probs(("plain",)), "background_fills": fill_probs(("plain", "noise"))},
    "one": {"objects": 1},
    "world": {},
}
"""Teacher curricula: one plain object on a plain or smooth-noise background; one object of any fill; the world."""
HELD_OUT_SEED = 902


def batch(seed: int, count: int, task: dict, size: int = 96):
    samples = [make_shape_sample(seed, i, size, **TASKS[task]) for i in range(count)]
    present = torch.tensor([[float(c in s.labels) for c in SHAPES] for s in samples])
    return to_pixels(np.stack([s.image for s in samples])), present


def lr_at(step: int, total: int, lr: float, warmup: int = 100) -> float:
    return lr * min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, step / max(total, 1))))


def held_out_auc(score_fn, images: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Pooled presence ROC AUC of ``score_fn`` on held-out ``images`` (pixels, present shapes)."""
    x, y = images
    with torch.no_grad():
        s = score_fn(x)
    return _auc(s.numpy().ravel(), y.numpy().ravel().astype(bool))


def train_teacher(stages: list[tuple[int, str]], lr: float, seed: int, held_out: dict, log) -> SmallCNN:
    net = SmallCNN(len(SHAPES))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    total, step = sum(n for n, _ in stages), 0
    for n, task in stages:
        for _ in range(n):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr)
            x, y = batch(TRAIN_SEED_BASE + 800_000 + seed * 100_000 + step, 32, task)
            loss = F.binary_cross_entropy_with_logits(net(x), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 200 == 0 or step == total:
                net.eval()
                log({"teacher_step": step, "task": task, "loss": round(loss.item(), 4),
                     "held_out_auc_world": round(held_out_auc(net, held_out["world"]), 4),
                     "held_out_auc_one": round(held_out_auc(net, held_out["one"]), 4)})
                net.train()
    return net.eval()


def teacher_map(net: SmallCNN, x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, grid*grid, C) teacher features at the tower's patch grid."""
    with torch.no_grad():
        f = net.body(x)
        if f.shape[-1] != grid:
            f = F.interpolate(f, size=(grid, grid), mode="bilinear", align_corners=False)
    return f.flatten(2).transpose(1, 2)


def distill(arch, model, teacher: SmallCNN, steps: int, lr: float, seed: int, task: str, held_out: dict, log) -> None:
    """The tower's patch tokens regress the teacher's standardised features (through a training-only
    linear map); its [CLS] token learns the image's shapes (a training-only head)."""
    x0, _ = batch(TRAIN_SEED_BASE + 900_000, 64, task)
    tokens = arch.image_tokens(model, x0)
    grid = round(math.sqrt(tokens.shape[1] - 1))
    ref = teacher_map(teacher, x0, grid)
    mean, std = ref.mean((0, 1)), ref.std((0, 1)) + 1e-3
    to_teacher, cls_head = nn.Linear(tokens.shape[-1], ref.shape[-1]), nn.Linear(tokens.shape[-1], len(SHAPES))
    params = [*model.parameters(), *to_teacher.parameters(), *cls_head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        x, y = batch(TRAIN_SEED_BASE + 950_000 + seed * 100_000 + step, 32, task)
        tok = arch.image_tokens(model, x)
        target = (teacher_map(teacher, x, grid) - mean) / std
        loss_map = F.mse_loss(to_teacher(tok[:, 1:]), target)
        loss_cls = F.binary_cross_entropy_with_logits(cls_head(tok[:, 0]), y)
        loss = loss_map + loss_cls
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 200 == 0 or step + 1 == steps:
            auc = held_out_auc(lambda x: cls_head(arch.image_tokens(model, x)[:, 0]), held_out["world"])
            log({"distill_step": step + 1, "map_loss": round(loss_map.item(), 4), "cls_loss": round(loss_cls.item(), 4),
                 "held_out_cls_auc_world": round(auc, 4)})


def parse_stage(text: str) -> tuple[int, str]:
    """``STEPS:TASK`` -> (steps, task); anything else is a one-line error naming the form."""
    steps, _, task = text.partition(":")
    if not steps.isdigit() or task not in TASKS:
        raise SystemExit(f"--teacher-stages {text!r}: expected STEPS:TASK with TASK one of "
                         f"{', '.join(TASKS)}, e.g. 800:easy")
    return int(steps), task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHES), default="blip")
    ap.add_argument("--out", required=True)
    ap.add_argument("--teacher-stages", nargs="+", default=["800:easy", "1500:world"],
                    help=f"STEPS:TASK ... (tasks: {', '.join(TASKS)})")
    ap.add_argument("--teacher-lr", type=float, default=1e-3)
    ap.add_argument("--distill-steps", type=int, default=1500)
    ap.add_argument("--distill-task", choices=sorted(TASKS), default="world")
    ap.add_argument("--distill-lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=int, default=256, help="held-out images per AUC reading")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the training record here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    stages = [parse_stage(s) for s in args.teacher_stages]
    t0, history = time.time(), []

    def log(row: dict) -> None:
        history.append({**row, "seconds": round(time.time() - t0, 1)})
        print(json.dumps(history[-1]), flush=True)

    # the held-out images, drawn once for every reading (tasks "world" and "one")
    held_out = {task: batch(HELD_OUT_SEED, args.held_out, task) for task in ("world", "one")}
    teacher = train_teacher(stages, args.teacher_lr, args.seed, held_out, log)
    arch = ARCHES[args.arch]()
    tok = arch.tokenizer()
    cfg = replace(TrainConfig(), arch=args.arch, world="toyworld-shapes", out=args.out, seed=args.seed)
    model = arch.build(cfg, tok)
    distill(arch, model, teacher, args.distill_steps, args.distill_lr, args.seed, args.distill_task, held_out, log)
    record = {"command": "python -m tools.toyworld.distill " + " ".join(argv or sys.argv[1:]), "history": history}
    save_checkpoint(arch, model, tok, cfg, args.out, {"distilled": record, "steps_done": 0,
                                                       "wall_seconds": time.time() - t0, "metrics": {}})
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
