"""Contract checks for plugin authors (also a pytest plugin: entry point ``pytest11``).

Run them on your own objects::

    from interpcore.testing import check_backbone
    check_backbone(get_backbone("mylib:tiny", pretrained="random"))

or, in a pytest suite (this module is loaded as a pytest plugin when interpcore is
installed), use the ``backbone_contract`` fixture, which is :func:`check_backbone`::

    def test_my_backbone(backbone_contract):
        backbone_contract(load_my_tiny_backbone())

Each check function is independent of the others. Importing this module does not import
torch (pytest loads it in every session); the checks import it when they run.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

try:  # the fixture needs pytest; the check functions do not
    import pytest
except ImportError:  # pragma: no cover
    pytest = None


class ContractError(AssertionError):
    """One or more contract checks failed; the message lists each failure on its own line."""


@dataclasses.dataclass
class ContractReport:
    """What :func:`check_backbone` verified (``passed``) and skipped (with the reason)."""

    name: str
    passed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.name}: {len(self.passed)} checks passed"]
        lines += [f"  ok   {p}" for p in self.passed]
        lines += [f"  skip {s}" for s in self.skipped]
        return "\n".join(lines)


def _images(n: int = 3):
    """Small RGB PIL images of different sizes and contents (deterministic)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(37, 53), (64, 64), (90, 41), (48, 80)]
    return [
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        for (h, w) in sizes[:n]
    ]


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def check_backbone(backbone, *, rtol: float | None = None) -> ContractReport:
    """Check that ``backbone`` honours the :class:`interpcore.Backbone` contract.

    Verifies, for the capabilities the backbone declares: preprocessing (PIL images and image
    paths to ``(3, H, W)`` float tensors), ``encode_image`` (shape ``(N, embed_dim)``, float32,
    finite, no gradient, independent of the batch size, unit norm with ``normalize=True``,
    PIL / path / tensor inputs agree, empty input gives ``(0, embed_dim)``),
    ``forward`` (the same embedding with autograd on: a gradient reaches the pixels),
    ``features()`` with the default layer (``(N, F)``, finite, hooks removed afterwards;
    checked when the backbone has a ``default_layer``), ``forward_features`` (autograd on),
    ``tokenize`` / ``encode_text`` (same embedding size as images, batch-size independent,
    deterministic), Grad-CAM target layers (modules that produce spatial maps, directly or
    through ``gradcam_reshape_transform()``), and the ViT residual stream (its reference
    ``forward`` reproduces ``encode_image``: 1e-5 relative in fp32). Undeclared capabilities
    must raise :class:`~interpcore.CapabilityError`.

    Raises :class:`ContractError` listing every failed check; returns a
    :class:`ContractReport` otherwise.
    """
    import torch

    from .base import Capability
    from .errors import CapabilityError

    report = ContractReport(getattr(backbone, "name", repr(backbone)))
    failures: list[str] = []
    caps = set(getattr(backbone, "capabilities", ()))
    dtype = getattr(backbone, "dtype", torch.float32)
    if rtol is None:
        rtol = 1e-5 if dtype == torch.float32 else 2e-2
    batch_tol = max(rtol * 100, 1e-4) if dtype == torch.float32 else 5e-2

    def check(label, fn):
        try:
            fn()
        except CapabilityError as exc:
            failures.append(f"{label}: raised CapabilityError ({exc})")
        except AssertionError as exc:
            failures.append(f"{label}: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            report.passed.append(label)

    def basics():
        name = backbone.name
        assert isinstance(name, str) and ":" in name, f"name {name!r} is not 'library:model'"
        unknown = caps - set(Capability.ALL)
        assert not unknown, f"unknown capabilities {sorted(unknown)}"
        if Capability.IMAGE_ENCODER in caps:
            assert isinstance(backbone.embed_dim, int) and backbone.embed_dim > 0, (
                f"embed_dim is {backbone.embed_dim!r}, expected a positive int"
            )
        model = getattr(backbone, "model", None)
        if model is not None:
            assert not model.training, "the model is in training mode (expected eval())"

    check("name, capabilities, embed_dim, eval mode", basics)

    images = _images(3)
    state: dict = {}

    def preprocess():
        pixels = [backbone.preprocess(im) for im in images]
        for p in pixels:
            assert isinstance(p, torch.Tensor) and p.dim() == 3 and p.shape[0] == 3, (
                f"preprocess returned {type(p).__name__} {tuple(getattr(p, 'shape', ()))}, "
                "expected a (3, H, W) tensor"
            )
            assert p.is_floating_point(), f"preprocess returned dtype {p.dtype}"
        assert len({tuple(p.shape) for p in pixels}) == 1, (
            "preprocess gives different sizes for different input sizes: "
            f"{sorted({tuple(p.shape) for p in pixels})}"
        )
        state["pixels"] = torch.stack(pixels)

    check("preprocess: PIL images -> equal-size (3, H, W) float tensors", preprocess)
    pixels = state.get("pixels")

    if Capability.IMAGE_ENCODER in caps and pixels is not None:

        def encode_image():
            z = backbone.encode_image(pixels)
            assert tuple(z.shape) == (len(images), backbone.embed_dim), (
                f"encode_image gave shape {tuple(z.shape)}, expected ({len(images)}, {backbone.embed_dim})"
            )
            assert z.dtype == torch.float32, f"encode_image returned {z.dtype}, expected float32"
            assert torch.isfinite(z).all(), "encode_image returned non-finite values"
            assert not z.requires_grad, "encode_image output requires grad (expected no_grad)"
            one = backbone.encode_image(pixels, batch_size=1)
            err = _rel(one, z)
            assert err <= batch_tol, f"batch_size=1 differs from one batch by {err:.2e} relative"
            zn = backbone.encode_image(pixels, normalize=True)
            norms = zn.norm(dim=-1)
            assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4), (
                f"normalize=True gave norms {norms.tolist()}"
            )
            state["z"] = z

        check("encode_image: shape, float32, finite, no grad, batching, normalize", encode_image)

        def inputs_agree():
            z = state.get("z")
            assert z is not None, "encode_image failed"
            from_pil = backbone.encode_image(images)
            err = _rel(from_pil, z)
            assert err <= batch_tol, f"PIL input differs from preprocessed tensors by {err:.2e}"
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "image.png")
                images[0].save(path)
                from_path = backbone.encode_image([path])
            err = _rel(from_path[0], z[0])
            assert err <= batch_tol, f"path input differs from the PIL image by {err:.2e}"
            empty = backbone.encode_image([])
            assert tuple(empty.shape) == (0, backbone.embed_dim), (
                f"empty input gave shape {tuple(empty.shape)}, expected (0, {backbone.embed_dim})"
            )

        check("encode_image: PIL, path and tensor inputs agree; empty input", inputs_agree)

        def forward_grad():
            z = state.get("z")
            assert z is not None, "encode_image failed"
            x = backbone.to_pixels(pixels).clone().requires_grad_(True)
            out = backbone.forward(x)
            err = _rel(out.detach().float(), z)
            assert err <= batch_tol, f"forward() differs from encode_image by {err:.2e} relative"
            # autograd.grad: no .grad is left on the model's parameters by the check
            (grad,) = torch.autograd.grad(out.float().sum(), x)
            assert torch.isfinite(grad).all(), (
                "forward() gives no finite gradient with respect to the pixels"
            )

        check("forward(): encode_image with autograd on (gradient reaches the pixels)", forward_grad)
    elif Capability.IMAGE_ENCODER not in caps:

        def no_image():
            try:
                backbone.encode_image(pixels if pixels is not None else images)
            except CapabilityError:
                return
            raise AssertionError("encode_image works but image_encoder is not declared")

        check("encode_image raises CapabilityError (not declared)", no_image)

    def features_default():
        if getattr(backbone, "default_layer", None) is None:
            assert Capability.FEATURE_MAPS not in caps, "feature_maps declared but no default_layer"
            return
        if pixels is None:
            raise AssertionError("preprocess failed")
        model = getattr(backbone, "model", None)
        before = _hook_count(model)
        f = backbone.features(pixels)
        assert f.dim() == 2 and f.shape[0] == len(images), (
            f"features() gave shape {tuple(f.shape)}, expected (N, F) for the default layer"
        )
        assert torch.isfinite(f).all(), "features() returned non-finite values"
        assert not f.requires_grad, "features() output requires grad"
        after = _hook_count(model)
        assert after == before, f"features() left {after - before} hook(s) on the model"

    check("features(): default layer gives (N, F), no hooks left", features_default)

    if Capability.TEXT_ENCODER in caps:

        def text():
            texts = ["a photo of a cat", "a red square", "two circles"]
            tokens = backbone.tokenize(texts)
            assert len(tokens) == len(texts), f"tokenize gave {len(tokens)} rows for {len(texts)} texts"
            t = backbone.encode_text(texts)
            dim = backbone.embed_dim
            assert tuple(t.shape) == (len(texts), dim), (
                f"encode_text gave {tuple(t.shape)}, expected ({len(texts)}, {dim}) (same space as images)"
            )
            assert t.dtype == torch.float32 and torch.isfinite(t).all(), "encode_text: not finite float32"
            assert not t.requires_grad, "encode_text output requires grad"
            one = backbone.encode_text(texts, batch_size=1)
            err = _rel(one, t)
            assert err <= batch_tol, f"encode_text batch_size=1 differs by {err:.2e}"
            again = backbone.encode_text(texts[:1])
            err = _rel(again[0], t[0])
            assert err <= batch_tol, f"encode_text is not deterministic ({err:.2e})"
            assert _rel(t[0], t[1]) > 1e-6, "different texts give the same embedding"

        check("tokenize / encode_text: shape, same space, batching", text)
    else:

        def no_text():
            try:
                backbone.encode_text(["a"])
            except CapabilityError:
                return
            raise AssertionError("encode_text works but text_encoder is not declared")

        check("encode_text raises CapabilityError (not declared)", no_text)

    if Capability.FEATURE_MAPS in caps and pixels is not None:

        def gradcam():
            layers = backbone.gradcam_target_layers()
            assert isinstance(layers, list) and layers, "gradcam_target_layers() is empty"
            assert all(isinstance(m, torch.nn.Module) for m in layers), "targets must be nn.Modules"
            reshape = getattr(backbone, "gradcam_reshape_transform", lambda: None)()
            from .torch_backbone import capture

            with capture(layers[0]) as got, torch.no_grad():
                backbone.forward(backbone.to_pixels(pixels))
            assert got, "the first Grad-CAM target layer did not run in a forward pass"
            act = got[0]
            maps = reshape(act) if reshape is not None else act
            assert maps.dim() == 4 and maps.shape[0] == len(images), (
                f"Grad-CAM target activations have shape {tuple(maps.shape)}"
                + (" after the reshape transform" if reshape is not None else "")
                + ", expected (N, C, H, W)"
            )

        check("Grad-CAM target layers give (N, C, H, W) maps", gradcam)

        def forward_features_grad():
            x = backbone.to_pixels(pixels).clone().requires_grad_(True)
            act = backbone.forward_features(x)
            assert act.shape[0] == len(images), f"forward_features gave shape {tuple(act.shape)}"
            (grad,) = torch.autograd.grad(act.float().sum(), x)
            assert torch.isfinite(grad).all(), (
                "forward_features() gives no finite gradient with respect to the pixels"
            )

        check("forward_features(): default layer with autograd on", forward_features_grad)

    if Capability.VIT_RESIDUAL_STREAM in caps and pixels is not None:

        def stream():
            s = backbone.residual_stream()
            x = backbone.to_pixels(pixels)
            with torch.no_grad():
                ref = backbone.encode_image(pixels)
                got = s.forward(x).float()
            assert tuple(got.shape) == tuple(ref.shape), f"stream forward shape {tuple(got.shape)} vs {tuple(ref.shape)}"
            err = _rel(got, ref)
            assert err <= rtol, f"residual stream forward differs from encode_image by {err:.2e} relative (tolerance {rtol:g})"
            for attr in ("num_layers", "num_heads", "width", "head_dim"):
                assert isinstance(getattr(s, attr, None), int), f"stream.{attr} is not an int"

        check("residual stream forward == encode_image", stream)
    elif Capability.VIT_RESIDUAL_STREAM not in caps:

        def no_stream():
            try:
                backbone.residual_stream()
            except CapabilityError:
                return
            raise AssertionError("residual_stream() works but vit_residual_stream is not declared")

        check("residual_stream raises CapabilityError (not declared)", no_stream)

    if failures:
        raise ContractError(
            f"backbone {report.name} breaks the contract:\n" + "\n".join(f"  - {f}" for f in failures)
        )
    return report


