"""CLIP-Dissect (plugins/interp_dissect, issue 20): the similarity functions, the method on a
real model through the registry, the shapes-world ground truth, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import interpcore  # noqa: E402
from interpcore.testing import check_method, tiny_images  # noqa: E402

SIMILARITIES = ("soft_wpmi", "wpmi", "cos", "cos_cubed", "rank_reorder", "rank_reorder_all")


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_each_similarity_finds_the_concept_a_neuron_copies(similarity):
    """Neuron j fires exactly where concept perm[j] is similar (plus noise): every function
    labels it with that concept, among 12 concepts with independent similarities."""
    from interp_dissect.dissect import similarity_scores

    g = torch.Generator().manual_seed(0)
    sims = torch.rand(400, 12, generator=g) * 0.6 - 0.2
    perm = torch.randperm(12, generator=g)[:8]
    acts = sims[:, perm] * 5 + 0.05 * torch.randn(400, 8, generator=g)
    scores = similarity_scores(acts, sims, similarity)
    assert scores.shape == (8, 12)
    assert scores.argmax(1).tolist() == perm.tolist()


def test_wpmi_and_soft_wpmi_are_the_papers_probabilities_computed_directly():
    """On a few images, products of probabilities do not underflow: p(c | E) as the product
    over the top images (soft: each kept with its probability), p(c) as its mean over the
    layer's neurons, both straight from the definitions, give the functions' scores."""
    from interp_dissect.dissect import MIN_PROB, similarity_scores

    g = torch.Generator().manual_seed(1)
    acts, sims = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.rand(30, 7, generator=g, dtype=torch.float64)
    for name, k, alpha, lam, keep in (("wpmi", 4, 2.0, 0.6, None), ("soft_wpmi", 6, 10.0, 1.0, (0.998, 0.97))):
        probs = torch.softmax(alpha * sims, 1)
        given = torch.ones(5, 7, dtype=torch.float64)
        for j in range(5):
            for r, i in enumerate(acts[:, j].argsort(descending=True)[:k].tolist()):
                q = keep[0] - r / k * (keep[0] - keep[1]) if keep else 1.0
                given[j] *= 1 + q * (probs[i] - 1) + MIN_PROB
        want = given.log() - lam * given.mean(0, keepdim=True).log()
        got = similarity_scores(acts, sims, name, top_k=k, alpha=alpha, lam=lam)
        assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5), name


def test_cos_cos_cubed_and_rank_reorder_are_the_authors_functions_computed_directly():
    """The authors' cos_similarity, cos_similarity_cubed and rank_reorder, written out with
    loops over images: rank-reorder's baseline as the mean over *every* permutation of the
    top activations (the expectation the authors' code estimates with five draws)."""
    import itertools

    from interp_dissect.dissect import similarity_scores

    g = torch.Generator().manual_seed(2)
    n, k_neurons, m = 80, 3, 5  # 5% of 80 images: the top 4, 24 permutations
    acts = torch.randn(n, k_neurons, generator=g, dtype=torch.float64)
    sims = torch.rand(n, m, generator=g, dtype=torch.float64) * 0.5 + 0.05
    a, s = acts.numpy(), sims.numpy()
    unit = lambda x, floor=0.0: x / np.maximum(np.linalg.norm(x, axis=0), floor)  # noqa: E731
    assert np.allclose(similarity_scores(acts, sims, "cos").double(), unit(a).T @ unit(s), atol=1e-6)
    cubed = unit((a - a.mean(0)) ** 3, 1e-3).T @ unit((s - s.mean(0)) ** 3, 1e-3)
    assert np.allclose(similarity_scores(acts, sims, "cos_cubed").double(), cubed, atol=1e-6)
    want = np.zeros((k_neurons, m))
    for j in range(k_neurons):
        top = np.argsort(-a[:, j], kind="stable")[:4]
        q = a[top, j]  # descending
        baseline = np.mean([np.mean(np.abs(q - q[list(p)]) ** 3) for p in itertools.permutations(range(4))])
        for c in range(m):
            # the activation value whose rank among the top activations is the image's rank by the concept
            ranks = np.argsort(np.argsort(s[top, c], kind="stable"), kind="stable")
            reordered = np.sort(q)[ranks]
            want[j, c] = -np.mean(np.abs(q - reordered) ** 3) / baseline / np.sqrt(s[top, c].mean())
    assert np.allclose(similarity_scores(acts, sims, "rank_reorder").double(), want, rtol=1e-5, atol=1e-6)


def test_default_pooling_is_the_authors_a_maps_mean_and_a_token_layers_class_token():
    from interp_dissect.dissect import pool_activations

    maps, tokens = torch.randn(3, 4, 5, 5), torch.randn(3, 7, 4)
    assert torch.equal(pool_activations(maps), maps.mean((2, 3)))
    assert torch.equal(pool_activations(tokens), tokens[:, 0])
    assert torch.equal(pool_activations(tokens, "mean"), tokens.mean(1))
    with pytest.raises(interpcore.InterpError, match="needs a token layer"):
        pool_activations(maps, "cls")


def test_unknown_similarity_and_bad_neuron_are_one_sentence_errors():
    bb = interpcore.testing.tiny_open_clip_backbone(seed=0)
    with pytest.raises(interpcore.InterpError, match="choose one of"):
        interpcore.get_explainer("dissect", bb, similarity="pmi")
    with pytest.raises(interpcore.InterpError, match=r"alpha does not apply to similarity 'rank_reorder' "
                                                     r"\(it takes p, top_fraction, scale_p\)"):
        interpcore.get_explainer("dissect", bb, similarity="rank_reorder", alpha=1.0)
    ex = interpcore.get_explainer("dissect", bb, layer="visual.transformer.resblocks.0.mlp.gelu",
                                  vocabulary=["a red thing", "a blue thing"])
    with pytest.raises(interpcore.InterpError, match="out of range"):
        ex.explain(tiny_images(4), neurons=[10_000])


def test_vit_mlp_neurons_on_a_tiny_clip_meet_the_method_contract(tmp_path):
    """ViT MLP neurons (a token layer, the class token by default) of a tiny open_clip ViT,
    the same model scoring the concepts; the result saves and loads unchanged."""
    bb = interpcore.testing.tiny_open_clip_backbone(seed=0)
    concepts = ["red", "green", "blue", "a circle", "a square"]
    ex = interpcore.get_explainer("dissect", bb, layer="visual.transformer.resblocks.1.mlp.gelu",
                                  vocabulary=concepts, similarity="soft_wpmi")
    images = tiny_images(24)
    check_method(ex, images)
    res = ex.explain(images)
    width = bb.forward_features(bb.to_pixels([images[0]["image"]]), "visual.transformer.resblocks.1.mlp.gelu").shape[-1]
    assert len(res.labels) == len(res.neurons) == width and set(res.labels) <= set(concepts)
    assert res.scores.shape == (width, len(concepts)) and np.isfinite(res.scores).all()
    assert res.labels == [concepts[i] for i in res.scores.argmax(1)]
    assert res.settings == {"top_k": 100, "alpha": 10.0, "lam": 1.0, "p_start": 0.998, "p_end": 0.97}
    back = type(res).load(res.save(tmp_path / "r"))
    assert back.labels == res.labels and np.array_equal(back.scores, res.scores) and back.settings == res.settings
    assert "CLIP-Dissect" in str(res)


@pytest.mark.slow
def test_shapes_resnet_channels_are_named_by_their_attribute_value():
    """Ground truth from the labels: each channel of the shapes ResNet's last stage is
    matched with the attribute value it separates best (AUC >= 0.8); the label of
    interpcore's rank-reorder over all images names that value for >= 80% of them (300 probe
    images)."""
    from interp_shapes.groundtruth import dissect_ground_truth

    gt = dissect_ground_truth(n=300)
    assert len(gt.neurons) >= 50, str(gt)
    assert gt.rate >= 0.8, str(gt)
    assert set(gt.rates) == set(SIMILARITIES)
    assert all(c["passed"] for c in gt.checks.values()), str(gt)


@pytest.mark.slow
def test_command_writes_labels_figure_and_report(tmp_path):
    from click.testing import CliRunner

    from interpcore import cli as icli

    icli._add_plugin_commands()
    main = icli.cli
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["dissect", "-b", "shapes:resnet", "--layer", "layer3", "--limit", "120",
                                  "-V", "shapes", "--similarity", "wpmi", "--alpha", "1", "--out", str(out),
                                  "--report", str(tmp_path / "r.html"), "--json", "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["layer"] == "layer3" and len(data["labels"]) == 64 and data["n_images"] == 120
    assert (out / "labels.png").stat().st_size > 0 and (tmp_path / "r.html").stat().st_size > 0
    assert json.loads((out / "run.json").read_text())["settings"]["alpha"] == 1.0
    r = CliRunner().invoke(main, ["dissect", "-b", "shapes:resnet", "--limit", "1"])
    assert r.exit_code == 1 and "--limit must be >= 2" in r.output


@pytest.mark.slow
def test_dataset_mode_through_the_job_runner_resumes_and_labels_as_in_process(tmp_path):
    """--job-dir: the activations and the CLIP's embeddings as two sharded jobs; the labels
    are those of the in-process run, and a rerun computes no shard."""
    from click.testing import CliRunner

    from interpcore import cli as icli

    icli._add_plugin_commands()
    args = ["-q", "dissect", "-b", "shapes:resnet", "--layer", "layer3", "--limit", "60", "-V", "shapes",
            "--similarity", "cos", "--json"]
    run = lambda *extra: CliRunner().invoke(icli.cli, args + list(extra))  # noqa: E731
    plain = run()
    assert plain.exit_code == 0, plain.output
    jobs = tmp_path / "jobs"
    for attempt in range(2):
        r = run("--job-dir", str(jobs), "--shard-size", "25")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["labels"] == json.loads(plain.stdout)["labels"]
        for name in ("activations", "clip"):
            last = json.loads((jobs / name / "manifest.json").read_text())["last_run"]
            assert (last["computed"], last["skipped"]) == (([0, 1, 2], []) if attempt == 0 else ([], [0, 1, 2]))
    r = CliRunner().invoke(icli.cli, ["dissect", "examples/red_circle.png", "--job-dir", str(jobs)])
    assert r.exit_code == 1 and "give --dataset, not images" in r.output
