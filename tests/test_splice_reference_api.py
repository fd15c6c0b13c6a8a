"""The reference SpLiCE README's Python snippets, run as written with ``import interp_splice as
splice`` on the offline default (the shipped shapes CLIP and the vocabulary the registry
gives it).

Adapted, and only this, from github.com/AI4LIFE-GROUP/SpLiCE's README: the backbone name
("open_clip:ViT-B-32" -> NAME), the vocabulary ("laion" -> VOCAB, the one the registry
advertises for NAME) and its size (10000 -> SIZE: the shapes vocabulary has 160 words), the
image path ("00000308175.jpg" -> an example image) and the device ("cuda" -> DEVICE, the CPU
when there is no GPU). Where the reference downloads weights, interpcore's offline path must
give its one-line offline error instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import interp_splice as splice
from interpcore import InterpError

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "backbones" / "interp_shapes_models" / "weights"
pytestmark = pytest.mark.skipif(not (WEIGHTS / "clip-vit.safetensors").is_file(),
                                reason="shapes CLIP weights not shipped")

NAME = "shapes:clip-vit"
SIZE = 100
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
IMAGE = str(REPO / "examples" / "red_circle.png")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # concept dictionaries and means, restored afterwards
        mp.setenv("INTERP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def VOCAB():
    from interp_splice.model import default_vocabulary

    return default_vocabulary(NAME)


def test_loading_a_splice_model(VOCAB):
    splicemodel = splice.load(NAME, vocabulary=VOCAB, vocabulary_size=SIZE, l1_penalty=0.25, device=DEVICE)
    assert splicemodel.l1_penalty == 0.25 and len(splicemodel.vocabulary) == SIZE
    assert splicemodel.clip is splicemodel.backbone and splicemodel.clip.name == NAME


def test_the_scripts_positional_order_with_a_download_root(VOCAB, tmp_path):
    # decompose_image.py: splice.load(args.model, args.vocab, args.vocab_size, args.device, ...)
    splicemodel = splice.load(NAME, VOCAB, SIZE, DEVICE, str(tmp_path), l1_penalty=0.2,
                              return_weights=True)
    assert splicemodel.device.type == DEVICE and splicemodel.l1_penalty == 0.2
    assert splicemodel.return_weights and len(splicemodel.vocabulary) == SIZE
    with pytest.raises(InterpError, match="at most 5 positional"):
        splice.load(NAME, VOCAB, SIZE, DEVICE, str(tmp_path), 0.25)


def test_decomposing_and_recomposing_an_image(VOCAB):
    splicemodel = splice.load(NAME, vocabulary=VOCAB, vocabulary_size=SIZE, l1_penalty=0.25, return_weights=True, device=DEVICE)
    preprocess = splice.get_preprocess(NAME)

    image = preprocess(Image.open(IMAGE)).unsqueeze(0).to(DEVICE)

    sparse_weights = splicemodel.encode_image(image)         # shape = [1, 10000], l0 norm = 9
    reconstruction = splicemodel.recompose_image(sparse_weights)   # shape = [1, 512]

    assert sparse_weights.shape == (1, SIZE) and bool((sparse_weights >= 0).all())
    assert reconstruction.shape == (1, splicemodel.embed_dim)
    assert torch.allclose(reconstruction.norm(dim=1), torch.ones(1, device=reconstruction.device), atol=1e-5)


def test_mapping_sparse_weights_to_text_vocabulary(VOCAB, capsys):
    splicemodel = splice.load(NAME, vocabulary=VOCAB, vocabulary_size=SIZE, l1_penalty=0.15, return_weights=True, device=DEVICE)
    preprocess = splice.get_preprocess(NAME)
    vocabulary = splice.get_vocabulary(VOCAB, SIZE)

    image = preprocess(Image.open(IMAGE)).unsqueeze(0).to(DEVICE)

    sparse_weights = splicemodel.encode_image(image)         # shape = [1, 10000], l0 norm = 9
    reconstruction = splicemodel.recompose_image(sparse_weights)   # shape = [1, 512]

    sparse_weights = sparse_weights.squeeze()

    for weight_idx in torch.sort(sparse_weights, descending=True)[1]:
        print(f"{vocabulary[weight_idx]}: {sparse_weights[weight_idx]}")

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == SIZE and vocabulary == splicemodel.vocabulary
    named = [ln.rsplit(": ", 1)[0] for ln in lines if float(ln.rsplit(": ", 1)[1]) > 0]
    assert len(named) == int((sparse_weights > 0).sum())
    assert "red" in named and "circle" in named  # the image is a red circle


class VLMBackbone(torch.nn.Module):
    """The reader's own model (the README's ``VLMBackbone()``): the shapes CLIP's open_clip
    module behind ``encode_image(pixels)`` and ``encode_text(a line of text, or tokens)``; it
    is not an interpcore backbone."""

    def __init__(self):
        super().__init__()
        from interpcore import get_backbone

        bb = get_backbone(NAME, device=DEVICE)
        self.net, self.tokenize = bb.model, bb.tokenize

    def encode_image(self, pixels):
        return self.net.encode_image(pixels)

    def encode_text(self, text):
        if isinstance(text, str):
            return self.net.encode_text(self.tokenize([text.strip()]).to(DEVICE))[0]
        return self.net.encode_text(text)


@pytest.fixture
def own_files(VOCAB, tmp_path):
    """``path/to/image_mean.pt`` and ``path/to/vocab.txt`` of the README's recipe."""
    model = splice.load(NAME, VOCAB, SIZE, DEVICE)
    torch.save(model.image_mean.cpu(), tmp_path / "image_mean.pt")
    (tmp_path / "vocab.txt").write_text("\n".join(splice.get_vocabulary(VOCAB, SIZE)) + "\n")
    return tmp_path