def _hook_count(model) -> int:
    if model is None:
        return 0
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    )



def _failures_to_error(kind: str, name: str, failures: list[str]) -> None:
    if failures:
        raise ContractError(
            f"{kind} {name} breaks the contract:\n" + "\n".join(f"  - {f}" for f in failures)
        )


def check_vocabulary(vocabulary, *, sized=None) -> ContractReport:
    """Contract checks for a :class:`interpcore.Vocabulary` (and, optionally, its loader).

    ``sized``: the loader called with ``size=k`` (e.g. ``lambda k: get_vocabulary("mine",
    size=k)``) to check that it returns the ``k`` most frequent entries: the first ``k`` or
    the last ``k``, as the vocabulary's ``keep`` says.
    """
    from .base import Vocabulary

    report = ContractReport(getattr(vocabulary, "name", "?"))
    failures: list[str] = []

    def check(label, fn):
        try:
            fn()
            report.passed.append(label)
        except Exception as exc:  # noqa: BLE001 - each failure is reported, not raised
            failures.append(f"{label}: {type(exc).__name__}: {exc}")

    def is_vocabulary():
        assert isinstance(vocabulary, Vocabulary), f"got {type(vocabulary).__name__}"
        assert isinstance(vocabulary.name, str) and vocabulary.name, "empty name"

    def entries_are_text():
        assert len(vocabulary) > 0, "no entries"
        bad = [c for c in vocabulary.concepts if not isinstance(c, str) or not c.strip()]
        assert not bad, f"{len(bad)} entries are empty or not strings, e.g. {bad[:3]!r}"

    def hash_is_stable():
        assert vocabulary.content_hash == Vocabulary("x", list(vocabulary.concepts)).content_hash

    check("is a Vocabulary with a name", is_vocabulary)
    check("entries are non-empty strings", entries_are_text)
    check("content hash depends only on the entries", hash_is_stable)
    if sized is not None:
        keep = getattr(vocabulary, "keep", "first")

        def size_keeps_most_frequent():
            assert keep in ("first", "last"), f"keep is {keep!r}, expected 'first' or 'last'"
            k = max(1, min(5, len(vocabulary) - 1))
            small = sized(k)
            want = vocabulary.concepts[:k] if keep == "first" else vocabulary.concepts[-k:]
            assert list(small.concepts) == list(want), (
                f"size={k} gave {list(small.concepts)!r}, expected the {keep} {k} entries "
                f"(keep={keep!r})"
            )

        check(f"size=k keeps the k most frequent entries (the {keep} ones)", size_keeps_most_frequent)
    _failures_to_error("vocabulary", report.name, failures)
    return report


