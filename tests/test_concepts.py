"""Concept dictionaries, text embeddings and image means (interpcore.concepts)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import interpcore
from interpcore import Backbone, Capability, CapabilityError, Dataset, InterpError, Vocabulary
from interpcore.cache import list_entries, save_tensors
from interpcore.concepts import concept_dictionary, image_mean, load_tensor_file, text_embeddings

DIM = 12
WORDS = ["cat", "dog", "car", "tree", "house", "river", "cloud", "apple", "chair", "book"]


def text_vector(text: str) -> torch.Tensor:
    """A fixed pseudo-random, unnormalized embedding per text (not unit length on purpose)."""
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(DIM, generator=g) * 3 + 1


class FakeBackbone(Backbone):
    """Text and image encoders that record how they were called."""

    def __init__(self, name="fake:tiny", pretrained="v1", capabilities=(Capability.TEXT_ENCODER,
                                                                          Capability.IMAGE_ENCODER)):
        self.name, self.pretrained = name, pretrained
        self.capabilities = frozenset(capabilities)
        self.embed_dim = DIM
        self.text_calls: list[list[str]] = []
        self.image_calls: list[int] = []
        g = torch.Generator().manual_seed(0)
        self.image_proj = torch.randn(3, DIM, generator=g)

    def encode_text(self, texts, *, normalize=False, batch_size=256):
        self.text_calls.append(list(texts))
        z = torch.stack([text_vector(t) for t in texts])
        return F.normalize(z, dim=-1) if normalize else z

    def encode_image(self, images, *, normalize=False, batch_size=64):
        self.image_calls.append(len(images))
        z = torch.stack([image_vector(im, self.image_proj) for im in images])
        return F.normalize(z, dim=-1) if normalize else z


def image_vector(im, proj):
    px = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).mean(dim=(0, 1))
    return px @ proj + 0.5


class ColourDataset(Dataset):
    def __init__(self, n=10, name="colours"):
        self.name, self.n = name, n
        rng = np.random.default_rng(1)
        self.colours = rng.integers(0, 256, size=(n, 3))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        arr = np.zeros((8, 8, 3), dtype=np.uint8) + self.colours[i].astype(np.uint8)
        return {"image": Image.fromarray(arr), "label": 0}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def splice_reference(texts):
    """SpLiCE's recipe written out: normalize, subtract the column mean, normalize."""
    z = F.normalize(torch.stack([text_vector(t) for t in texts]), dim=-1)
    centred = z - z.mean(dim=0)
    return centred, F.normalize(centred, dim=-1)


# -- the dictionary --------------------------------------------------------------------------


def test_dictionary_has_unit_rows_and_zero_column_mean_before_final_normalization():
    bb = FakeBackbone()
    d = concept_dictionary(bb, Vocabulary("w", WORDS), cache=False)
    centred, expected = splice_reference(WORDS)
    assert d.shape == (len(WORDS), DIM) and d.dtype == torch.float32
    assert torch.allclose(d.norm(dim=1), torch.ones(len(WORDS)), atol=1e-5)
    assert torch.allclose(centred.mean(dim=0), torch.zeros(DIM), atol=1e-6)
    assert torch.allclose(d, expected, atol=1e-5)
    # the rows are the centred rows rescaled: undoing the scale gives zero column mean again
    scales = (d * centred).sum(dim=1)
    assert torch.allclose((d * scales[:, None]).mean(dim=0), torch.zeros(DIM), atol=1e-5)


def test_texts_are_encoded_in_batches_never_one_by_one():
    bb = FakeBackbone()
    concept_dictionary(bb, Vocabulary("w", WORDS), batch_size=4, cache=False)
    assert [len(c) for c in bb.text_calls] == [4, 4, 2]
    assert sum(bb.text_calls, []) == WORDS


def test_templates_are_filled_and_averaged():
    bb = FakeBackbone()
    templates = ["a photo of {}", "a drawing of {}"]
    d = concept_dictionary(bb, Vocabulary("w", WORDS[:4]), templates=templates, cache=False)
    seen = sum(bb.text_calls, [])
    assert seen == [t.format(w) for t in templates for w in WORDS[:4]]
    per_t = [F.normalize(torch.stack([text_vector(t.format(w)) for w in WORDS[:4]]), dim=-1)
             for t in templates]
    avg = F.normalize((per_t[0] + per_t[1]) / 2, dim=-1)
    expected = F.normalize(avg - avg.mean(0), dim=-1)
    assert torch.allclose(d, expected, atol=1e-5)
    one = concept_dictionary(FakeBackbone(), Vocabulary("w", WORDS[:4]), templates="a {}",
                             cache=False)
    assert torch.allclose(one, splice_reference([f"a {w}" for w in WORDS[:4]])[1], atol=1e-5)


