"""GradCAM on text-to-image cross-attention (PnP-OVSS step 2).

For a cross-attention layer with probabilities ``A`` (B, heads, T_text, 1+P) and the gradient
``G = dS/dA`` of the pre-softmax ITM *match* logit S, the saliency of text token t over image patch
p is ``A * relu(G)`` with the image [CLS] key dropped; a class's map is the mean over its word
pieces. Only the requested layer is differentiated: the backward pass starts at S, stops at A and
never enters the vision encoder.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .backbones.base import Backbone, TextBatch


def head_cams(attn: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """(B, H, T, 1+P) probabilities (+ gradient) -> (B, H, T, P) saliency of every head.

    The one implementation of the GradCAM formula ``A * relu(dS/dA)`` without the image [CLS] key:
    the pipeline (through :func:`cam_from_attention`), the tuning search's all-layer maps and the
    toy model's training probe all call it. ``grad=None`` gives raw attention (the no-GradCAM ablation).
    """
    cam = attn[..., 1:]
    if grad is not None:
        cam = cam * grad[..., 1:].clamp(min=0)
    return cam


def cam_from_attention(
    attn: torch.Tensor, grad: torch.Tensor | None, heads: Sequence[int] | None
) -> torch.Tensor:
    """(B, H, T, 1+P) probabilities (+ gradient) -> (B, T, P) saliency, the mean over ``heads``.

    ``grad=None`` gives raw attention (the no-GradCAM ablation). ``heads=None`` averages all heads.
    """
    cam = head_cams(attn, grad)
    if heads is not None:
        cam = cam[:, list(heads)]
    return cam.mean(dim=1)


def layer_attention_and_grad(
    backbone: Backbone,
    image_embeds: torch.Tensor,
    text: TextBatch,
    layers: Sequence[int],
    with_grad: bool = True,
    key_mask: torch.Tensor | None = None,
) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
    """One forward (and one backward when ``with_grad``): ``{layer: (A, dS/dA)}``, detached.

    Samples in a batch are independent, so the gradient of the summed logit is each sample's own.
    """
    logit, attn = backbone.match(image_embeds, text, layers, key_mask=key_mask)
    grads: Sequence[torch.Tensor | None]
    if with_grad:
        grads = torch.autograd.grad(logit.sum(), [attn[layer] for layer in layers])
    else:
        grads = [None] * len(layers)
    # fp32 from here on: under reduced precision the maps are still formed and compared in fp32
    return {layer: (attn[layer].detach().float(), None if g is None else g.detach().float())
            for layer, g in zip(layers, grads)}


def token_maps(
    backbone: Backbone,
    image_embeds: torch.Tensor,
    text: TextBatch,
    layer: int,
    heads: Sequence[int] | None,
    saliency: str = "gradcam",
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T, P) saliency of every text token at one layer and head set."""
    attn, grad = layer_attention_and_grad(
        backbone, image_embeds, text, [layer], with_grad=saliency == "gradcam", key_mask=key_mask
    )[layer]
    return cam_from_attention(attn, grad, heads)


def pool_classes(maps: torch.Tensor, class_tokens: list[list[list[int]]]) -> list[torch.Tensor]:
    """(B, T, P) token maps -> per image a (C_b, P) tensor: the mean over each class's word pieces."""
    return [
        torch.stack([maps[b, positions].mean(dim=0) for positions in classes])
        for b, classes in enumerate(class_tokens)
    ]