def check_method(method, inputs, *, verb: str | None = None, **kwargs) -> ContractReport:
    """Contract checks for a decomposer or explainer on ``inputs``.

    The public verb (``decompose`` or ``explain``) must return an :class:`interpcore.Result`
    that prints and serializes to JSON, and must leave no forward hooks on the backbone's
    model, whether it succeeds or raises on bad input.
    """
    import json

    from .base import Decomposer, Explainer, Result

    report = ContractReport(getattr(method, "name", type(method).__name__))
    failures: list[str] = []
    if verb is None:
        verb = "decompose" if isinstance(method, Decomposer) else "explain"
    model = getattr(getattr(method, "backbone", None), "model", None)
    before = _hook_count(model)

    def check(label, fn):
        try:
            fn()
            report.passed.append(label)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{label}: {type(exc).__name__}: {exc}")

    def is_method():
        assert isinstance(method, (Decomposer, Explainer)), (
            f"{type(method).__name__} is neither a Decomposer nor an Explainer"
        )

    result_box = []

    def runs():
        result_box.append(getattr(method, verb)(inputs, **kwargs))

    def returns_result():
        assert result_box, "the verb did not return"
        r = result_box[0]
        assert isinstance(r, Result), f"{verb}() returned {type(r).__name__}, not a Result"
        assert str(r), "prints as an empty string"
        json.loads(r.to_json())

    def no_hooks_left():
        assert _hook_count(model) == before, "forward hooks were left on the model"

    def bad_input_raises_cleanly():
        try:
            getattr(method, verb)(object())
        except Exception:  # noqa: BLE001 - any error is fine; leftover hooks are not
            pass
        assert _hook_count(model) == before, "hooks left behind after an error"

    check("is a Decomposer or Explainer", is_method)
    check(f"{verb}() runs on the inputs", runs)
    check("returns a Result that prints and serializes to JSON", returns_result)
    check("leaves no forward hooks behind", no_hooks_left)
    check("bad input leaves no hooks behind", bad_input_raises_cleanly)
    _failures_to_error("method", report.name, failures)
    return report