@pytest.mark.parametrize("bad", ["a photo", "{} and {}", 3])
def test_bad_templates_are_rejected(bad):
    with pytest.raises(InterpError, match="template"):
        concept_dictionary(FakeBackbone(), Vocabulary("w", WORDS), templates=[bad], cache=False)


def test_text_embeddings_without_centring_are_just_normalized():
    z = text_embeddings(FakeBackbone(), Vocabulary("w", WORDS), cache=False)
    assert torch.allclose(z, F.normalize(torch.stack([text_vector(w) for w in WORDS]), dim=-1))


def test_vocabulary_by_name_list_or_path(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("\n".join(WORDS[:5]) + "\n")
    from_path = concept_dictionary(FakeBackbone(), str(p), cache=False)
    from_list = concept_dictionary(FakeBackbone(), WORDS[:5], cache=False)
    assert torch.equal(from_path, from_list)
    assert torch.allclose(from_list, splice_reference(WORDS[:5])[1], atol=1e-5)


def test_empty_single_and_capability_errors():
    with pytest.raises(InterpError, match="two or more"):
        concept_dictionary(FakeBackbone(), Vocabulary("one", ["cat"]), cache=False)
    with pytest.raises(InterpError, match="empty"):
        concept_dictionary(FakeBackbone(), Vocabulary("none", []), cache=False)
    vision_only = FakeBackbone(capabilities=(Capability.IMAGE_ENCODER,))
    with pytest.raises(CapabilityError, match="text_encoder"):
        concept_dictionary(vision_only, Vocabulary("w", WORDS), cache=False)


# -- the cache -------------------------------------------------------------------------------


def test_second_call_reads_the_cache_without_encoding(cache):
    vocab = Vocabulary("w", WORDS)
    first = concept_dictionary(FakeBackbone(), vocab)
    bb = FakeBackbone()
    second = concept_dictionary(bb, vocab)
    assert bb.text_calls == []
    assert torch.equal(first, second)
    files = list((cache / "concepts").glob("*.safetensors"))
    assert len(files) == 1


@pytest.mark.parametrize("change", ["pretrained", "content", "size", "templates", "center"])
def test_everything_that_changes_the_result_changes_the_key(change):
    vocab = Vocabulary("w", WORDS)
    concept_dictionary(FakeBackbone(), vocab)
    bb = FakeBackbone(pretrained="v2" if change == "pretrained" else "v1")
    if change == "content":
        vocab = Vocabulary("w", WORDS[:-1] + ["zebra"])
    elif change == "size":
        vocab = Vocabulary("w", WORDS[:-1])
    kwargs = {"templates": "a {}"} if change == "templates" else {}
    if change == "center":
        text_embeddings(bb, vocab, **kwargs)
    else:
        concept_dictionary(bb, vocab, **kwargs)
    assert bb.text_calls, f"changing {change} reused a cache entry made for something else"


def test_cache_false_writes_nothing(cache):
    concept_dictionary(FakeBackbone(), Vocabulary("w", WORDS), cache=False)
    assert list_entries() == []


def test_truncated_entry_at_the_final_name_is_rejected_and_rebuilt(cache):
    vocab = Vocabulary("w", WORDS)
    good = concept_dictionary(FakeBackbone(), vocab)
    (entry,) = (cache / "concepts").glob("*.safetensors")
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])
    bb = FakeBackbone()
    again = concept_dictionary(bb, vocab)
    assert bb.text_calls, "a truncated entry was loaded as valid"
    assert torch.equal(again, good)


