"""Backbone plugins (issue 3): tiny checkpoints written to disk and loaded back by name.

Everything runs offline on random tiny models; real weights are exercised only through the
code paths that find them (pre-populated caches, files) and the messages when they are absent.
"""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

import interpcore  # noqa: E402
from interpcore import Capability, CapabilityError, InterpError, OfflineError  # noqa: E402

from backbone_tiny import (  # noqa: E402
    OC_RN,
    OC_VIT,
    open_clip_model,
    pixels,
    rel,
    write_clip_tokenizer,
)


pytestmark = pytest.mark.usefixtures("offline")


def _save_open_clip(tmp_path, cfg=OC_VIT, name="tiny.safetensors", half=False, seed=0):
    from safetensors.torch import save_file

    model = open_clip_model(cfg, seed)
    sd = {k: (v.half() if half else v).contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return model, path


# -- open_clip --------------------------------------------------------------------------------


def test_open_clip_checkpoint_roundtrip_through_registry(tmp_path):
    model, path = _save_open_clip(tmp_path)
    bb = interpcore.get_backbone(
        "open_clip:tiny-vit-rt", pretrained=str(path), device="cpu", model_config=OC_VIT
    )
    x = pixels()
    tokens = bb.tokenize(["a red square", "two blue circles"])
    with torch.no_grad():
        ref_img, ref_txt = model.encode_image(x), model.encode_text(tokens)
    assert torch.equal(bb.encode_image(x), ref_img)
    assert torch.equal(bb.encode_text(["a red square", "two blue circles"]), ref_txt)
    assert bb.name == "open_clip:tiny-vit-rt" and bb.pretrained == str(path)
    assert bb.embed_dim == OC_VIT["embed_dim"]


def test_load_open_clip_json_config_display_name_and_fp16_checkpoint(tmp_path):
    from interp_open_clip import load_open_clip

    cfg_file = tmp_path / "arch.json"
    cfg_file.write_text(json.dumps(OC_VIT))
    model, path = _save_open_clip(tmp_path, half=True)
    bb = load_open_clip("tiny-json", str(path), "cpu", model_config=cfg_file, display_name="shapes:clip-vit")
    assert bb.name == "shapes:clip-vit"
    assert all(p.dtype == torch.float32 for p in bb.model.parameters())
    # the fp16 file holds the fp32 weights rounded to fp16: the loaded model equals that rounding
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        assert torch.allclose(bb.encode_image(pixels()), model.encode_image(pixels()), atol=1e-6)


def test_open_clip_pt_with_wrapper_and_folder(tmp_path):
    model, _ = _save_open_clip(tmp_path)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    bb = interpcore.get_backbone(
        "open_clip:tiny-vit-pt", pretrained=str(tmp_path / "ckpt.pt"), device="cpu", model_config=OC_VIT
    )
    with torch.no_grad():
        assert torch.equal(bb.encode_image(pixels()), model.encode_image(pixels()))
    # an exported folder (open_clip_config.json + weights) as pretrained= for hf-hub names
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OC_VIT, "preprocess_cfg": {}}))
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    bb2 = interpcore.get_backbone("open_clip:hf-hub:someone/tiny", pretrained=str(folder), device="cpu")
    with torch.no_grad():
        assert torch.equal(bb2.encode_image(pixels()), model.encode_image(pixels()))