def test_implementing_your_own_vlm_backbone_or_vocabulary(own_files, monkeypatch):
    monkeypatch.chdir(own_files)
    os.makedirs("path/to", exist_ok=True)
    os.replace("image_mean.pt", "path/to/image_mean.pt")
    os.replace("vocab.txt", "path/to/vocab.txt")

    vlm_backbone = VLMBackbone()
    image_mean = torch.load('path/to/image_mean.pt')
    vocab_path = 'path/to/vocab.txt'

    ## Compute embedded dictionary, mean-center and normalize
    concepts = []
    with open(vocab_path, "r") as f:
        lines = f.readlines()
        for line in lines:
            concepts.append(vlm_backbone.encode_text(line))
    concepts = torch.nn.functional.normalize(torch.stack(concepts), dim=1)
    concepts = torch.nn.functional.normalize(concepts-torch.mean(concepts, dim=0), dim=1)

    splicemodel = splice.SPLICE(image_mean, concepts, clip=vlm_backbone, device=DEVICE)

    # the model drives the module as the reference does: pixels in, its embeddings out
    assert splicemodel.clip is vlm_backbone and splicemodel.l1_penalty == 0.01  # the reference's default
    pixels = splice.get_preprocess(NAME)(Image.open(IMAGE)).unsqueeze(0).to(DEVICE)
    with torch.no_grad():
        z = torch.nn.functional.normalize(vlm_backbone.encode_image(pixels).float(), dim=1)
    splicemodel.return_weights = True
    w = splicemodel.encode_image(pixels)
    assert torch.allclose(w, splicemodel.decompose(splicemodel.center(z)), atol=1e-6)
    assert w.shape == (1, SIZE) and int((w > 0).sum()) >= 1
    from interp_splice.solvers import objective, solve_sklearn

    v = splicemodel.center(z)
    ws, _ = solve_sklearn(splicemodel.dictionary, v, 0.01)
    f, fs = objective(splicemodel.dictionary, v, w, 0.01), objective(splicemodel.dictionary, v, ws, 0.01)
    assert float(((f - fs) / fs).abs().max()) < 1e-4  # the reference's Lasso optimum
    splicemodel.return_weights = False
    dense = splicemodel.encode_image(pixels)
    assert torch.allclose(dense, splicemodel.recompose_image(w), atol=1e-6)
    # forward(image, text) with the module's own tokens
    tokens = splice.get_tokenizer(NAME)(["a red circle"]).to(DEVICE)
    img_out, txt_out = splicemodel(pixels, tokens)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(vlm_backbone.encode_text(tokens).float(), dim=1)
    assert torch.allclose(txt_out, expected, atol=1e-5)
    with pytest.raises(InterpError, match="preprocessed pixel tensors"):
        splicemodel.encode_image(Image.open(IMAGE))  # the module takes pixels, as in the reference


