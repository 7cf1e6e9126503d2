"""Tiny models with random weights, built in-process: tests and benchmarks exercise the
real model code paths without downloading (or loading) any weights."""

from __future__ import annotations

from functools import partial


def tiny_sam(seed: int = 0, img_size: int = 256):
    """A Segment Anything ``Sam`` with SAM's architecture shrunk (ViT depth 1, width 32,
    16-px patches) and seeded random weights: same seed, same module. Its masks are
    nonsense, which is what tests of the refinement guard need."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    if img_size % 16:
        raise ValueError(f"img_size must be a multiple of the 16-px patch, got {img_size}")
    prompt_dim = 32
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's random state
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=img_size,
                patch_size=16,
                embed_dim=32,
                depth=1,
                num_heads=2,
                mlp_ratio=2.0,
                out_chans=prompt_dim,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                qkv_bias=True,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=prompt_dim,
                image_embedding_size=(img_size // 16, img_size // 16),
                input_image_size=(img_size, img_size),
                mask_in_chans=8,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
                transformer_dim=prompt_dim,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    return sam.eval()