def test_open_clip_tag_found_in_prepopulated_hf_cache(tmp_path, monkeypatch):
    """A tag resolves to the Hugging Face cache a user filled by hand (no network)."""
    from open_clip import pretrained as ocp
    from safetensors.torch import save_file

    model = open_clip_model(OC_VIT, seed=3)
    snap = tmp_path / "hub" / "models--someone--tiny-clip" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    save_file(model.state_dict(), str(snap / "open_clip_model.safetensors"))
    (tmp_path / "hub" / "models--someone--tiny-clip" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-clip" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setitem(ocp._PRETRAINED, "tiny-tagged", {"mytag": ocp._pcfg(hf_hub="someone/tiny-clip/", quick_gelu=True)})
    bb = interpcore.get_backbone(
        "open_clip:tiny-tagged", pretrained="mytag", device="cpu", model_config=OC_VIT,
        cache_dir=str(tmp_path / "hub"),
    )
    assert bb.pretrained == "mytag"
    # the tag was trained with QuickGELU, so the model is built with it
    from open_clip.transformer import QuickGELU

    assert any(isinstance(m, QuickGELU) for m in bb.model.modules())
    model_q = open_clip_model(dict(OC_VIT, quick_gelu=True), seed=3)
    model_q.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(bb.encode_image(pixels()), model_q.encode_image(pixels()))


def test_open_clip_tag_found_in_url_cache_with_checksum(tmp_path, monkeypatch):
    import hashlib

    from open_clip import pretrained as ocp

    model, path = _save_open_clip(tmp_path, name="w.pt", seed=4)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = tmp_path / "clipcache"
    cache.mkdir()
    fname = f"tiny-{sha[:8]}.pt"
    (cache / fname).write_bytes(path.read_bytes())
    url = f"https://github.com/mlfoundations/open_clip/releases/download/x/{fname}"
    monkeypatch.setitem(ocp._PRETRAINED, "tiny-url", {"t": ocp._pcfg(url=url)})
    bb = interpcore.get_backbone("open_clip:tiny-url", pretrained="t", device="cpu",
                                 model_config=OC_VIT, cache_dir=str(cache))
    with torch.no_grad():
        assert torch.equal(bb.encode_image(pixels()), model.encode_image(pixels()))


def test_library_download_errors_become_one_message(tmp_path, monkeypatch):
    """The library's own failures: a broken transfer or a missing Hub entry is the offline
    message, a checksum failure says the download is corrupt, anything else goes up as is."""
    import urllib.error

    from huggingface_hub.errors import LocalEntryNotFoundError

    from interpcore.weights import library_download

    monkeypatch.delenv("INTERP_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("interpcore.download.reachable", lambda url: True)  # the host answers ...

    def broken():
        raise urllib.error.URLError(ConnectionResetError("connection reset"))

    with pytest.raises(OfflineError, match=r"test:model: .*download failed.*connection reset.*"
                                           r"--pretrained /path/to/w-deadbeef\.pt") as e:
        library_download(broken, what="test:model", url="https://example.org/w-deadbeef.pt",
                         url_dir=tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)

    def absent():  # what hf_hub_download raises for a file that is not cached, offline
        raise LocalEntryNotFoundError("not in the cache")

    with pytest.raises(OfflineError, match=r"Hugging Face repo 'org/tiny'.*`hf download org/tiny`"):
        library_download(absent, what="test:model", hub_repo="org/tiny", cache_dir=tmp_path)

    def corrupt():  # torch.hub's and open_clip's words for a checksum mismatch
        raise RuntimeError('invalid hash value (expected "00ff", got "abcd")')

    with pytest.raises(InterpError, match="is corrupt") as e:
        library_download(corrupt, what="test:model", url="https://example.org/w-00ff.pt", url_dir=tmp_path)
    assert not isinstance(e.value, OfflineError)

    def bug():
        raise KeyError("not a download problem")

    with pytest.raises(KeyError):
        library_download(bug, what="test:model", url="https://example.org/w.pt", url_dir=tmp_path)


def test_offline_the_hub_is_asked_in_its_own_offline_mode(tmp_path):
    from huggingface_hub import constants

    from interpcore.weights import library_download

    was = constants.HF_HUB_OFFLINE
    seen = library_download(lambda: constants.is_offline_mode(), what="test:model",
                            hub_repo="org/tiny", cache_dir=tmp_path)
    assert seen is True and constants.HF_HUB_OFFLINE == was  # switched for the call only


def test_offline_messages_name_model_tag_place_and_remedy(tmp_path):
    with pytest.raises(OfflineError) as e:
        interpcore.get_backbone("open_clip:ViT-B-32", device="cpu", cache_dir=str(tmp_path))
    msg = str(e.value)
    # SpLiCE's default tag for open_clip:ViT-B-32
    for part in ("open_clip:ViT-B-32", "laion2b_s34b_b79k", str(tmp_path), "pretrained=", "HF_HOME"):
        assert part in msg, part
    assert "\n" not in msg

    with pytest.raises(OfflineError) as e:
        interpcore.get_backbone("clip:ViT-B/32", device="cpu", cache_dir=str(tmp_path))
    msg = str(e.value)
    for part in ("clip:ViT-B/32", "'openai'", "ViT-B-32.pt", "openaipublic", "pretrained="):
        assert part in msg, part
    with pytest.raises(OfflineError, match=r"IMAGENET1K_V2.*resnet50-11ad3fa6\.pth"):
        interpcore.get_backbone("torchvision:resnet50", device="cpu")
    with pytest.raises(OfflineError, match=r"a1_in1k.*timm/resnet18\.a1_in1k"):
        interpcore.get_backbone("timm:resnet18", device="cpu", cache_dir=str(tmp_path))
    with pytest.raises(OfflineError, match="openai/clip-vit-base-patch32"):
        interpcore.get_backbone("hf:openai/clip-vit-base-patch32", device="cpu", cache_dir=str(tmp_path))


@pytest.mark.parametrize(
    "name, near",
    [
        ("open_clip:ViT-B-23", "open_clip:ViT-B-32"),
        ("clip:ViT-B/31", "clip:ViT-B/32"),
        ("timm:resnet81", "timm:resnet18"),
        ("torchvision:resnet81", "torchvision:resnet18"),
    ],
)
def test_unknown_model_names_suggest_close_matches(name, near):
    with pytest.raises(interpcore.UnknownNameError) as e:
        interpcore.get_backbone(name, device="cpu")
    assert near in str(e.value) and "interp backbones list" in str(e.value)


def test_unknown_tag_lists_tags():
    with pytest.raises(InterpError, match="Did you mean: .*laion2b_s34b_b79k"):
        interpcore.get_backbone("open_clip:ViT-B-32", pretrained="laion2b_s34b", device="cpu")
    with pytest.raises(InterpError, match="not found"):
        interpcore.get_backbone("open_clip:ViT-B-32", pretrained="/no/such/file.pt", device="cpu")


def test_mismatched_checkpoint_names_keys(tmp_path):
    _, path = _save_open_clip(tmp_path)
    other = json.loads(json.dumps(OC_VIT))
    other["vision_cfg"]["width"] = 32
    other["vision_cfg"]["layers"] = 3
    with pytest.raises(InterpError) as e:
        interpcore.get_backbone("open_clip:tiny-other", pretrained=str(path), device="cpu", model_config=other)
    msg = str(e.value)
    assert "different shape" in msg and "visual.conv1.weight (64, 3, 8, 8) vs (32, 3, 8, 8)" in msg
    assert "missing from the checkpoint: visual.transformer.resblocks.2." in msg


def test_corrupt_checkpoint_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InterpError, match="bad.pt is not a readable checkpoint"):
        interpcore.get_backbone("open_clip:tiny-bad", pretrained=str(bad), device="cpu", model_config=OC_VIT)


def test_capabilities_by_tower_type():
    from interp_open_clip import load_open_clip

    vit = load_open_clip("tiny-cap-vit", "random", "cpu", model_config=OC_VIT)
    rn = load_open_clip("tiny-cap-rn", "random", "cpu", model_config=OC_RN)
    pooled = json.loads(json.dumps(OC_VIT))
    pooled["vision_cfg"]["attentional_pool"] = True
    ap = load_open_clip("tiny-cap-ap", "random", "cpu", model_config=pooled)
    assert Capability.VIT_RESIDUAL_STREAM in vit.capabilities
    assert Capability.VIT_RESIDUAL_STREAM not in rn.capabilities
    assert Capability.VIT_RESIDUAL_STREAM not in ap.capabilities
    assert rn.gradcam_layers == ["visual.layer4"] and rn.gradcam_reshape_transform() is None
    assert vit.gradcam_layers == ["visual.transformer.resblocks.1.ln_1"]
    with pytest.raises(CapabilityError):
        rn.residual_stream()


def test_features_named_layer_and_unknown_layer():
    from interp_open_clip import load_open_clip

    bb = load_open_clip("tiny-feat", "random", "cpu", model_config=OC_VIT)
    x = pixels()
    assert torch.equal(bb.features(x), bb.encode_image(x))  # default layer = the image embedding
    tokens = bb.features(x, "visual.transformer.resblocks.0")
    assert tokens.shape == (2, 17, 64)
    with pytest.raises(InterpError, match="Did you mean: visual.transformer.resblocks.0"):
        bb.features(x, "visual.transformer.resblock.0")


def test_dtype_and_device_handling():
    from interp_open_clip import load_open_clip

    ref = load_open_clip("tiny-dt", "random", "cpu", model_config=OC_VIT)
    bf = load_open_clip("tiny-dt", "random", "cpu", "bf16", model_config=OC_VIT)
    bf.model.load_state_dict(ref.model.state_dict())
    assert next(bf.model.parameters()).dtype == torch.bfloat16
    z = bf.encode_image(pixels())
    assert z.dtype == torch.float32 and rel(z, ref.encode_image(pixels())) < 0.05
    assert ref.device.type == "cpu"
    with pytest.raises(InterpError, match="unknown dtype"):
        load_open_clip("tiny-dt", "random", "cpu", "fp12", model_config=OC_VIT)
    if not torch.cuda.is_available():
        with pytest.raises(InterpError, match="CUDA is not available"):
            load_open_clip("tiny-dt", "random", "cuda", model_config=OC_VIT)


# -- transformers -----------------------------------------------------------------------------


def _save_hf(tmp_path, seed=0):
    transformers = pytest.importorskip("transformers")
    from backbone_tiny import hf_config_like, perturb

    torch.manual_seed(seed)
    model = perturb(transformers.CLIPModel(hf_config_like()).eval(), seed)
    folder = tmp_path / "hf_tiny"
    model.save_pretrained(str(folder))
    write_clip_tokenizer(folder)
    return model, folder


def test_hf_clip_save_pretrained_roundtrip(tmp_path):
    model, folder = _save_hf(tmp_path)
    bb = interpcore.get_backbone(f"hf:{folder}", device="cpu")
    x = pixels()
    with torch.no_grad():
        ref = model.visual_projection(model.vision_model(pixel_values=x).pooler_output)
        ids = bb.tokenize(["a red square", "a green circle"])
        ref_t = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    assert torch.equal(bb.encode_image(x), ref)
    assert torch.equal(bb.encode_text(["a red square", "a green circle"]), ref_t)
    assert bb.capabilities >= {Capability.TEXT_ENCODER, Capability.VIT_RESIDUAL_STREAM}
    # the same weights as a file into the same architecture
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    bb2 = interpcore.get_backbone(f"hf:{folder}", pretrained=str(tmp_path / "w.safetensors"), device="cpu")
    assert torch.equal(bb2.encode_image(x), ref)


def test_hf_missing_folder_and_wrong_model_type(tmp_path):
    with pytest.raises(InterpError, match="not found"):
        interpcore.get_backbone(f"hf:{tmp_path}/nothing-here", device="cpu")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InterpError, match="'bert' model"):
        interpcore.get_backbone(f"hf:{tmp_path / 'bert'}", device="cpu")