def test_entry_for_other_texts_under_the_same_name_is_rejected(cache):
    vocab = Vocabulary("w", WORDS)
    concept_dictionary(FakeBackbone(), vocab)
    (entry,) = (cache / "concepts").glob("*.safetensors")
    save_tensors(entry, {"embeddings": torch.zeros(len(WORDS), DIM)}, {"key": "other"})
    bb = FakeBackbone()
    d = concept_dictionary(bb, vocab)
    assert bb.text_calls and torch.allclose(d.norm(dim=1), torch.ones(len(WORDS)), atol=1e-5)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import safetensors.torch as st
    from test_concepts import FakeBackbone, WORDS
    from interpcore import Vocabulary
    from interpcore.concepts import concept_dictionary

    real = st.save_file

    def dying_writer(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        data = open(filename, "rb").read()
        with open(filename, "wb") as f:   # half of the entry is on disk ...
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)   # ... when the process is killed

    st.save_file = dying_writer
    concept_dictionary(FakeBackbone(), Vocabulary("w", WORDS))
    print("not killed")
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_process_killed_while_writing_leaves_no_valid_entry(cache):
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent))
    env = dict(os.environ, INTERP_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == -9, (res.returncode, res.stdout, res.stderr[-2000:])
    assert list((cache / "concepts").glob("*.safetensors")) == []
    assert list_entries() == []  # only a *.part temporary may remain, and it never counts
    bb = FakeBackbone()
    d = concept_dictionary(bb, Vocabulary("w", WORDS))
    assert bb.text_calls, "the killed write left an entry that loaded as valid"
    assert torch.allclose(d, splice_reference(WORDS)[1], atol=1e-5)


def test_writer_failing_midway_leaves_nothing_and_keeps_the_result(cache, monkeypatch, capsys):
    import safetensors.torch as st

    real = st.save_file

    def failing(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save_file", failing)
    d = concept_dictionary(FakeBackbone(), Vocabulary("w", WORDS))
    assert torch.allclose(d, splice_reference(WORDS)[1], atol=1e-5)
    assert "could not write cache entry" in capsys.readouterr().err
    assert [p for p in cache.rglob("*") if p.is_file()] == []


# -- image means -----------------------------------------------------------------------------


def reference_mean(ds, bb, n=None):
    n = len(ds) if n is None else n
    z = torch.stack([image_vector(ds[i]["image"], bb.image_proj) for i in range(n)])
    return F.normalize(z, dim=-1).mean(0)


def test_image_mean_streams_the_dataset_in_batches():
    bb, ds = FakeBackbone(), ColourDataset(10)
    m = image_mean(bb, ds, batch_size=4, cache=False)
    assert bb.image_calls == [4, 4, 2]
    assert m.shape == (DIM,)
    assert torch.allclose(m, reference_mean(ds, bb), atol=1e-5)
    lim = image_mean(FakeBackbone(), ds, limit=3, cache=False)
    assert torch.allclose(lim, reference_mean(ds, bb, 3), atol=1e-5)


def test_image_mean_is_cached_by_dataset_and_limit(cache):
    ds = ColourDataset(6)
    first = image_mean(FakeBackbone(), ds)
    bb = FakeBackbone()
    assert torch.equal(image_mean(bb, ds), first) and bb.image_calls == []
    image_mean(bb, ds, limit=2)
    assert bb.image_calls == [2]
    unnamed = ColourDataset(6, name="?")
    bb2 = FakeBackbone()
    image_mean(bb2, unnamed)
    image_mean(bb2, unnamed)
    assert bb2.image_calls == [6, 6]  # nothing identifies it, so it is never cached


def test_image_mean_from_a_registered_dataset_name(monkeypatch):
    from interpcore.plugins import PluginManager
    from interpcore.registry import Registry

    plugin = types.ModuleType("colour_plugin")

    @interpcore.hookimpl
    def register_datasets(register):
        register("colours", lambda split="test", **o: ColourDataset(5 if split == "train" else 4))

    plugin.register_datasets = register_datasets
    reg = Registry(PluginManager(), load_entry_points=False).ensure_loaded()
    reg.register_plugin(plugin)
    monkeypatch.setattr("interpcore.registry.get_registry", lambda: reg)
    bb = FakeBackbone()
    m = image_mean(bb, "colours", split="train", cache=False)
    assert bb.image_calls == [5]
    assert torch.allclose(m, reference_mean(ColourDataset(5), bb), atol=1e-5)


@pytest.mark.parametrize("kind", ["pt", "pt-dict", "pt-2d", "safetensors", "npy"])
def test_image_mean_from_tensor_files(tmp_path, kind):
    mean = torch.randn(DIM)
    path = tmp_path / f"mean.{kind.split('-')[0]}"
    if kind == "pt":
        torch.save(mean, path)
    elif kind == "pt-dict":
        torch.save({"image_mean": mean, "count": torch.tensor(3)}, path)
    elif kind == "pt-2d":
        torch.save(mean[None], path)
    elif kind == "safetensors":
        save_tensors(path, {"mean": mean})
    else:
        np.save(path, mean.numpy())
    got = image_mean(FakeBackbone(), path=path)
    assert torch.allclose(got, mean)


def test_tensor_file_errors(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.randn(DIM + 1), wrong)
    with pytest.raises(InterpError, match="13 dimensions.*12"):
        image_mean(FakeBackbone(), path=wrong)
    pickled = tmp_path / "evil.pt"
    torch.save({"obj": types.SimpleNamespace(a=1)}, pickled)
    with pytest.raises(InterpError, match="could not read"):
        load_tensor_file(pickled)
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(InterpError, match="could not read"):
        load_tensor_file(corrupt)
    text = tmp_path / "mean.txt"
    text.write_text("1")
    with pytest.raises(InterpError, match="use a .pt"):
        load_tensor_file(text)
    with pytest.raises(InterpError, match="not found"):
        load_tensor_file(tmp_path / "absent.pt")
    with pytest.raises(InterpError, match="needs a dataset.*or path="):
        image_mean(FakeBackbone())


# -- a real (tiny) open_clip model -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip():
    open_clip = pytest.importorskip("open_clip")
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from interpcore.torch_backbone import TorchBackbone

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
    )
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)

    class TinyClip(TorchBackbone):
        def _encode_text(self, tokens):
            return self.model.encode_text(tokens)

        def _encode_image(self, pixels):
            return self.model.encode_image(pixels)

    return TinyClip("test:tiny-clip", model, pretrained="random-seed-0", device="cpu",
                    tokenizer=tokenizer, embed_dim=16,
                    capabilities=(Capability.TEXT_ENCODER, Capability.IMAGE_ENCODER))


