"""The second-order neuron lens (plugins/interp_neurons, issue 20): its bookkeeping against a
direct computation, the residual stream's MLP neuron access, the result, concept search,
ablation, the shapes-world ground truth and the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import interpcore  # noqa: E402
from interpcore.testing import check_method, tiny_images, tiny_open_clip_backbone  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return tiny_open_clip_backbone(seed=0)


def _images(n=8):
    ds = tiny_images(n)
    return [ds[i]["image"] for i in range(n)]


def test_mlp_neurons_split_the_mlp_exactly(tiny):
    """ViTBlockParts.mlp_hidden / mlp_out_weight / mlp_out_bias rebuild each block's MLP."""
    stream = tiny.residual_stream()
    y = torch.randn(2, 5, stream.width)
    for i in range(stream.num_layers):
        b = stream.block(i)
        with torch.no_grad():
            split = b.mlp_hidden(y) @ b.mlp_out_weight.T + b.mlp_out_bias
            assert torch.allclose(split, b.mlp(y), atol=1e-5, rtol=1e-5)


def test_neuron_effects_sum_to_the_layers_mlp_output_carried_by_later_attention(tiny):
    """The per-neuron factorisation (image-independent directions times per-image attention
    coefficients) equals putting the layer's whole MLP output (less its bias) through each
    later layer's linearised LayerNorm, value path and output projection at the class token,
    then ln_post and proj, computed directly from the stream's parts."""
    from interp_neurons.lens import NeuronsExplainer, _effects, _forward, _ln_gain_centred

    lens = NeuronsExplainer(tiny, vocabulary=["red", "blue"])
    s = lens.stream
    with torch.no_grad():
        hidden, attn, sigma, sp, rep, err = _forward(s, tiny.to_pixels(_images(6)), lens.layers)
        assert torch.allclose(rep, tiny.encode_image(_images(6)), atol=1e-4, rtol=1e-4)
        assert err < 1e-5
        for l in lens.layers:
            total = _effects(lens.lens, hidden, attn, sigma, sp, l).sum(1)
            b = s.block(l)
            c = b.ls_2(hidden[l] @ b.mlp_out_weight.T)
            n, t, w = c.shape
            direct = 0
            for m in range(l + 1, s.num_layers):
                bm = s.block(m)
                g = _ln_gain_centred(bm.ln_1, c.reshape(-1, w)).reshape(n, t, w) / sigma[m][..., None]
                v = bm.qkv(g)[2] - bm.qkv(torch.zeros(1, 1, w))[2]
                o = bm.ls_1(torch.einsum("nht,nhtd->nhd", attn[m], v).reshape(n, -1) @ bm.out_proj_weight.T)
                o = (o - o.mean(-1, keepdim=True)) * s.ln_post_weight / sp[:, None]
                direct = direct + o @ s.proj
            assert float((total - direct).norm() / direct.norm()) < 1e-4


def test_explain_meets_the_method_contract_and_round_trips(tiny, tmp_path):
    lens = interpcore.get_explainer("neurons", tiny, vocabulary=["red", "green", "blue", "a circle", "a square"],
                                    texts_per_neuron=3)
    images = _images(12)
    check_method(lens, images)
    res = lens.explain(images)
    L, hidden = len(res.layers), len(res.texts[0])
    assert res.layers == list(range(tiny.residual_stream().num_layers - 1))
    assert res.directions.shape == (L, hidden, tiny.embed_dim)
    assert np.allclose(np.linalg.norm(res.directions, axis=-1), 1, atol=1e-4)
    assert ((res.sparsity > 0) & (res.sparsity <= 1)).all() and ((res.energy > 0) & (res.energy <= 1 + 1e-5)).all()
    assert res.verification.passed
    back = type(res).load(res.save(tmp_path / "r"))
    assert back.texts == res.texts and np.array_equal(back.directions, res.directions)