# -- timm / torchvision -----------------------------------------------------------------------


def test_torchvision_state_dict_roundtrip_infers_classes(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(model.state_dict(), tmp_path / "rn18.pt")
    bb = interpcore.get_backbone("torchvision:resnet18", pretrained=str(tmp_path / "rn18.pt"),
                                 device="cpu", image_size=64)
    x = pixels(size=64)
    with torch.no_grad():
        assert torch.equal(bb.logits(x), model(x))
        pooled = torch.flatten(model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(
            model.maxpool(model.relu(model.bn1(model.conv1(x))))))))), 1)
    assert torch.allclose(bb.encode_image(x), pooled, atol=1e-6)
    assert torch.equal(bb.features(x), bb.encode_image(x))
    assert bb.gradcam_layers == ["layer4"] and bb.embed_dim == 512
    assert Capability.TEXT_ENCODER not in bb.capabilities


def test_timm_checkpoint_roundtrip(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=5).eval()
    save_file(model.state_dict(), str(tmp_path / "r18.safetensors"))
    bb = interpcore.get_backbone("timm:resnet18", pretrained=str(tmp_path / "r18.safetensors"),
                                 device="cpu", image_size=64)
    x = pixels(size=64)
    with torch.no_grad():
        assert torch.equal(bb.logits(x), model(x))
        assert torch.equal(bb.encode_image(x), model.forward_head(model.forward_features(x), pre_logits=True))
    assert bb.gradcam_layers == ["layer4"]


