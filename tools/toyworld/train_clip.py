"""Train a tiny open_clip CLIP on the toy world (CPU), the reward model for label-free tuning.

Why: the tuning step scores "this image shows only class c's pixels, the rest mean colour"
against class names, so besides full images with captions, the training data holds exactly
such masked-object images (caption = the shape name in a few templates) and blank
mean-colour images (caption "a picture of nothing"), so p(class | masked object) beats
p(class | blank). Masks are used here only to make those masked inputs, as the reward
model will see them; the BLIP localiser never sees masks.

Run: ``python -m tools.toyworld.train_clip --out DIR --steps N``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from pnpovss.clip_dir import CONFIG_NAME, WEIGHTS_NAME, build_clip
from pnpovss.toyworld.clip_model import load_toy_clip
from pnpovss.toyworld.world import SHAPES, TRAIN_SEED_BASE, Sample, describe_objects, make_sample

from .pixels import TOY_MEAN, TOY_STD, to_pixels

TEMPLATES = ("{}", "a picture of a {}", "a {}", "a photo of a {}")


def model_config(image_size: int = 96) -> dict:
    """The open_clip CLIP config dict (stored as-is in open_clip_config.json)."""
    return {
        "embed_dim": 64,
        "quick_gelu": False,
        "vision_cfg": {"image_size": image_size, "patch_size": 8, "width": 128, "layers": 3, "head_width": 32, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3, "mlp_ratio": 2.0},
    }


def masked_object(s: Sample, shape: str, use_image_mean: bool) -> np.ndarray:
    """Keep only ``shape``'s pixels, the rest filled with a mean colour."""
    keep = s.mask == SHAPES.index(shape) + 1
    fill = s.image.reshape(-1, 3).mean(0) if use_image_mean else np.array([127.5, 127.5, 127.5])
    out = np.empty_like(s.image)
    out[:] = fill.astype(np.uint8)
    out[keep] = s.image[keep]
    return out


def make_batch(pool: list[Sample], rng: np.random.Generator, batch: int) -> tuple[np.ndarray, list[str]]:
    """Half masked single-class images, some blanks, the rest full images with captions."""
    images, texts = [], []
    for _ in range(batch):
        s = pool[int(rng.integers(len(pool)))]
        r = rng.random()
        if r < 0.5:
            c = s.labels[int(rng.integers(len(s.labels)))]
            images.append(masked_object(s, c, rng.random() < 0.7))
            texts.append(TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(c))
        elif r < 0.58:
            fill = s.image.reshape(-1, 3).mean(0) if rng.random() < 0.7 else np.full(3, 127.5)
            images.append(np.broadcast_to(fill.astype(np.uint8), s.image.shape).copy())
            texts.append("a picture of nothing")
        else:
            images.append(s.image)
            if rng.random() < 0.5:
                texts.append(describe_objects(s.objects, rng))
            else:
                texts.append("a picture of " + " ".join(s.labels))
    return np.stack(images), texts


@torch.no_grad()
def reward_check(model, tok, samples: list[Sample]) -> dict:
    """Mean p(true class | masked object) vs p(class | blank), over the 6 class names."""
    model.eval()
    text = tok([f"a picture of a {c}" for c in SHAPES])
    tf = F.normalize(model.encode_text(text), dim=-1)
    p_obj, p_blank, correct, n = [], [], 0, 0
    for s in samples:
        for c in s.labels:
            imgs = np.stack([masked_object(s, c, True), np.broadcast_to(s.image.reshape(-1, 3).mean(0).astype(np.uint8), s.image.shape)])
            vf = F.normalize(model.encode_image(to_pixels(imgs)), dim=-1)
            p = (100.0 * vf @ tf.t()).softmax(-1) if False else (model.logit_scale.exp() * vf @ tf.t()).softmax(-1)
            k = SHAPES.index(c)
            p_obj.append(float(p[0, k]))
            p_blank.append(float(p[1, k]))
            correct += int(p[0].argmax() == k)
            n += 1
    return {"p_class_masked": float(np.mean(p_obj)), "p_class_blank": float(np.mean(p_blank)), "masked_top1": correct / max(n, 1)}


def save(model, out: str, image_size: int, extra: dict) -> None:
    """Write config + fp16 safetensors atomically."""
    from safetensors.torch import save_file

    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_clip_", dir=parent)
    os.chmod(tmp, 0o755)
    cfg = {"model_cfg": model_config(image_size), "image_size": image_size, "mean": TOY_MEAN, "std": TOY_STD, **extra}
    with open(os.path.join(tmp, CONFIG_NAME), "w") as f:
        json.dump(cfg, f, indent=1)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(tmp, WEIGHTS_NAME))
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)


def train(out: str, steps: int, seed: int = 0, batch: int = 64, lr: float = 1e-3, pool_n: int = 3000,
          image_size: int = 96, threads: int = 1, max_minutes: float = 0.0, probe_every: int = 0, init: str = "", probe_n: int = 120) -> dict:
    from open_clip.tokenizer import SimpleTokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.Generator(np.random.PCG64([seed, 11]))
    t0 = time.time()
    previous: dict = {}
    if init:  # a further stage from a saved model, on a fresh training pool (another seed)
        model = load_toy_clip(init)[0]
        with open(os.path.join(init, CONFIG_NAME)) as f:
            old = json.load(f)
        previous = {"stages": old.get("stages", []) + [{k: old.get(k) for k in ("training", "metrics")}]}
    else:
        model = build_clip(model_config(image_size))
    tok = SimpleTokenizer(context_length=32)
    pool = [make_sample(TRAIN_SEED_BASE + 500_000 + seed, i, image_size) for i in range(pool_n)]
    held = [make_sample(0, i, image_size) for i in range(probe_n)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warm = max(1, min(100, steps // 10))
    for step in range(1, steps + 1):
        model.train()
        cur = lr * min(1.0, step / warm) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = cur
        imgs, texts = make_batch(pool, rng, batch)
        vf = F.normalize(model.encode_image(to_pixels(imgs)), dim=-1)
        tf = F.normalize(model.encode_text(tok(texts)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * vf @ tf.t()
        same = torch.tensor([[float(a == b) for b in texts] for a in texts])
        tgt = same / same.sum(1, keepdim=True)
        loss = 0.5 * (-(tgt * logits.log_softmax(1)).sum(1).mean() - (tgt * logits.t().log_softmax(1)).sum(1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == 1:
            print(f"step {step} loss {loss.item():.3f} lr {cur:.2e} t {time.time() - t0:.0f}s", flush=True)
        if probe_every and step % probe_every == 0:
            print(f"probe step {step}:", reward_check(model, tok, held), flush=True)
        if max_minutes and time.time() - t0 > max_minutes * 60:
            break
    metrics = reward_check(model, tok, held)
    print("reward check (eval seed 0):", metrics, flush=True)
    extra = {"training": {"steps": step, "seed": seed, "batch": batch, "lr": lr, "pool": pool_n, "init": init,
                          "wall_seconds": time.time() - t0}, "metrics": metrics, **previous}
    save(model, out, image_size, extra)
    return extra


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=0.0)
    p.add_argument("--probe-every", type=int, default=0, help="print the reward check every N steps")
    p.add_argument("--init", default="", help="continue from this saved toy CLIP directory")
    a = p.parse_args(argv)
    train(a.out, a.steps, a.seed, a.batch, a.lr, a.pool, threads=a.threads, max_minutes=a.max_minutes,
          probe_every=a.probe_every, init=a.init)
    load_toy_clip(a.out)  # fail loudly if the written directory does not load back


if __name__ == "__main__":
    main()