def test_principal_directions_are_the_authors_compute_pcas(tiny, monkeypatch):
    """As the authors' compute_pcas.py: centre each neuron's effects by their mean, keep the
    images farthest from it (5 of 12 here), take the top right singular vector of those
    centred effects and flip it unless most of them project positively; energy is its share
    of their squared norm. Computed directly from the effects with numpy."""
    import interp_neurons.lens as lens_module

    monkeypatch.setattr(lens_module, "PCA_IMAGES", 5)
    lens = interpcore.get_explainer("neurons", tiny, vocabulary=["red", "blue"])
    images = _images(12)
    res = lens.explain(images)
    for i, layer in enumerate(res.layers):
        eff = lens.effects(images, layer)[0].double().numpy()  # (N, hidden, embed)
        centred = eff - eff.mean(0)
        for n in range(0, eff.shape[1], 7):
            c = centred[:, n]
            far = c[np.argsort(np.linalg.norm(c, axis=-1))[-5:]]
            _, sv, vh = np.linalg.svd(far, full_matrices=False)
            d = vh[0] if ((far @ vh[0]) > 0).sum() > 2 else -vh[0]
            assert np.allclose(res.directions[i, n], d, atol=2e-4), (layer, n)
            assert res.energy[i, n] == pytest.approx(sv[0] ** 2 / (sv ** 2).sum(), abs=1e-4)


def test_the_last_layers_neurons_have_no_effect_and_no_text(tiny):
    """No later attention carries the last layer's neurons: their effects are zero, so they get
    a zero direction and no text (not the arbitrary eigenvector of a zero covariance put into
    words), while the earlier layer beside them keeps its texts."""
    last = tiny.residual_stream().num_layers - 1
    lens = interpcore.get_explainer("neurons", tiny, layers=[last - 1, last], vocabulary=["red", "green", "blue"])
    res = lens.explain(_images(6))
    assert not res.mean_norm[1].any() and not res.directions[1].any() and not res.energy[1].any()
    assert all(t == [] for t in res.texts[1]) and res.label(last, 0) == ""
    assert sum(bool(t) for t in res.texts[0]) > 0 and np.abs(res.mean_norm[0]).max() > 0


def test_find_returns_the_neuron_whose_direction_is_the_text(tiny):
    lens = interpcore.get_explainer("neurons", tiny, vocabulary=["red", "blue"])
    res = lens.explain(_images(6))
    t = tiny.encode_text(["a purple star"], normalize=True)[0].numpy()
    res.directions[0, 5] = t
    (layer, neuron, cos), *_ = lens.find(res, "a purple star", k=3)
    assert (layer, neuron) == (res.layers[0], 5) and cos == pytest.approx(1.0, abs=1e-5)


def test_ablating_a_neuron_whose_effect_is_its_mean_changes_nothing(tiny):
    """Mean-ablation replaces effects by their means: on a probe set of one image twice, the
    means are the image's own effects, so the representation, hence every accuracy, is
    unchanged."""
    lens = interpcore.get_explainer("neurons", tiny, vocabulary=["red", "blue"])
    ds = tiny_images(1)
    res = lens.explain([ds[0]["image"], ds[0]["image"]])
    ab = lens.ablate(res, res.neurons(), ds)
    assert ab.before == ab.after and set(ab.before) == {"label"}


