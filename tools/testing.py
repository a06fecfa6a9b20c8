"""Models built from configs for tests and benchmarks (no network, random weights), and tiny
dataset folders in the mmsegmentation layouts: the one place test builders live. Not part of the
installed package.

Tiny BLIP / BridgeTower models are saved with ``save_pretrained`` and the tiny CLIP as an open_clip
local directory, so that tests load them back through the very same ``from_pretrained`` /
:func:`pnpovss.reward.load_clip` path a user's hub id or directory takes. The full-size configs at
the end are for random-weight speed benchmarks (``bench/speed.py``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pnpovss.reward import OPENAI_MEAN, OPENAI_STD

WORDS = (
    "a picture of photo the and with in on cat dog grass sky tree car person bird circle square "
    "triangle star cross heart red green blue yellow black white purple orange big small "
    "potted plant dining table tv monitor ##s ##ing ##ed ##er bat ##man min ##ion"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def has_cxx_compiler() -> bool:
    """Whether torch.compile's inductor backend can build its CPU kernels here (it needs a C++ compiler)."""
    import shutil

    return any(shutil.which(c) for c in ("cc", "gcc", "g++", "clang"))


def wordpiece_vocab(words: list[str] | tuple[str, ...] = WORDS) -> dict[str, int]:
    """A BERT vocab: specials, ASCII characters and ##letters (so any word tokenises), then ``words``."""
    chars = [chr(c) for c in range(33, 127)]
    tokens = list(dict.fromkeys(SPECIAL + chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list(words)))
    return {tok: i for i, tok in enumerate(tokens)}


def build_tiny_blip(
    out_dir: str | Path | None = None,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    text_layers: int = 3,
    heads: int = 2,
    seed: int = 0,
    enc_token: bool = True,
    vocab_size: int | None = None,
) -> Path:
    """A random-weight ``BlipForImageTextRetrieval`` + processor saved to ``out_dir``.

    ``enc_token=False`` leaves ``[ENC]`` out of the tokenizer (as hub processors may);
    ``vocab_size`` sets the text-embedding rows (30524 = the original BLIP layout, whose last row
    is ``[ENC]``)."""
    from transformers import (BertTokenizerFast, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor,
                              BlipProcessor)

    out = Path(out_dir or tempfile.mkdtemp(prefix="tiny-blip-"))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=wordpiece_vocab(), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", **({"additional_special_tokens": ["[ENC]"]} if enc_token else {})})
    torch.manual_seed(seed)
    config = BlipConfig(
        vision_config=dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
                           initializer_range=0.02),
        text_config=dict(vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=text_layers, num_attention_heads=heads, encoder_hidden_size=hidden,
                         max_position_embeddings=64, is_decoder=True, initializer_range=0.02,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         sep_token_id=tokenizer.sep_token_id),
    )
    model = BlipForImageTextRetrieval(config).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------ BridgeTower
BPE_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
"""RoBERTa's special tokens in its own id order (bos 0, pad 1, eos 2), as BridgeTower's config expects."""


