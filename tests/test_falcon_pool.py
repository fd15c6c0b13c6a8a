"""Caption pools (LAION-style shards, text pools), one-pass retrieval and concept extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpcore import InterpError
from interp_falcon import concepts, pool as P


def _write_shards(folder, emb, sizes, captions, layout="per-shard-txt", pad=4):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text_emb").mkdir(exist_ok=True)
    (folder / "metadata").mkdir(exist_ok=True)
    start = 0
    for n, size in enumerate(sizes):
        num = str(n).zfill(pad)
        np.save(folder / "text_emb" / f"text_emb_{num}.npy", emb[start : start + size])
        if layout == "per-shard-txt":
            (folder / "metadata" / f"captions_{num}.txt").write_text(
                "\n".join(captions[start : start + size]) + "\n", encoding="utf-8")
        start += size
    if layout == "global":
        (folder / "metadata" / "captions.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1000, 16)).astype(np.float16)
    caps = [f"caption number {i}" for i in range(1000)]
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    return emb, caps, queries


def _brute(queries, emb, k):
    q = torch.nn.functional.normalize(torch.tensor(queries), dim=1)
    e = torch.nn.functional.normalize(torch.tensor(emb.astype(np.float32)), dim=1)
    s = q @ e.T
    v, i = s.topk(k, dim=1)
    return i.numpy(), v.numpy(), torch.logsumexp(s * 100.0, dim=1).numpy()


@pytest.mark.parametrize("layout", ["per-shard-txt", "global"])
@pytest.mark.parametrize("chunk", [64, 1000])
def test_shard_retrieval_equals_brute_force(tmp_path, data, layout, chunk):
    emb, caps, queries = data
    pool = P.ShardPool(_write_shards(tmp_path / "pool", emb, [300, 450, 250], caps, layout))
    assert len(pool) == 1000 and pool.dim == 16
    ret = P.retrieve(queries, pool, k=5, chunk_size=chunk)
    bi, bv, blse = _brute(queries, emb, 5)
    np.testing.assert_array_equal(ret.indices, bi)
    np.testing.assert_allclose(ret.sims, bv, atol=1e-5)
    np.testing.assert_allclose(ret.logsumexp, blse, rtol=1e-5)
    assert pool.captions([999, 0, 301]) == ["caption number 999", "caption number 0",
                                            "caption number 301"]


def test_retrieval_reads_the_pool_once_for_all_queries(data):
    emb, caps, queries = data

    class Counting(P.TensorPool):
        passes = 0

        def chunks(self, chunk_size):
            Counting.passes += 1
            yield from super().chunks(chunk_size)

    pool = Counting(caps, emb)
    ret = P.retrieve(np.concatenate([queries] * 20), pool, k=5, chunk_size=100)
    assert Counting.passes == 1
    assert ret.passes == 1.0  # measured from the rows read, not a constant

    class Twice(P.TensorPool):  # a pool that (wrongly) yields every row twice is seen
        def chunks(self, chunk_size):
            yield from super().chunks(chunk_size)
            yield from super().chunks(chunk_size)

    assert P.retrieve(queries, Twice(caps, emb), k=5, chunk_size=100).passes == 2.0


def test_unpadded_laion_400m_numbering_is_read_in_numeric_order(tmp_path, data):
    emb, caps, _ = data
    sizes = [100] * 10 + [0]  # shards 0..10; "10" must come after "9", not after "1"
    folder = _write_shards(tmp_path / "p", emb[:1000], sizes[:10], caps, pad=0)
    pool = P.ShardPool(folder)
    assert [s.number for s in pool.shards] == list(range(10))
    first_chunk_of_last = list(pool.chunks(100))[9]
    assert first_chunk_of_last[0] == 900
    np.testing.assert_array_equal(np.asarray(first_chunk_of_last[1]), emb[900:1000])


def test_missing_captions_and_bad_shards_fail_clearly(tmp_path, data):
    emb, caps, _ = data
    folder = tmp_path / "p"
    (folder / "text_emb").mkdir(parents=True)
    np.save(folder / "text_emb" / "text_emb_0.npy", emb[:10])
    with pytest.raises(InterpError, match="no captions for embedding shard text_emb_0.npy"):
        P.ShardPool(folder)
    with pytest.raises(InterpError, match="no text_emb_<n>.npy"):
        P.ShardPool(tmp_path)
    np.save(folder / "text_emb" / "text_emb_1.npy", np.zeros((3, 4, 2), np.float16))
    (folder / "captions.txt").write_text("x\n" * 13)
    with pytest.raises(InterpError, match="2-D float array"):
        P.ShardPool(folder)
    (folder / "text_emb" / "text_emb_1.npy").write_bytes(b"not numpy")
    with pytest.raises(InterpError, match="not a readable .npy"):
        P.ShardPool(folder)


def test_short_caption_file_is_reported(tmp_path, data):
    emb, caps, queries = data
    folder = _write_shards(tmp_path / "p", emb[:100], [100], caps[:50])
    pool = P.ShardPool(folder)
    with pytest.raises(InterpError, match="no caption for row 80"):
        pool.captions([80])


def test_dimension_mismatch_is_reported(data):
    emb, caps, _ = data
    with pytest.raises(InterpError, match="16-d embeddings but the captioner gives 8-d"):
        P.retrieve(np.zeros((2, 8), np.float32), P.TensorPool(caps, emb), k=5)


def test_exact_deduplication_and_weights():
    texts = ["a red square", "a red square", "red", "a blue circle", "red"]
    assert P.dedup_texts(texts + ["  ", "a red square "]) == ["a red square", "red", "a blue circle"]
    # pool with duplicate rows (identical text -> identical embedding)
    emb = np.array([[1, 0], [1, 0], [0.9, 0.1], [0, 1], [0.9, 0.1]], np.float32)
    pool = P.TensorPool(texts, emb)
    ret = P.retrieve(np.array([[1.0, 0.0]]), pool, k=5)
    caps = P.top_captions(ret, pool, k=3, weights="cosine")[0]
    assert [c for c, _ in caps] == ["a red square", "red", "a blue circle"]
    topk = P.top_captions(ret, pool, k=3, weights="topk")[0]
    assert sum(w for _, w in topk) == pytest.approx(1.0)
    full = P.top_captions(ret, pool, k=3, weights="pool")[0]
    # softmax over all 5 rows: the duplicate rows share the mass
    logits = 100 * (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ np.array([1.0, 0.0])
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert full[0][1] == pytest.approx(p[0], rel=1e-5)
    with pytest.raises(InterpError, match="unknown caption weighting"):
        P.top_captions(ret, pool, weights="bogus")


def test_text_pool_is_embedded_and_cached(tmp_path, monkeypatch):
    import falcon_toy as toy

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    cap = toy.toy_captioner()
    f = tmp_path / "caps.txt"
    f.write_text("a red square\na red square\na blue square\n", encoding="utf-8")
    pool = P.load_pool(str(f), cap)
    assert pool.texts == ["a red square", "a blue square"]
    assert list((tmp_path / "cache" / "falcon" / "pools").glob("*.safetensors"))
    calls = []
    monkeypatch.setattr(cap, "encode_text", lambda *a, **k: calls.append(1))
    pool2 = P.load_pool(str(f), cap)  # from the cache: no embedding call
    assert not calls and np.allclose(pool2.emb, pool.emb)
    with pytest.raises(InterpError, match="no captions"):
        (tmp_path / "empty.txt").write_text("\n")
        P.load_pool(str(tmp_path / "empty.txt"), cap)


# -- concepts ------------------------------------------------------------------------------------


def test_caption_terms_remove_stop_words_and_boilerplate():
    words, phrases = concepts.caption_terms("Stock Photo: a red circle on a blue square, 4K HD!")
    assert words == {"red", "circle", "blue", "square"}
    assert phrases == {"red circle", "blue square"}  # never across "on a"
    words, phrases = concepts.caption_terms("two big red circles")
    assert "circle" in words and "big red circle" in phrases and "two" not in words


def test_singular():
    assert [concepts.singular(w) for w in ["circles", "boxes", "berries", "glass", "bus", "red"]] == \
        ["circle", "box", "berry", "glass", "bus", "red"]


def test_term_scores_max_per_image_then_mean():
    high = [[("a red circle", 0.6), ("red thing", 0.3)], [("a blue circle", 0.5)]]
    w, _ = concepts.term_scores(high)
    assert w["red"] == pytest.approx(0.3)  # (0.6 + 0) / 2
    assert w["circle"] == pytest.approx(0.55)


def test_contrastive_drops_words_of_the_low_images():
    high = [[("a red circle", 0.6)], [("a red circle", 0.5)]]
    low = [[("a red square", 0.5)]]
    words, phrases = concepts.contrastive_concepts(high, low, low_threshold=0.1)
    assert [w for w, _ in words] == ["circle"]
    assert [p for p, _ in phrases] == ["red circle"]
    words, _ = concepts.contrastive_concepts(high, [], low_threshold=0.1)
    assert [w for w, _ in words] == ["circle", "red"]
    many = [[(f"word{chr(97 + i)}xx thing{chr(97 + i)}yy", 1.0 - i / 100) for i in range(12)]]
    w, p = concepts.contrastive_concepts(many, [], top=8)
    assert len(w) == 8 and len(p) == 8 and w[0][1] >= w[-1][1]


def test_laion_parquet_metadata_needs_pyarrow(tmp_path, data):
    emb, caps, _ = data
    folder = tmp_path / "p"
    (folder / "text_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    np.save(folder / "text_emb" / "text_emb_0000.npy", emb[:10])
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (folder / "metadata" / "metadata_0000.parquet").write_bytes(b"PAR1")
        pool = P.ShardPool(folder)
        with pytest.raises(InterpError, match="needs pyarrow.*captions_0000.txt"):
            pool.captions([3])
        return
    pq.write_table(pa.table({"caption": caps[:10], "url": ["u"] * 10}),
                   folder / "metadata" / "metadata_0000.parquet")
    assert P.ShardPool(folder).captions([3, 9]) == ["caption number 3", "caption number 9"]


def test_contrast_rule_keeps_a_word_the_high_images_show_more():
    # the low images are chosen to resemble the group, so they share some of its colour
    high = [[("a red circle", 0.6)], [("a red circle", 0.5)]]
    low = [[("a red square", 0.3)], [("a blue square", 0.3)]]  # red: 0.15 over low, 0.55 over high
    ref, _ = concepts.contrastive_concepts(high, low, low_threshold=0.1, low_rule="reference")
    assert [w for w, _ in ref] == ["circle"]
    con, _ = concepts.contrastive_concepts(high, low, low_threshold=0.1, low_rule="contrast")
    assert [w for w, _ in con] == ["circle", "red"]
    # a word the low images show (nearly) as much as the high ones still goes
    low_all = [[("a red square", 0.5)], [("a red square", 0.5)]]  # red: 0.5 vs 0.55
    con, _ = concepts.contrastive_concepts(high, low_all, low_rule="contrast")
    assert [w for w, _ in con] == ["circle"]
    with pytest.raises(InterpError, match="unknown low-word rule 'nope'"):
        concepts.contrastive_concepts(high, low, low_rule="nope")
