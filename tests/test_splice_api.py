"""SpLiCE through the registry and the reference API, on the toy CLIP (known answers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import interp_splice as splice
from interp_splice.model import SpliceModel, SpliceResult, published_mean_file
from interp_splice.solvers import objective
from splice_toy import PALETTE, ToyColours, colour_image
from interpcore import CapabilityError, InterpError, OfflineError


@pytest.fixture
def registry(toy_registry):
    return toy_registry


@pytest.fixture
def model(registry):
    return splice.load("toy:clip", "toy-words", mean_dataset="toy-colours", l1_penalty=0.25)


def test_registry_decomposer_finds_the_true_colour(registry):
    from interpcore import get_backbone, get_decomposer

    dec = get_decomposer("splice", get_backbone("toy:clip"), vocabulary="toy-words",
                         mean_dataset="toy-colours")
    names = list(PALETTE)
    res = dec.decompose([colour_image(c, seed=i) for i, c in enumerate(names)], names=names)
    assert isinstance(res, SpliceResult)
    for i, c in enumerate(names):
        assert res.top(i, 1)[0][0] == c, f"{c}: {res.top(i, 3)}"
    assert 1 <= res.mean_l0 <= 5
    assert res.mean_cosine > 0.85
    d = res.to_dict()
    assert d["images"][0]["concepts"][0]["concept"] == "red"
    assert len(d["images"][0]["concepts"]) == int(res.l0[0])  # only nonzero concepts listed


def test_printout_follows_the_reference_script(model):
    res = model.explain([colour_image("blue")], names=["blue.png"])
    lines = str(res).splitlines()
    assert lines[0] == "Concept Decomposition of blue.png:"
    assert lines[1].startswith("\tblue\t")
    weights = [float(x.split("\t")[2]) for x in lines[1:-2]]
    assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
    assert lines[-2] == f"Decomposition L0 Norm: \t{int(res.l0[0])}"
    assert lines[-1].startswith("CLIP, SpLiCE Cosine Sim: \t")


def test_encode_image_flags_and_recomposition_agree(model):
    img = colour_image("orange")
    z = F.normalize(model.embed_images([img]), dim=1)
    v = model.center(z)
    weights = model.decompose(v)
    # the pipeline: v = normalize(normalize(z) - mu); z_hat = normalize(normalize(w C) + mu)
    expected_v = F.normalize(z - model.image_mean, dim=1)
    assert torch.allclose(v, expected_v, atol=1e-6)
    z_hat = F.normalize(F.normalize(weights @ model.dictionary, dim=1) + model.image_mean, dim=1)
    assert torch.allclose(model.recompose_image(weights), z_hat, atol=1e-6)
    model.return_weights, model.return_cosine = False, True
    dense, cos = model.encode_image([img])
    assert torch.allclose(dense, z_hat, atol=1e-6)
    assert cos.shape == (1,) and torch.allclose(cos, (z_hat * z).sum(1), atol=1e-6)
    model.return_weights, model.return_cosine = True, False
    assert torch.allclose(model.encode_image([img]), weights)


def test_weights_are_optimal_for_the_documented_problem(model):
    z = model.embed_images([colour_image(c, seed=3) for c in PALETTE])
    v = model.center(F.normalize(z, dim=1))
    w = model.decompose(v)
    f = objective(model.dictionary, v, w, 0.25)
    from interp_splice.solvers import solve_sklearn

    ws, _ = solve_sklearn(model.dictionary, v, 0.25)
    fs = objective(model.dictionary, v, ws, 0.25)
    assert float(((f - fs) / fs).abs().max()) < 1e-4


def test_pixels_pil_paths_and_embeddings_give_the_same_weights(model, tmp_path):
    img = colour_image("pink", seed=4)
    path = tmp_path / "pink.png"
    img.save(path)
    bb = model.backbone
    w_pil = model.decompose(model.center(F.normalize(model.embed_images([img]), dim=1)))
    model.return_weights = True
    assert torch.allclose(model.encode_image(str(path)), w_pil, atol=1e-6)
    assert torch.allclose(model.encode_image(bb.preprocess(img)[None]), w_pil, atol=1e-6)
    assert torch.allclose(model.encode_image(bb.encode_image([img])), w_pil, atol=1e-6)


def test_intervention_removes_a_concept(model):
    model.return_weights = True
    img = colour_image("red")
    w = model.encode_image([img])
    assert float(w[0, model.concept_indices("red")[0]]) > 0
    w2 = model.intervene_image([img], ["red"])
    assert float(w2[0, model.concept_indices("red")[0]]) == 0
    assert torch.equal(w2[:, 1:], w[:, 1:])  # red is concept 0; the rest untouched
    model.return_weights = False
    dense = model.intervene_image([img], [0])
    red_text = model.encode_text(["red"])
    assert float((dense * red_text).sum()) < float((model.encode_image([img]) * red_text).sum())
    with pytest.raises(InterpError, match="Did you mean: red"):
        model.intervene_image([img], ["redd"])


def test_forward_returns_image_and_text_embeddings(model):
    img_out, txt_out = model(colour_image("cyan"), ["cyan", "dog"])
    assert img_out.shape == (1, model.embed_dim) and txt_out.shape == (2, model.embed_dim)
    assert torch.allclose(txt_out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_reference_functions_on_dataloaders_datasets_and_names(model):
    ds = ToyColours("test", n=20)
    w, l0, cos = splice.decompose_image(colour_image("green"), model)
    assert w.shape == (1, len(model.vocabulary)) and l0 >= 1 and 0 < cos <= 1
    mean_w, l0_ds, cos_ds = splice.decompose_dataset(ds, model)
    assert mean_w.shape == (len(model.vocabulary),)
    # a torch DataLoader of (pixels, labels), as the reference uses
    pix = torch.stack([model.backbone.preprocess(ds[i]["image"]) for i in range(len(ds))])
    labels = torch.tensor([ds[i]["label"] for i in range(len(ds))])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pix, labels), batch_size=7)
    mean_w2, l0_2, cos_2 = splice.decompose_dataset(loader, model)
    assert torch.allclose(mean_w, mean_w2, atol=1e-5)
    assert l0_2 == pytest.approx(l0_ds) and cos_2 == pytest.approx(cos_ds, abs=1e-5)
    # images only (no labels) work for the whole-dataset path
    only = torch.utils.data.DataLoader(pix, batch_size=8)
    assert torch.allclose(splice.decompose_dataset(only, model)[0], mean_w, atol=1e-5)
    # per class: the class's own colour leads its mean weights
    cw, _, _ = splice.decompose_classes(loader, None, model)
    assert set(cw) == set(labels.tolist())
    for lab, vec in cw.items():
        assert model.vocabulary[int(vec.argmax())] == ToyColours.classes[lab]
    one, _, _ = splice.decompose_classes(ds, "yellow", model)
    assert list(one) == [ToyColours.classes.index("yellow")]
    by_name = splice.decompose_dataset("toy-colours", model, limit=20)
    assert torch.allclose(by_name[0], mean_w, atol=1e-5)


def test_mean_l0_and_cosine_are_means_not_batch_sums(model):
    ds = ToyColours("test", n=10)
    _, l0, cos = splice.decompose_dataset(ds, model, batch_size=10)
    res = model.explain([ds[i]["image"] for i in range(10)])
    assert l0 == pytest.approx(res.mean_l0)
    assert cos == pytest.approx(res.mean_cosine, abs=1e-6)
    assert cos <= 1.0


def test_construction_from_own_tensors_without_a_backbone():
    g = torch.Generator().manual_seed(0)
    C = F.normalize(torch.randn(50, 16, generator=g), dim=1)
    mu = 0.3 * F.normalize(torch.randn(16, generator=g), dim=0)
    z = torch.randn(4, 16, generator=g)
    m = SpliceModel(mu, C, l1_penalty=0.1, return_weights=True, vocabulary=[f"w{i}" for i in range(50)])
    w = m.encode_image(z)
    assert w.shape == (4, 50) and bool((w >= 0).all())
    res = m.explain(z)
    assert res.images == [f"image {i}" for i in range(4)] and res.backbone == "embeddings"
    with pytest.raises(InterpError, match="takes embeddings"):
        m.encode_image(colour_image("red"))


def test_seed_positional_order_and_aliases(registry):
    m = splice.load("toy:clip", "toy-words", -1, "cpu", l1_penalty=0.3, return_weights=True,
                    mean_dataset="toy-colours", solver="skl")
    assert m.device.type == "cpu" and m.l1_penalty == 0.3 and m.return_weights
    assert m.solver == "sklearn" and len(m.vocabulary) == 25
    m2 = splice.load("toy:clip", "toy-words", 5, 0.2, True, mean_dataset="toy-colours")
    assert m2.l1_penalty == 0.2 and m2.return_weights and len(m2.vocabulary) == 5
    assert splice.get_vocabulary("toy-words", 3) == ["colour", "bright", "dark", "paint"][-3:] or \
        len(splice.get_vocabulary("toy-words", 3)) == 3
    assert callable(splice.get_preprocess("toy:clip")) and callable(splice.get_tokenizer("toy:clip"))
    assert "toy" in splice.available_models()


def test_bad_inputs_are_clear_errors(model, registry, tmp_path):
    with pytest.raises(InterpError, match="dimensions but the concept dictionary"):
        model.encode_image(torch.randn(2, model.embed_dim + 1))
    with pytest.raises(InterpError, match="NaN"):
        model.encode_image(torch.full((1, model.embed_dim), float("nan")))
    with pytest.raises(InterpError, match=">= 0"):
        model.l1_penalty = -0.5
    with pytest.raises(InterpError, match="not an image"):
        bad = tmp_path / "notes.png"
        bad.write_text("not a picture")
        model.encode_image(str(bad))
    with pytest.raises(InterpError, match="not found"):
        model.encode_image(str(tmp_path / "missing.png"))
    with pytest.raises(InterpError):
        splice.load("toy:clip", [], mean_dataset="toy-colours")  # empty vocabulary
    with pytest.raises(InterpError, match="20 concepts but the dictionary has 25"):
        SpliceModel(model.image_mean, model.dictionary, vocabulary=["x"] * 20)
    with pytest.raises(InterpError, match="image mean"):
        SpliceModel(torch.zeros(5), model.dictionary)
    with pytest.raises(InterpError, match="no image mean is known"):
        splice.load("toy:clip", "toy-words")
    with pytest.raises(InterpError, match="Did you mean"):
        splice.load("toy:clap", "toy-words")


def test_backbone_without_text_encoder_is_refused(registry):
    from interpcore import get_decomposer
    from interpcore.base import Capability

    bb = splice.load("toy:clip", "toy-words", mean_dataset="toy-colours").backbone
    bb.capabilities = frozenset({Capability.IMAGE_ENCODER})
    with pytest.raises(CapabilityError, match="text_encoder"):
        get_decomposer("splice", bb)


def test_published_means_are_described_and_missing_offline_is_explained(registry, monkeypatch, tmp_path):
    rf = published_mean_file("open_clip:ViT-B-32", "laion2b_s34b_b79k")
    assert rf is not None and rf.url.endswith("open_clip_ViT-B-32_image.pt") and len(rf.sha256) == 64
    assert published_mean_file("open_clip:ViT-B-32", "some_other_tag") is None
    assert published_mean_file("clip:ViT-B/16") is not None
    monkeypatch.setenv("INTERP_OFFLINE", "1")
    from interp_splice.model import resolve_image_mean

    class Fake:
        name, pretrained, embed_dim = "clip:RN50", None, 1024

    with pytest.raises(OfflineError, match="clip_RN50_image.pt"):
        resolve_image_mean(Fake())


def test_a_mean_file_shipped_with_the_backbone_is_used(registry, tmp_path):
    import numpy as np

    from interpcore import get_backbone, get_decomposer

    bb = get_backbone("toy:clip")
    mean = np.linspace(-0.2, 0.2, bb.embed_dim).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean)
    bb.image_mean_file = str(tmp_path / "mean.npy")
    dec = get_decomposer("splice", bb, vocabulary="toy-words")
    assert torch.allclose(dec.model.image_mean.cpu(), torch.from_numpy(mean))


def test_dataset_means_do_not_depend_on_how_the_images_are_solved_in_blocks(model, monkeypatch):
    import interp_splice.model as M

    ds = ToyColours("test", n=30)
    sizes = []
    solve = model._solve

    def spy(v):
        sizes.append(v.shape[0])
        return solve(v)

    monkeypatch.setattr(model, "_solve", spy)
    monkeypatch.setattr(M, "SOLVE_BLOCK", 8)
    small = M.decompose_data(model, ds, by_class=True, batch_size=4)
    assert sizes == [8, 8, 8, 6]  # batches of 4 gathered into blocks of at least 8
    sizes.clear()
    monkeypatch.setattr(M, "SOLVE_BLOCK", 1000)
    whole = M.decompose_data(model, ds, by_class=True, batch_size=4)
    assert sizes == [30]
    assert torch.allclose(small.mean_weights, whole.mean_weights, atol=1e-5)
    assert small.class_counts == whole.class_counts and sum(small.class_counts.values()) == 30
    for k in whole.class_weights:
        assert torch.allclose(small.class_weights[k], whole.class_weights[k], atol=1e-5)


def test_sparse_recomposition_equals_the_dense_product():
    g = torch.Generator().manual_seed(1)
    C = F.normalize(torch.randn(3000, 16, generator=g), dim=1)
    mu = 0.3 * F.normalize(torch.randn(16, generator=g), dim=0)
    m = SpliceModel(mu, C, l1_penalty=0.1, vocabulary=[f"w{i}" for i in range(3000)])
    W = torch.rand(40, 3000, generator=g) * (torch.rand(40, 3000, generator=g) < 0.01)
    assert torch.allclose(m._weights_times_dictionary(W), W @ C, atol=1e-6)
    dense = F.normalize(F.normalize(W @ C, dim=1) + mu, dim=1)
    assert torch.allclose(m.recompose_image(W), dense, atol=1e-6)


def test_class_summaries_give_each_concepts_cosine_with_the_class_mean(model):
    ds = ToyColours("test", n=20)
    from interp_splice.model import decompose_data

    out = decompose_data(model, ds, by_class=True)
    for lab in out.class_weights:
        imgs = [ds[i]["image"] for i in range(len(ds)) if ds[i]["label"] == lab]
        v = model.center(F.normalize(model.embed_images(imgs), dim=1)).double().cpu()
        expected = model.dictionary.double().cpu() @ F.normalize(v.mean(0), dim=0)
        assert torch.allclose(out.class_concept_cosine[lab].double(), expected, atol=1e-5)
        # the class's own colour is the closest concept to its mean
        assert out.concepts[int(out.class_concept_cosine[lab].argmax())] == ToyColours.classes[lab]
    lab = next(iter(out.class_weights))
    lines = out.format(lab).splitlines()
    first = lines[1].split("\t")
    j = out.concepts.index(first[1])
    assert float(first[3]) == pytest.approx(float(out.class_concept_cosine[lab][j]), abs=1e-3)
    assert lines[-1].startswith("Third column: cosine of the mean centred image embedding")