def test_activation_ablation_is_the_models_own_forward_with_the_activations_replaced(tiny):
    """``_forward(..., replace=...)`` (what ``how="activation"`` runs) equals open_clip's own
    encode_image with a hook putting the values into the GELU's output, and the explained
    result's mean activations are the probe set's per-token means."""
    from interp_neurons.lens import _forward

    lens = interpcore.get_explainer("neurons", tiny, vocabulary=["red", "blue"])
    images = _images(5)
    res = lens.explain(images)
    with torch.no_grad():
        hidden = _forward(lens.stream, tiny.to_pixels(images), lens.layers)[0]
    for i, l in enumerate(lens.layers):
        assert np.allclose(res.mean_activations[i], hidden[l].mean(0).numpy(), atol=1e-5)
    idx = [1, 4, 9]
    values = torch.as_tensor(res.mean_activations[1][:, idx])

    def put(module, args, out):
        out = out.clone()
        out[..., idx] = values
        return out

    handle = tiny.model.visual.transformer.resblocks[1].mlp.gelu.register_forward_hook(put)
    try:
        hooked = tiny.encode_image(images)
    finally:
        handle.remove()
    with torch.no_grad():
        rep = _forward(lens.stream, tiny.to_pixels(images), lens.layers, {1: (idx, values)})[4]
    assert torch.allclose(rep, hooked, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(rep, tiny.encode_image(images), atol=1e-3)


def test_activation_ablation_with_an_images_own_means_changes_nothing(tiny):
    lens = interpcore.get_explainer("neurons", tiny, vocabulary=["red", "blue"])
    ds = tiny_images(1)
    res = lens.explain([ds[0]["image"], ds[0]["image"]])
    ab = lens.ablate(res, res.neurons(), ds, how="activation")
    assert ab.before == ab.after and ab.how == "activation"
    with pytest.raises(interpcore.InterpError, match="how must be one of"):
        lens.ablate(res, res.neurons(), ds, how="zero")


def test_segment_needs_masks_and_a_task(tiny):
    lens = interpcore.get_explainer("neurons", tiny, vocabulary=["red", "blue"])
    res = lens.explain(_images(4))
    with pytest.raises(interpcore.InterpError, match="has a mask"):
        lens.segment(res, tiny_images(4))
    with pytest.raises(interpcore.InterpError, match="no task 'color'"):
        lens.segment(res, tiny_images(4), task="color")


def test_layers_out_of_range_is_one_sentence_error(tiny):
    with pytest.raises(interpcore.InterpError, match="layers must be in"):
        interpcore.get_explainer("neurons", tiny, layers=[99])


@pytest.fixture(scope="module")
def shapes_truth():
    from interp_shapes.groundtruth import neurons_ground_truth

    return neurons_ground_truth(n=300)


@pytest.mark.slow
def test_shapes_clip_neurons_name_every_attribute_category(shapes_truth):
    """Ground truth from the world's words: on 300 images, first texts of the second-order
    principal directions name a colour, a shape, a position and a background; ablating the
    background neurons (activations, every order) moves shape and colour by < 3 points, while
    ablating every analysed neuron does move them (the ablation is not a no-op)."""
    gt = shapes_truth
    assert all(gt.categories[c] > 0 for c in ("color", "shape", "position", "background")), str(gt)
    checks = list(gt.checks.values())
    assert checks[0]["passed"] and checks[2]["passed"], str(gt)
    assert gt.zero_shot_before["shape"] - gt.zero_shot_all_ablated["shape"] > 20, str(gt)


@pytest.mark.slow
def test_no_choice_of_mlp_neurons_can_move_the_shapes_clips_background(shapes_truth):
    """Why the background target below is out of reach: mean-ablating the activations of every
    MLP neuron of every layer (the last one's included) still leaves background accuracy
    within 15 points (measured: 99.3% -> 99.0% on 300 images), so no subset of them can lower
    it by 15. The background reaches the class token through attention alone."""
    gt = shapes_truth
    assert gt.layers == [0, 1, 2, 3] and gt.analysed_neurons == 4 * 384, str(gt)
    assert gt.zero_shot_before["background"] - gt.zero_shot_all_ablated["background"] < 15, str(gt)


@pytest.mark.slow
def test_shapes_clip_neuron_segmentation_finds_the_objects(shapes_truth):
    """The activation maps of the 50 layer-2 neurons projecting most on each image's predicted
    shape localise the object (mIoU >= 0.6 on 300 images; measured 0.704). Random neurons of
    the same layer do as well (0.744; printed, not asserted: docs/neurons.md)."""
    seg = shapes_truth.segmentation
    assert seg["layers"] == [2] and seg["miou"] >= 0.6, str(shapes_truth)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: mean-ablating the activations of every MLP neuron of the "
                                       "model (every order) moves the shapes CLIP's background accuracy by < 1 "
                                       "point while shape drops > 50: this model does not carry its background "
                                       "through MLP neurons (docs/neurons.md)")
def test_shapes_clip_background_neurons_carry_background(shapes_truth):
    gt = shapes_truth
    assert gt.zero_shot_before["background"] - gt.zero_shot_after["background"] >= 15, str(gt)


