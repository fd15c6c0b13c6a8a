"""Tiny random ViT CLIP towers for the PRS tests (random weights, no network, no files).

The whole tiny open_clip backbone and the tiny dataset are public helpers of
:mod:`interpcore.testing` (``tiny_open_clip_backbone``, ``tiny_images``); these are the raw
towers and the transformers backbone the stream tests compare against.
"""

import torch


def tiny_open_clip_visual(seed=0, custom=False, ls=None, image_size=32, patch=8, width=48,
                          layers=3, heads=4, output_dim=24, **kw):
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(seed)
    extra = dict(qk_norm=True, scale_heads=True) if custom else {}
    extra.update(kw)
    v = VisionTransformer(image_size=image_size, patch_size=patch, width=width, layers=layers,
                          heads=heads, mlp_ratio=2.0, ls_init_value=ls, output_dim=output_dim,
                          **extra)
    # random, non-trivial norms, biases and scales so that every term matters
    with torch.no_grad():
        for name, p in v.named_parameters():
            if name.endswith("bias") or "ln" in name or "scale" in name or name.endswith("gamma"):
                p.add_(0.3 * torch.randn_like(p))
    return v.eval()


def tiny_open_clip_model(seed=0, **kw):
    """A whole tiny open_clip CLIP (image + text towers) with a tokenizer-free text config."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=24,
        vision_cfg=dict(image_size=32, patch_size=8, width=48, layers=3, head_width=12, mlp_ratio=2.0, **kw),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=1),
    )
    return model.eval()


def tiny_hf_clip(seed=0, image_size=32, patch=8, width=48, layers=3, heads=4, proj=24):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch,
                           projection_dim=proj, hidden_act="quick_gelu")
    m = CLIPVisionModelWithProjection(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return m


def pixels(n=3, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def tiny_hf_backbone(seed=0, name="tiny:hf-clip-vit"):
    """A TorchBackbone (image tower only) around a tiny random transformers CLIP ViT."""
    from interp_hf_clip.vit_stream import HFClipViTStream
    from interpcore import Capability
    from interpcore.torch_backbone import TorchBackbone

    class _TinyHF(TorchBackbone):
        def _encode_image(self, pixels):
            return self.model(pixel_values=pixels).image_embeds

        def residual_stream(self):
            return HFClipViTStream(self.model.vision_model, self.model.visual_projection, self.name)

    return _TinyHF(name, tiny_hf_clip(seed), device="cpu", embed_dim=24,
                   capabilities=[Capability.IMAGE_ENCODER, Capability.VIT_RESIDUAL_STREAM])
