"""The residual-stream adapters reproduce each library's own image embedding."""

import pytest
import torch

from interpcore import InterpError
from prs_tiny import pixels, rel_err, tiny_hf_clip, tiny_open_clip_visual


@pytest.mark.parametrize("custom,ls", [(False, None), (False, 0.5), (True, 0.5)],
                         ids=["mha", "mha+layerscale", "custom-attn+qknorm+headscale+ls"])
def test_open_clip_stream_forward_equals_model(custom, ls):
    from interp_open_clip.vit_stream import OpenClipViTStream

    visual = tiny_open_clip_visual(custom=custom, ls=ls)
    s = OpenClipViTStream(visual)
    assert (s.num_layers, s.num_heads, s.width, s.head_dim, s.embed_dim) == (3, 4, 48, 12, 24)
    assert s.grid_size == (4, 4)
    x = pixels()
    with torch.no_grad():
        ref = visual(x)
        got = s.forward(x)
    assert rel_err(got, ref) < 1e-5


def test_open_clip_stream_rejects_other_pooling():
    from interp_open_clip.vit_stream import OpenClipViTStream

    with pytest.raises(InterpError, match="pool_type='avg'"):
        OpenClipViTStream(tiny_open_clip_visual(pool_type="avg"))
    with pytest.raises(InterpError, match="attentional pooling"):
        OpenClipViTStream(tiny_open_clip_visual(attentional_pool=True, attn_pooler_heads=4))
    with pytest.raises(InterpError, match="scaled-cosine"):
        OpenClipViTStream(tiny_open_clip_visual(scaled_cosine_attn=True))
    with pytest.raises(InterpError, match="not an open_clip VisionTransformer"):
        OpenClipViTStream(torch.nn.Linear(2, 2))


def test_open_clip_stream_wrong_image_size():
    from interp_open_clip.vit_stream import OpenClipViTStream

    s = OpenClipViTStream(tiny_open_clip_visual())
    with pytest.raises(InterpError, match="patches"):
        s.embed(pixels(size=40))


def test_hf_stream_forward_equals_model():
    from interp_hf_clip.vit_stream import HFClipViTStream

    m = tiny_hf_clip()
    s = HFClipViTStream(m.vision_model, m.visual_projection)
    assert (s.num_layers, s.num_heads, s.width, s.embed_dim, s.grid_size) == (3, 4, 48, 24, (4, 4))
    x = pixels()
    with torch.no_grad():
        ref = m(pixel_values=x).image_embeds
        got = s.forward(x)
    assert rel_err(got, ref) < 1e-5
    # the whole CLIPVisionModelWithProjection is accepted too
    s2 = HFClipViTStream(m)
    with torch.no_grad():
        assert rel_err(s2.forward(x), ref) < 1e-5


def test_hf_stream_rejects_other_modules():
    from interp_hf_clip.vit_stream import HFClipViTStream

    with pytest.raises(InterpError, match="not a transformers CLIPVisionTransformer"):
        HFClipViTStream(torch.nn.Linear(2, 2))