@pytest.mark.slow
def test_commands_explain_ablate_find(tmp_path):
    from click.testing import CliRunner

    from interpcore import cli as icli

    icli._add_plugin_commands()
    run = lambda *a: CliRunner().invoke(icli.cli, ["-q", *a])  # noqa: E731
    out = tmp_path / "run"
    r = run("neurons", "explain", "--layers", "2", "--limit", "60", "-V", "shapes-attributes", "--out", str(out),
            "--report", str(tmp_path / "r.html"), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["layers"] == [2] and data["n_images"] == 60
    assert (out / "neurons.png").stat().st_size > 0 and (tmp_path / "r.html").stat().st_size > 0
    for how in ("second-order", "activation"):
        r = run("neurons", "ablate", "--from", str(out / "result"), "--neuron", "L2.N3", "--task", "color",
                "--limit", "60", "--how", how, "--json")
        assert r.exit_code == 0, r.output
        data = json.loads(r.stdout)
        assert set(data["before"]) == {"color"} and data["how"] == how.replace("-", "_")
    r = run("neurons", "segment", "--from", str(out / "result"), "--limit", "40", "-k", "10", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["layers"] == [2] and data["n_images"] == 40 and 0 <= data["miou"] <= 1
    r = run("neurons", "find", "on grass", "--from", str(out / "result"), "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    assert [h["layer"] for h in json.loads(r.stdout)] == [2, 2, 2]
    r = run("neurons", "find", "x", "--from", str(out / "result"), "-b", "shapes:resnet")
    assert r.exit_code == 1 and "pass -b shapes:clip-vit" in r.output


def test_hf_clip_neurons_match_open_clip_on_identical_weights(tmp_path):
    """transformers' CLIP exposes its MLP neurons too: on weights converted from an open_clip
    model, the lens's effects, directions and texts are those of the open_clip model."""
    transformers = pytest.importorskip("transformers")
    from backbone_tiny import OC_VIT, hf_config_like, open_clip_model, open_clip_to_hf, pixels, write_clip_tokenizer
    from safetensors.torch import save_file

    oc = open_clip_model(OC_VIT, seed=3)
    save_file({k: v.contiguous() for k, v in oc.state_dict().items()}, str(tmp_path / "oc.safetensors"))
    hf = transformers.CLIPModel(hf_config_like(OC_VIT)).eval()
    hf.load_state_dict(open_clip_to_hf(oc.state_dict()), strict=False)
    hf.save_pretrained(str(tmp_path / "hf"))
    write_clip_tokenizer(tmp_path / "hf")
    a = interpcore.get_backbone("open_clip:tiny-n", pretrained=str(tmp_path / "oc.safetensors"), device="cpu",
                                model_config=OC_VIT)
    b = interpcore.get_backbone(f"hf:{tmp_path / 'hf'}", device="cpu")
    stream = b.residual_stream()
    y = torch.randn(2, 5, stream.width)
    with torch.no_grad():
        for i in range(stream.num_layers):
            p = stream.block(i)
            assert torch.allclose(p.mlp_hidden(y) @ p.mlp_out_weight.T + p.mlp_out_bias, p.mlp(y), atol=1e-5)
    x = pixels(6)
    vocab = ["red", "green", "blue", "a circle", "a square"]
    ra, rb = (interpcore.get_explainer("neurons", bb, vocabulary=vocab).explain(x) for bb in (a, b))
    assert rb.verification.passed and rb.layers == ra.layers
    assert np.allclose(rb.mean_norm, ra.mean_norm, rtol=1e-3, atol=1e-6)
    assert np.allclose(rb.mean_activations, ra.mean_activations, atol=1e-5)
    cos = np.abs((rb.directions * ra.directions).sum(-1))
    assert np.median(cos) > 0.999


@pytest.mark.slow
def test_dataset_mode_through_the_job_runner_resumes_and_equals_in_process(tmp_path):
    """--job-dir: the per-image effects and activations as a sharded job, the statistics read
    shard by shard give the in-process result; a rerun computes no shard."""
    from click.testing import CliRunner
    from interp_neurons.lens import NeuronsResult

    from interpcore import cli as icli

    icli._add_plugin_commands()
    args = ["-q", "neurons", "explain", "--layers", "1,2", "--limit", "50", "-V", "shapes-attributes", "--json"]
    run = lambda *extra: CliRunner().invoke(icli.cli, args + list(extra))  # noqa: E731
    plain = run("--out", str(tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    want = NeuronsResult.load(tmp_path / "plain" / "result")
    for attempt in range(2):
        out = tmp_path / f"job{attempt}"
        r = run("--job-dir", str(tmp_path / "jobs"), "--shard-size", "20", "--out", str(out))
        assert r.exit_code == 0, r.output
        got = NeuronsResult.load(out / "result")
        assert got.n_images == 50
        for field in ("mean_norm", "sparsity", "mean_effects", "mean_activations", "directions"):
            a, b = getattr(got, field), getattr(want, field)
            assert np.allclose(a, b, rtol=1e-4, atol=1e-6), (field, float(np.abs(a - b).max()))
        # the same texts; weights agree up to float noise in the solver (4th decimal)
        assert [[t[:1] and t[0][0] for t in layer] for layer in got.texts] == \
            [[t[:1] and t[0][0] for t in layer] for layer in want.texts]
        last = json.loads((tmp_path / "jobs" / "manifest.json").read_text())["last_run"]
        assert (last["computed"], last["skipped"]) == (([0, 1, 2], []) if attempt == 0 else ([], [0, 1, 2]))