def test_api_functions_switch_the_model_like_the_reference(VOCAB):
    splicemodel = splice.load(NAME, VOCAB, SIZE, DEVICE, l1_penalty=0.25)
    assert not splicemodel.return_weights and not splicemodel.return_cosine
    image = splice.get_preprocess(NAME)(Image.open(IMAGE)).unsqueeze(0).to(DEVICE)
    weights, l0_norm, cosine = splice.decompose_image(image, splicemodel, DEVICE)
    # as in the reference, decompose_image leaves the model returning (weights, cosine)
    assert splicemodel.return_weights and splicemodel.return_cosine
    w2, cos2 = splicemodel.encode_image(image)
    assert torch.allclose(w2, weights) and float(cos2.sum()) == pytest.approx(cosine, abs=1e-6)
    assert l0_norm == int((weights > 0).sum()) and 0 < cosine <= 1

    # decompose_dataset / decompose_classes on a DataLoader of (images, labels)
    pixels = torch.cat([image, torch.flip(image, dims=[3])])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, torch.tensor([0, 1])),
                                         batch_size=2)
    mean_w, l0, cos = splice.decompose_dataset(loader, splicemodel, DEVICE)
    class_weights, l0_c, cos_c = splice.decompose_classes(loader, 1, splicemodel, DEVICE)
    assert mean_w.shape == (SIZE,) and list(class_weights) == [1]
    assert l0_c >= 1 and 0 < cos_c <= 1 and 0 < cos <= 1 and l0 >= 1

    # intervene_image(image, intervention_indices)
    splicemodel.return_weights, splicemodel.return_cosine = True, False
    top = int(weights[0].argmax())
    w_int = splicemodel.intervene_image(image, [top])
    assert float(w_int[0, top]) == 0 and float(weights[0, top]) > 0

    # the README's API list: available_models, get_tokenizer, get_vocabulary(name)
    assert NAME.split(":")[1] in splice.available_models()[NAME.split(":")[0]]
    assert splice.get_tokenizer(NAME)(["a red circle"]).shape[0] == 1
    assert len(splice.get_vocabulary(VOCAB)) >= SIZE


OFFLINE_SNIPPET = """
import interp_splice as splice
try:
    splice.load("open_clip:ViT-B-32", vocabulary="laion", vocabulary_size=10000, l1_penalty=0.25, device="cpu")
except Exception as e:
    print(type(e).__name__)
    print(str(e))
else:
    print("loaded")
"""


def test_the_references_own_model_offline_is_interpcores_one_line_error(tmp_path):
    env = dict(os.environ, INTERP_OFFLINE="1", HF_HUB_OFFLINE="1", HOME=str(tmp_path),
               HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               INTERP_CACHE_DIR=str(tmp_path / "interp"))
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", OFFLINE_SNIPPET], env=env, capture_output=True,
                         text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert lines[0] == "OfflineError", out.stdout + out.stderr
    assert len(lines) == 2 and "open_clip:ViT-B-32" in lines[1] and "pretrained=" in lines[1]