def test_tiny_open_clip_dictionary_matches_splice_recipe(tiny_clip):
    words = WORDS * 3 + ["a", "b"]
    words = list(dict.fromkeys(words))
    d = concept_dictionary(tiny_clip, words, batch_size=3)
    with torch.no_grad():
        raw = tiny_clip.model.encode_text(tiny_clip.tokenizer(words)).float()
    z = F.normalize(raw, dim=-1)
    centred = z - z.mean(0)
    assert torch.allclose(centred.mean(0), torch.zeros(16), atol=1e-6)
    assert torch.allclose(d, F.normalize(centred, dim=-1), atol=1e-4)
    assert torch.allclose(d.norm(dim=1), torch.ones(len(words)), atol=1e-5)
    assert torch.equal(concept_dictionary(tiny_clip, words), d)  # from the cache


def test_progress_bars_cover_every_text_and_image(monkeypatch):
    import interpcore.data
    import interpcore.progress

    bars = []

    class Bar:
        def __init__(self, total, desc):
            self.total, self.desc, self.done = total, desc, 0
            bars.append(self)

        def update(self, n):
            self.done += n

        def close(self):
            pass

    fake = lambda iterable=None, *, desc="", total=None, unit="it": Bar(total, desc)  # noqa: E731
    monkeypatch.setattr(interpcore.progress, "progress", fake)
    monkeypatch.setattr(interpcore.data, "progress", fake)
    concept_dictionary(FakeBackbone(), Vocabulary("w", WORDS), batch_size=3, cache=False)
    image_mean(FakeBackbone(), ColourDataset(5), batch_size=2, cache=False)
    assert [(b.total, b.done) for b in bars] == [(len(WORDS), len(WORDS)), (5, 5)]
    assert "w" in bars[0].desc


def test_backbone_by_registry_name(monkeypatch):
    from interpcore.registry import Registry

    bb = FakeBackbone()

    class Reg(Registry):
        def get_backbone(self, name, **kw):
            assert name == "fake:tiny"
            return bb

    monkeypatch.setattr("interpcore.registry.get_registry", lambda: Reg())
    d = concept_dictionary("fake:tiny", Vocabulary("w", WORDS), cache=False)
    assert bb.text_calls and d.shape == (len(WORDS), DIM)