# -- tiny models and data for tests (random weights, no network, no files) ------------------


def tiny_open_clip_backbone(seed: int = 0, name: str = "tiny:open_clip-vit", **vision_cfg):
    """A tiny random open_clip ViT CLIP (3 layers, 4 heads of width 12, 32 x 32 images in
    patches of 8, embeddings of 24; a 1-layer text tower with a context of 16 tokens),
    loaded through the registry like any open_clip model (``open_clip`` family,
    ``model_config=`` a config dict, ``pretrained="random"``): image and text encoders and a
    ViT residual stream, so PRS, TextSpan and SpLiCE run on it in milliseconds.

    The weights depend only on ``seed``; norms and biases are randomized too, so that every
    term of a decomposition matters. Preprocessing: resize to 32 x 32, then
    ``(x - 0.5) / 0.25``. ``vision_cfg`` overrides the image tower's config (e.g.
    ``ls_init_value=0.7`` for layer scale); ``name`` is the name the backbone reports.
    Needs torch and open_clip (and the built-in ``open_clip`` backbone family).
    """
    import json
    import hashlib

    import torch

    import interpcore

    cfg = {
        "embed_dim": 24,
        "vision_cfg": dict(dict(image_size=32, patch_size=8, width=48, layers=3, head_width=12,
                                mlp_ratio=2.0), **vision_cfg),
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
    }
    arch = "interpcore-tiny-vit-" + hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
    torch.manual_seed(seed)
    bb = interpcore.get_backbone(f"open_clip:{arch}", pretrained="random", device="cpu",
                                 model_config=cfg, display_name=name)
    with torch.no_grad():
        for pname, p in bb.model.visual.named_parameters():
            if pname.endswith("bias") or "ln" in pname:
                p.add_(0.3 * torch.randn_like(p))

    def transform(img):
        import numpy as np

        arr = np.asarray(img.convert("RGB").resize((32, 32)), dtype="float32") / 255.0
        return (torch.from_numpy(arr).permute(2, 0, 1) - 0.5) / 0.25

    bb.transform = transform
    return bb


def tiny_images(n: int = 24, seed: int = 1):
    """A :class:`~interpcore.Dataset` (``tiny-images``) of ``n`` random 32 x 32 RGB images
    with labels cycling over three classes ``a``, ``b``, ``c``."""
    import numpy as np
    from PIL import Image

    from .base import Dataset

    class TinyImages(Dataset):
        name = "tiny-images"
        classes = ["a", "b", "c"]

        def __init__(self):
            rng = np.random.default_rng(seed)
            self.items = [{"image": Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
                           "label": i % 3} for i in range(n)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    return TinyImages()


if pytest is not None:

    @pytest.fixture
    def backbone_contract():
        """The :func:`check_backbone` function, as a fixture for plugin test suites."""
        return check_backbone
