"""Which token the BLIP ITM pass starts with: [ENC] from the tokenizer, else from BLIP's
30524-row embedding layout (id 30523) with a notice, else a clear refusal; never a silent [CLS]."""

import logging

import numpy as np
import pytest
import torch

from pnpovss import ModelLoadError, Segmenter
from pnpovss.backbones.blip import BLIP_ENC_ID, resolve_enc_token
from tools.testing import build_tiny_blip


def _maps(seg: Segmenter, image: np.ndarray) -> np.ndarray:
    return seg.segment(image, ["cat", "dog"], keep_all=True, drop_iters=1, crf=False).grid_maps


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)


def test_tokenizer_enc_is_used(tiny_blip_dir):
    seg = Segmenter.from_pretrained(str(tiny_blip_dir), layer=2, head=1)
    bb = seg.backbone
    assert bb.enc_token_id == bb.tokenizer.convert_tokens_to_ids("[ENC]") != bb.tokenizer.cls_token_id
    assert bb.build_text("a picture of ", [["cat"]]).input_ids[0, 0] == bb.enc_token_id


def test_blip_layout_fallback_equals_a_tokenizer_naming_enc(tmp_path, image, caplog):
    """A tokenizer without [ENC] on a 30524-row model uses row 30523: the maps equal those of the
    same weights whose tokenizer names [ENC] at another id holding that very row."""
    plain = build_tiny_blip(tmp_path / "plain", enc_token=False, vocab_size=30524)
    with caplog.at_level(logging.WARNING, logger="pnpovss.backbones.blip"):
        seg_plain = Segmenter.from_pretrained(str(plain), layer=2, head=1)
    assert seg_plain.backbone.enc_token_id == BLIP_ENC_ID
    notices = [r.getMessage() for r in caplog.records if "[ENC]" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0] and "30523" in notices[0]
    assert seg_plain.backbone.build_text("a picture of ", [["cat"]]).input_ids[0, 0] == BLIP_ENC_ID

    named = tmp_path / "named"  # same weights; [ENC] added to the tokenizer, its row a copy of 30523
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    model = BlipForImageTextRetrieval.from_pretrained(plain)
    proc = BlipProcessor.from_pretrained(plain)
    proc.tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    enc = proc.tokenizer.convert_tokens_to_ids("[ENC]")
    assert enc < BLIP_ENC_ID
    with torch.no_grad():
        emb = model.text_encoder.get_input_embeddings().weight
        emb[enc] = emb[BLIP_ENC_ID]
    model.save_pretrained(named)
    proc.save_pretrained(named)
    seg_named = Segmenter.from_pretrained(str(named), layer=2, head=1)
    assert seg_named.backbone.enc_token_id == enc
    a, b = _maps(seg_plain, image), _maps(seg_named, image)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())

    # and [ENC] matters: the [CLS] ablation gives other maps
    cls_seg = Segmenter(type(seg_plain.backbone)(seg_plain.backbone.model, proc, "x", use_enc_token=False),
                        seg_plain.config)
    with_cls, with_enc = _maps(cls_seg, image), _maps(seg_plain, image)
    assert np.abs(with_cls - with_enc).max() > 0.01 * np.abs(with_enc).max()  # rounding is ~1e-6 of it


def test_no_enc_and_no_blip_layout_is_refused(tmp_path):
    plain = build_tiny_blip(tmp_path / "plain", enc_token=False)
    with pytest.raises(ModelLoadError, match=r"tokenizer has no \[ENC\] token and the text embedding \(\d+ rows\) "
                                             r"is not BLIP's 30524-row layout"):
        Segmenter.from_pretrained(str(plain))


def test_resolve_enc_token_rules():
    assert resolve_enc_token({"[CLS]": 0, "[ENC]": 7}, 10, "m") == 7
    with pytest.raises(ModelLoadError, match=r"\[ENC\] id 12 is outside the text embedding \(10 rows\)"):
        resolve_enc_token({"[ENC]": 12}, 10, "m")
    assert resolve_enc_token({"[CLS]": 0}, 30524, "m") == BLIP_ENC_ID
    with pytest.raises(ModelLoadError, match="gives BLIP's \\[ENC\\] id 30523 to 'zebra'"):
        resolve_enc_token({"[CLS]": 0, "zebra": BLIP_ENC_ID}, 30524, "m")
