"""Tiny models and checkpoints for the backbone tests (random weights, no network).

Each helper writes what a user would have on disk: an open_clip config + checkpoint file, a
transformers folder from save_pretrained (with a CLIP tokenizer built from open_clip's own BPE
vocabulary, so the two libraries tokenize identically), timm / torchvision state dicts.
"""

from __future__ import annotations

import json

import torch

#: a ViT CLIP small enough to build in milliseconds (4 heads of width 16)
OC_VIT = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
#: the same with a modified-ResNet image tower
OC_RN = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def perturb(model, seed=0, scale=0.2):
    """Random non-trivial norms and biases so that every parameter matters in comparisons."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "norm" in name:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def open_clip_model(cfg=OC_VIT, seed=0):
    """An open_clip CLIP built from ``cfg`` with random (perturbed) weights."""
    import open_clip

    torch.manual_seed(seed)
    cfg = json.loads(json.dumps(cfg))
    model = open_clip.CLIP(**cfg).eval()
    return perturb(model, seed)


def pixels(n=2, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def write_clip_tokenizer(folder):
    """A transformers CLIPTokenizer equal to open_clip's SimpleTokenizer, saved to ``folder``."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    st = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {special.get(k, k): v for k, v in st.encoder.items()}
    merges = sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m, _ in merges) + "\n", encoding="utf-8"
    )
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(str(folder))
    return tok


def hf_config_like(cfg=OC_VIT, act="gelu"):
    """A transformers CLIPConfig with the architecture of the open_clip config ``cfg``."""
    from transformers import CLIPConfig

    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    return CLIPConfig(
        text_config=dict(
            vocab_size=t["vocab_size"], hidden_size=t["width"], intermediate_size=4 * t["width"],
            num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
            max_position_embeddings=t["context_length"], hidden_act=act,
            eos_token_id=49407, bos_token_id=49406, pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=v["width"], intermediate_size=4 * v["width"], num_hidden_layers=v["layers"],
            num_attention_heads=v["width"] // v["head_width"], image_size=v["image_size"],
            patch_size=v["patch_size"], hidden_act=act,
        ),
        projection_dim=cfg["embed_dim"],
    )


def _blocks(prefix_oc, prefix_hf, n, sd):
    out = {}
    for i in range(n):
        a, b = f"{prefix_oc}.resblocks.{i}", f"{prefix_hf}.layers.{i}"
        q, k, v = sd[f"{a}.attn.in_proj_weight"].chunk(3)
        qb, kb, vb = sd[f"{a}.attn.in_proj_bias"].chunk(3)
        out.update({
            f"{b}.layer_norm1.weight": sd[f"{a}.ln_1.weight"], f"{b}.layer_norm1.bias": sd[f"{a}.ln_1.bias"],
            f"{b}.self_attn.q_proj.weight": q, f"{b}.self_attn.q_proj.bias": qb,
            f"{b}.self_attn.k_proj.weight": k, f"{b}.self_attn.k_proj.bias": kb,
            f"{b}.self_attn.v_proj.weight": v, f"{b}.self_attn.v_proj.bias": vb,
            f"{b}.self_attn.out_proj.weight": sd[f"{a}.attn.out_proj.weight"],
            f"{b}.self_attn.out_proj.bias": sd[f"{a}.attn.out_proj.bias"],
            f"{b}.layer_norm2.weight": sd[f"{a}.ln_2.weight"], f"{b}.layer_norm2.bias": sd[f"{a}.ln_2.bias"],
            f"{b}.mlp.fc1.weight": sd[f"{a}.mlp.c_fc.weight"], f"{b}.mlp.fc1.bias": sd[f"{a}.mlp.c_fc.bias"],
            f"{b}.mlp.fc2.weight": sd[f"{a}.mlp.c_proj.weight"], f"{b}.mlp.fc2.bias": sd[f"{a}.mlp.c_proj.bias"],
        })
    return out


def open_clip_to_hf(sd: dict, cfg=OC_VIT) -> dict:
    """Convert an open_clip ViT CLIP state dict to transformers CLIPModel keys."""
    out = {
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].T.contiguous(),
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].T.contiguous(),
        "logit_scale": sd["logit_scale"].reshape(()),
    }
    out.update(_blocks("visual.transformer", "vision_model.encoder", cfg["vision_cfg"]["layers"], sd))
    out.update(_blocks("transformer", "text_model.encoder", cfg["text_cfg"]["layers"], sd))
    return out