def byte_bpe_tokenizer(words: list[str] | tuple[str, ...] = WORDS, vocab_size: int = 400):
    """An offline RoBERTa tokenizer: a small byte-level BPE trained here on captions of ``words``.

    Byte-level BPE covers any string (the 256 byte symbols are in the vocab), so unknown class
    names still tokenise, into more pieces, exactly as with the real 50k-token vocab.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BPE_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["a picture of " + " ".join(words[i : i + 5]) for i in range(len(words))]
    bpe.train_from_iterator(corpus * 3, trainer)
    model = json.loads(bpe.to_str())["model"]
    return RobertaTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])


def bridgetower_config(tokenizer, *, image_size: int, patch_size: int, hidden: int, vision_hidden: int,
                       text_layers: int, cross_layers: int, heads: int, intermediate: int,
                       vocab_size: int | None = None, max_positions: int = 66):
    """A ``BridgeTowerConfig``; the towers get equal depth, as the model's forward requires."""
    from transformers import BridgeTowerConfig

    return BridgeTowerConfig(
        hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=cross_layers,
        vision_config=dict(hidden_size=vision_hidden, num_hidden_layers=text_layers, patch_size=patch_size,
                           image_size=image_size),
        text_config=dict(vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, num_hidden_layers=text_layers,
                         num_attention_heads=heads, intermediate_size=intermediate,
                         max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        attn_implementation="eager",
    )


def build_tiny_bridgetower(
    out_dir: str | Path | None = None,
    *,
    image_size: int = 56,
    patch_size: int = 14,
    hidden: int = 32,
    text_layers: int = 3,
    cross_layers: int = 2,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """A random-weight ``BridgeTowerForImageAndTextRetrieval`` + processor saved to ``out_dir``.

    The vision width is 64 (BridgeTower's ViT uses width // 64 heads). A ``pnpovss_preset.json``
    pins the model's own small size and a valid layer, since the adapter's defaults are the
    paper's 770 px for the real checkpoint.
    """
    from transformers import BridgeTowerForImageAndTextRetrieval, BridgeTowerImageProcessor, BridgeTowerProcessor

    out = Path(out_dir or tempfile.mkdtemp(prefix="tiny-bridgetower-"))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_bpe_tokenizer()
    torch.manual_seed(seed)
    config = bridgetower_config(tokenizer, image_size=image_size, patch_size=patch_size, hidden=hidden,
                                vision_hidden=64, text_layers=text_layers, cross_layers=cross_layers,
                                heads=heads, intermediate=hidden * 2)
    model = BridgeTowerForImageAndTextRetrieval(config).eval()
    processor = BridgeTowerProcessor(
        image_processor=BridgeTowerImageProcessor(size={"shortest_edge": image_size},
                                                  crop_size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    preset = {"image_size": image_size, "layer": 1, "head": 0}
    (out / "pnpovss_preset.json").write_text(json.dumps({"config": preset}, indent=2) + "\n")
    return out


# ------------------------------------------------------------------------------------ CLIP (open_clip)

def tiny_clip_config(image_size: int = 32, patch_size: int = 8, width: int = 32, embed_dim: int = 32) -> dict:
    """open_clip ``model_cfg`` of a 1-layer ViT + 1-layer text transformer (SimpleTokenizer vocab)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": 1,
                       "head_width": width // 2},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": width, "heads": 2, "layers": 1},
    }


def build_tiny_clip(out_dir: str | Path | None = None, *, seed: int = 0, **cfg: int) -> Path:
    """Random-weight tiny CLIP written as an open_clip local directory; returns the directory."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out_dir or tempfile.mkdtemp(prefix="tiny-clip-"))
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = tiny_clip_config(**cfg)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg).eval()
    preprocess = {"size": model_cfg["vision_cfg"]["image_size"], "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out


# ------------------------------------------------------------------------------------ full-size configs
def blip_itm_large_config():
    """``Salesforce/blip-itm-large-*``'s architecture (ViT-L/16 at 384 px, BERT-base text side with
    cross-attention), for random-weight benchmarks. ``initializer_range=0.02`` everywhere: the
    vision default of 1e-10 makes backward hit denormal numbers and run 10-30x slower."""
    from transformers import BlipConfig

    return BlipConfig(
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=384, patch_size=16, initializer_range=0.02),
        text_config=dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, encoder_hidden_size=1024, max_position_embeddings=512,
                         is_decoder=True, initializer_range=0.02),
        image_text_hidden_size=256,
    )


def bridgetower_large_config(tokenizer):
    """``BridgeTower/bridgetower-large-itm-mlm-itc``'s architecture (ViT-L/14 at 294 px, RoBERTa-large,
    6 cross-modal layers of 16 heads). ``initializer_factor=0.4`` gives the std-0.02 weights of
    BERT-style init instead of BridgeTower's 0.05, whose saturated random softmaxes are not what a
    trained model computes."""
    config = bridgetower_config(tokenizer, image_size=294, patch_size=14, hidden=1024, vision_hidden=1024,
                                text_layers=24, cross_layers=6, heads=16, intermediate=4096,
                                vocab_size=50265, max_positions=514)
    config.initializer_factor = 0.4
    config.vision_config.initializer_factor = 0.4
    config.text_config.initializer_factor = 0.4
    return config


# ------------------------------------------------------------------ dataset folders (mmsegmentation layouts)
H, W = 12, 16


def write_pair(img_dir, ann_dir, stem, raw, ann_suffix=".png", mode="L", rng=None):
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    rng = rng or np.random.default_rng(0)
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(img_dir / f"{stem}.jpg")
    ann = Image.fromarray(raw.astype(np.uint8), mode="L")
    if mode == "P":
        ann = ann.convert("P")
        ann.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    ann.save(ann_dir / f"{stem}{ann_suffix}")


def raw_map(values):
    """A label map with one vertical band per value."""
    raw = np.zeros((H, W), dtype=np.int64)
    for k, v in enumerate(values):
        raw[:, k * W // len(values):(k + 1) * W // len(values)] = v
    return raw


def make_voc_like(root, ann_dir, split, values_per_image, mode="P"):
    for i, values in enumerate(values_per_image):
        write_pair(root / "JPEGImages", root / ann_dir, f"im{i}", raw_map(values), mode=mode)
    (root / split).parent.mkdir(parents=True, exist_ok=True)
    (root / split).write_text("".join(f"im{i}\n" for i in range(len(values_per_image))))


def make_coco(root):
    for i, values in enumerate([[0, 79, 80, 255], [170, 12]]):
        write_pair(root / "images" / "val2017", root / "annotations" / "val2017", f"{i:012d}", raw_map(values),
                   ann_suffix="_labelTrainIds.png")


def make_cityscapes(root):
    """Two city folders, as mmsegmentation's Cityscapes layout (labelTrainIds: 0..18, 255)."""
    for city, i, values in [("frankfurt", 1, [0, 18, 255]), ("lindau", 7, [5, 13])]:
        stem = f"{city}_000000_{i:06d}"
        write_pair(root / "leftImg8bit" / "val" / city, root / "gtFine" / "val" / city, stem, raw_map(values),
                   ann_suffix="_gtFine_labelTrainIds.png")
        jpg = root / "leftImg8bit" / "val" / city / f"{stem}.jpg"
        Image.open(jpg).save(jpg.with_name(f"{stem}_leftImg8bit.png"))
        jpg.unlink()


def make_mmseg_root(data: Path, skip: tuple[str, ...] = ()) -> Path:
    """Two images of every dataset of the standard suite under ``data``, laid out as
    mmsegmentation's data root (``VOCdevkit/VOC2012``, ``VOCdevkit/VOC2010``, ``coco_stuff164k``,
    ``cityscapes``, ``ade/ADEChallengeData2016``); ``skip`` leaves out some of those folders."""
    data = Path(data)
    if "VOC2012" not in skip:
        make_voc_like(data / "VOCdevkit" / "VOC2012", "SegmentationClass", "ImageSets/Segmentation/val.txt",
                      [[0, 15, 255], [3, 3, 20]])
    if "VOC2010" not in skip:
        make_voc_like(data / "VOCdevkit" / "VOC2010", "SegmentationClassContext",
                      "ImageSets/SegmentationContext/val.txt", [[0, 5, 59], [12, 30]], mode="L")
    if "coco_stuff164k" not in skip:
        make_coco(data / "coco_stuff164k")
    if "cityscapes" not in skip:
        make_cityscapes(data / "cityscapes")
    if "ADEChallengeData2016" not in skip:
        ade = data / "ade" / "ADEChallengeData2016"
        for i, values in enumerate([[0, 1, 150], [7, 20]]):
            write_pair(ade / "images" / "validation", ade / "annotations" / "validation", f"ADE_val_{i:08d}",
                       raw_map(values))
    return data


def make_toy_folder(folder: Path, images: int, seed: int) -> Path:
    """``images`` toy-world images (96 px) of world seed ``seed`` as ``img0.png`` ... in ``folder``:
    inputs for ``pnpovss segment`` runs (the shipped toy model segments one in ~0.2 s)."""
    from pnpovss.toyworld.world import make_sample

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.fromarray(make_sample(seed, i).image).save(folder / f"img{i}.png")
    return folder