def test_gradcam_runs_on_default_targets():
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from interp_open_clip import load_open_clip

    vit = load_open_clip("tiny-cam", "random", "cpu", model_config=OC_VIT)

    class ImageTower(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.encode_image(x)

    x = pixels()
    with GradCAM(model=ImageTower(vit.model), target_layers=vit.gradcam_target_layers(),
                 reshape_transform=vit.gradcam_reshape_transform()) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * 2)
    assert maps.shape == (2, 32, 32)
    assert all(len(m._forward_hooks) == 0 for m in vit.model.modules())


def test_torchscript_checkpoint_like_openai_releases(tmp_path):
    """OpenAI's CLIP files are TorchScript archives (what clip.load caches in ~/.cache/clip)."""
    import warnings

    from interp_open_clip import load_open_clip

    model = open_clip_model(dict(OC_VIT, quick_gelu=True), seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (pixels(), torch.zeros(2, 16, dtype=torch.long)),
                                 strict=False, check_trace=False)
    traced.save(str(tmp_path / "ViT-tiny.pt"))
    bb = load_open_clip("tiny-jit", str(tmp_path / "ViT-tiny.pt"), "cpu", model_config=OC_VIT,
                        quick_gelu=True, display_name="clip:tiny", prefix="clip")
    with torch.no_grad():
        assert torch.equal(bb.encode_image(pixels()), model.encode_image(pixels()))


