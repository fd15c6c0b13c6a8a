"""The backbone contract (interpcore.testing.check_backbone) over every registered family,
and open_clip vs transformers on identical weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

import interpcore  # noqa: E402
from interpcore.testing import ContractError, check_backbone  # noqa: E402

from backbone_tiny import (  # noqa: E402
    OC_RN,
    OC_VIT,
    hf_config_like,
    open_clip_model,
    open_clip_to_hf,
    perturb,
    pixels,
    rel,
    write_clip_tokenizer,
)


pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf") / "tiny"
    torch.manual_seed(0)
    perturb(transformers.CLIPModel(hf_config_like()).eval()).save_pretrained(str(folder))
    write_clip_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("siglip") / "tiny"
    cfg = transformers.SiglipConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
    )
    torch.manual_seed(0)
    transformers.SiglipModel(cfg).eval().save_pretrained(str(folder))
    write_clip_tokenizer(folder)  # any tokenizer with this vocabulary will do for the contract
    return folder


def _tiny(prefix, tmp_path, hf_folder, siglip_folder):
    """A tiny backbone of each built-in family, loaded by name through the registry."""
    if prefix == "open_clip":
        return [interpcore.get_backbone("open_clip:tiny-contract-vit", pretrained="random",
                                        device="cpu", model_config=OC_VIT),
                interpcore.get_backbone("open_clip:tiny-contract-rn", pretrained="random",
                                        device="cpu", model_config=OC_RN)]
    if prefix == "clip":
        # clip: maps OpenAI names to open_clip architectures; the tiny model goes in as a file
        # of the right architecture is impossible offline, so check the loader's result on a
        # tiny open_clip model built with the same QuickGELU setting clip: uses
        from interp_open_clip import load_open_clip

        return [load_open_clip("tiny-contract-clip", "random", "cpu", model_config=OC_VIT,
                               quick_gelu=True, display_name="clip:tiny", prefix="clip")]
    if prefix == "hf":
        return [interpcore.get_backbone(f"hf:{hf_folder}", device="cpu"),
                interpcore.get_backbone(f"hf:{siglip_folder}", device="cpu")]
    if prefix == "timm":
        return [interpcore.get_backbone("timm:resnet18", pretrained="random", device="cpu", image_size=64),
                interpcore.get_backbone("timm:vit_tiny_patch16_224", pretrained="random",
                                        device="cpu", img_size=32, depth=2)]
    if prefix == "torchvision":
        return [interpcore.get_backbone("torchvision:resnet18", pretrained="random", device="cpu",
                                        image_size=64, num_classes=4)]
    # families from other plugins: every listed model that loads with its default weights
    infos = interpcore.list_backbones(f"{prefix}:*")
    if not infos:
        pytest.skip(f"backbone family '{prefix}' lists no models")
    loaded, why = [], []
    for info in infos[:4]:
        try:
            loaded.append(interpcore.get_backbone(info.name, device="cpu"))
        except InterpError as exc:  # e.g. weights not trained / not shipped yet
            why.append(f"{info.name}: {exc}")
    if not loaded:
        pytest.skip("no model of this family can be loaded here: " + "; ".join(why))
    return loaded


from interpcore import InterpError  # noqa: E402

PREFIXES = sorted(interpcore.get_registry().entries["backbone"])


@pytest.mark.parametrize("prefix", PREFIXES)
def test_contract_over_every_registered_family(prefix, tmp_path, hf_folder, siglip_folder):
    for bb in _tiny(prefix, tmp_path, hf_folder, siglip_folder):
        report = check_backbone(bb)
        assert report.passed, bb.name


def test_builtin_families_are_registered():
    assert {"open_clip", "clip", "hf", "timm", "torchvision"} <= set(PREFIXES)


def test_contract_catches_a_broken_backbone():
    from interp_open_clip import load_open_clip

    bb = load_open_clip("tiny-broken", "random", "cpu", model_config=OC_VIT)
    bb.embed_dim = 7  # lies about its embedding size
    with pytest.raises(ContractError, match=r"encode_image gave shape \(3, 24\), expected \(3, 7\)"):
        check_backbone(bb)


def test_contract_fixture_is_registered(backbone_contract):
    assert backbone_contract is check_backbone


# -- open_clip vs transformers on identical weights ---------------------------------------------


def test_open_clip_and_transformers_agree_on_identical_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    oc = open_clip_model(OC_VIT, seed=5)
    save_file({k: v.contiguous() for k, v in oc.state_dict().items()}, str(tmp_path / "oc.safetensors"))
    hf = transformers.CLIPModel(hf_config_like(OC_VIT)).eval()
    missing, unexpected = hf.load_state_dict(open_clip_to_hf(oc.state_dict()), strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing)
    folder = tmp_path / "hf"
    hf.save_pretrained(str(folder))
    write_clip_tokenizer(folder)

    a = interpcore.get_backbone("open_clip:tiny-x", pretrained=str(tmp_path / "oc.safetensors"),
                                device="cpu", model_config=OC_VIT)
    b = interpcore.get_backbone(f"hf:{folder}", device="cpu")
    x = pixels(3)
    za, zb = a.encode_image(x), b.encode_image(x)
    assert rel(zb, za) < 1e-5
    texts = ["a red square", "two blue circles on the left"]
    ta, tb = a.tokenize(texts), b.tokenize(texts)
    for ra, rb in zip(ta, tb):  # same ids up to the end token (the padding after it differs)
        end = int((ra == 49407).nonzero()[0])
        assert ra[: end + 1].tolist() == rb[: end + 1].tolist()
    assert rel(b.encode_text(texts), a.encode_text(texts)) < 1e-5

    # the residual streams of both libraries reproduce encode_image and agree block by block
    sa, sb = a.residual_stream(), b.residual_stream()
    with torch.no_grad():
        assert rel(sa.forward(x), za) < 1e-5
        assert rel(sb.forward(x), zb) < 1e-5
        ea, eb = sa.embed(x), sb.embed(x)
        assert rel(eb, ea) < 1e-5
        for i in range(sa.num_layers):
            pa, pb = sa.block(i), sb.block(i)
            ya = pa.ln_1(ea)
            assert rel(sb.attention(i, pb.ln_1(ea)), sa.attention(i, ya)) < 1e-5
            assert rel(pb.mlp(pb.ln_2(ea)), pa.mlp(pa.ln_2(ea))) < 1e-5