def _fill_hf_cache(root, repo, files: dict):
    """A Hugging Face cache folder as `hf download` leaves it, holding ``files``."""
    top = root / f"models--{repo.replace('/', '--')}"
    snap = top / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    (top / "refs").mkdir()
    (top / "refs" / "main").write_text("c" * 40)
    for name, write in files.items():
        write(snap / name)


def test_torchvision_and_timm_tags_go_through_each_librarys_downloader(tmp_path, monkeypatch):
    """Tags are fetched by torchvision's and timm's own download calls; what they return is
    what the backbone computes with."""
    import urllib.error

    import timm
    import torchvision
    import torchvision.models._api as tv_api
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    seen = {}
    # offline (the fixture), torch.hub is asked only for a file already in its folder
    hubdir = tmp_path / "torchhub"
    (hubdir / "checkpoints").mkdir(parents=True)
    (hubdir / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"x")
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(hubdir))

    def fake_load_state_dict_from_url(url, *a, check_hash=False, **kw):  # torch.hub's download
        seen.update(url=url, check_hash=check_hash)
        return tv.state_dict()

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake_load_state_dict_from_url)
    bb = interpcore.get_backbone("torchvision:resnet18", pretrained="IMAGENET1K_V1", device="cpu")
    assert seen["url"].endswith("resnet18-f37072fd.pth") and seen["check_hash"] is True
    assert bb.pretrained == "IMAGENET1K_V1"
    x = pixels(size=64)
    with torch.no_grad():
        assert torch.equal(bb.logits(x), tv(x))
    assert bb.preprocess(__import__("PIL.Image").Image.new("RGB", (300, 260))).shape == (3, 224, 224)
    with pytest.raises(InterpError, match="has 1000 classes"):
        interpcore.get_backbone("torchvision:resnet18", pretrained="IMAGENET1K_V1", device="cpu", num_classes=3)

    # when torch.hub fails the way it does without network, that is the one message naming
    # the file and its folder
    def offline_download(url, *a, **kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline_download)
    with pytest.raises(OfflineError, match=r"IMAGENET1K_V1.*resnet18-f37072fd\.pth.*offline mode") as e:
        interpcore.get_backbone("torchvision:resnet18", pretrained="IMAGENET1K_V1", device="cpu")
    assert str(hubdir / "checkpoints") in str(e.value)

    tm = timm.create_model("resnet18").eval()
    hub = tmp_path / "hub"
    _fill_hf_cache(hub, "timm/resnet18.a1_in1k",
                   {"model.safetensors": lambda p: save_file(tm.state_dict(), str(p))})
    bb = interpcore.get_backbone("timm:resnet18.a1_in1k", device="cpu", cache_dir=str(hub))
    assert bb.pretrained == "a1_in1k"
    with torch.no_grad():
        assert torch.equal(bb.logits(x), tm(x))


def test_custom_architecture_without_weights_is_an_error_not_random():
    from interp_open_clip import load_open_clip

    with pytest.raises(InterpError, match="has no published weights; pass --pretrained"):
        load_open_clip("tiny-noweights", None, "cpu", model_config=OC_VIT)


def test_pretrained_hf_hub_repo_for_a_named_architecture(tmp_path):
    from safetensors.torch import save_file

    model = open_clip_model(OC_VIT, seed=6)
    repo = tmp_path / "hub" / "models--org--tiny-weights"
    (repo / "snapshots" / ("b" * 40)).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    save_file(model.state_dict(), str(repo / "snapshots" / ("b" * 40) / "open_clip_model.safetensors"))
    bb = interpcore.get_backbone("open_clip:tiny-hubw", pretrained="hf-hub:org/tiny-weights", device="cpu",
                                 model_config=OC_VIT, cache_dir=str(tmp_path / "hub"))
    with torch.no_grad():
        assert torch.equal(bb.encode_image(pixels()), model.encode_image(pixels()))
    with pytest.raises(OfflineError, match="org/missing"):
        interpcore.get_backbone("open_clip:tiny-hubw", pretrained="hf-hub:org/missing", device="cpu",
                                model_config=OC_VIT, cache_dir=str(tmp_path / "hub"))
