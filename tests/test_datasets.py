"""The on-disk dataset plugin (interp_datasets): tiny folders and files built in tmp_path."""

from __future__ import annotations

import csv
import pickle

import numpy as np
import pytest
from PIL import Image

import interpcore
from interpcore import InterpError


def _img(path, color, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _mask(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


# -- registration ---------------------------------------------------------------------


def test_all_names_registered():
    names = set(interpcore.list_datasets())
    expected = {"imagefolder", "imagefolder-masks", "imagenet", "imagenet-val", "waterbirds",
                "imagenet-seg", "cifar10", "cifar100"}
    assert expected <= names, f"missing: {expected - names}"


def test_listing_datasets_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, interpcore; interpcore.list_datasets(); "
            "import interp_datasets; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- imagefolder ----------------------------------------------------------------------


def test_imagefolder_classes_labels_and_pil_samples(tmp_path):
    _img(tmp_path / "dog" / "b.png", "red")
    _img(tmp_path / "dog" / "a.jpg", "red")
    _img(tmp_path / "cat" / "x.png", "blue")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = interpcore.get_dataset("imagefolder", root=tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert len(ds) == 3
    s = ds[0]
    assert s["label"] == 0 and s["path"].endswith("x.png")
    assert s["image"].mode == "RGB" and s["image"].size == (12, 10)
    assert [ds[i]["label"] for i in range(3)] == [0, 1, 1]
    assert ds[-1]["path"].endswith("b.png")
    with pytest.raises(IndexError):
        ds[3]


def test_imagefolder_enters_split_folder(tmp_path):
    _img(tmp_path / "train" / "a" / "1.png", "red")
    _img(tmp_path / "test" / "a" / "1.png", "red")
    _img(tmp_path / "test" / "b" / "1.png", "red")
    assert len(interpcore.get_dataset("imagefolder", split="test", root=tmp_path)) == 2
    assert len(interpcore.get_dataset("imagefolder", split="train", root=tmp_path)) == 1
    with pytest.raises(InterpError, match="no 'val' folder"):
        interpcore.get_dataset("imagefolder", split="val", root=tmp_path)


def test_imagefolder_flat_folder_is_unlabelled(tmp_path):
    _img(tmp_path / "1.png", "red")
    _img(tmp_path / "2.png", "red")
    ds = interpcore.get_dataset("imagefolder", root=tmp_path)
    assert ds.classes is None and len(ds) == 2 and "label" not in ds[0]


def test_imagefolder_missing_root_says_what_to_do(tmp_path):
    with pytest.raises(InterpError, match="not found.*root="):
        interpcore.get_dataset("imagefolder", root=tmp_path / "nope")
    with pytest.raises(InterpError, match="needs root="):
        interpcore.get_dataset("imagefolder")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(InterpError, match="no images"):
        interpcore.get_dataset("imagefolder", root=tmp_path / "empty")


def test_corrupt_image_is_a_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.png").write_bytes(b"not a png")
    ds = interpcore.get_dataset("imagefolder", root=tmp_path)
    with pytest.raises(InterpError, match="bad.png is not an image"):
        ds[0]


def test_imagefolder_masks_pairs_and_binarizes(tmp_path):
    m = np.zeros((10, 12), dtype=np.uint8)
    m[2:5, 3:9] = 255
    _img(tmp_path / "img" / "c" / "one.jpg", "green")
    _mask(tmp_path / "masks" / "c" / "one.png", m)
    multi = np.zeros((10, 12), dtype=np.uint8)
    multi[0, 0], multi[9, 11] = 1, 2
    _img(tmp_path / "img" / "c" / "two.png", "green")
    _mask(tmp_path / "masks" / "c" / "two.png", multi)
    ds = interpcore.get_dataset("imagefolder-masks", root=tmp_path / "img", mask_root=tmp_path / "masks")
    s = ds[0]
    assert s["mask"].shape == (10, 12) and s["mask"].dtype == np.int64
    assert set(np.unique(s["mask"]).tolist()) == {0, 1}
    assert s["mask"].sum() == 3 * 6
    assert set(np.unique(ds[1]["mask"]).tolist()) == {0, 1, 2}  # object ids are kept


def test_masks_missing_is_error_or_skipped(tmp_path):
    _img(tmp_path / "img" / "a.png", "red")
    _img(tmp_path / "img" / "b.png", "red")
    _mask(tmp_path / "m" / "a_mask.png", np.ones((10, 12)))
    with pytest.raises(InterpError, match="1 image.*no mask.*b_mask.png"):
        interpcore.get_dataset("imagefolder-masks", root=tmp_path / "img", mask_root=tmp_path / "m",
                               mask_suffix="_mask")
    ds = interpcore.get_dataset("imagefolder-masks", root=tmp_path / "img", mask_root=tmp_path / "m",
                                mask_suffix="_mask", missing_masks="skip")
    assert len(ds) == 1 and ds[0]["mask"].shape == (10, 12)
    with pytest.raises(InterpError, match="needs mask_root"):
        interpcore.get_dataset("imagefolder-masks", root=tmp_path / "img")


def test_mask_of_other_size_is_resized_to_the_image(tmp_path):
    _img(tmp_path / "img" / "a.png", "red", size=(20, 16))
    _mask(tmp_path / "m" / "a.png", np.full((8, 10), 255))
    ds = interpcore.get_dataset("imagefolder", root=tmp_path / "img", mask_root=tmp_path / "m")
    assert ds[0]["mask"].shape == (16, 20) and ds[0]["mask"].min() == 1


# -- ImageNet -------------------------------------------------------------------------


def test_imagenet_val_folder_layout_uses_standard_labels(tmp_path):
    from interp_datasets.folders import imagenet_wnids

    wnids = imagenet_wnids()
    _img(tmp_path / "val" / wnids[0] / "ILSVRC2012_val_00000001.JPEG", "red")
    _img(tmp_path / "val" / wnids[207] / "ILSVRC2012_val_00000002.JPEG", "red")
    (tmp_path / "val" / "not_a_wnid").mkdir()
    ds = interpcore.get_dataset("imagenet-val", root=tmp_path)
    assert len(ds.classes) == 1000 and ds.classes[0] == "tench"
    assert [ds[i]["label"] for i in range(len(ds))] == [0, 207]
    assert ds.classes[207] == "Golden Retriever"
    assert ds[1]["wnid"] == wnids[207]


def test_imagenet_kaggle_flat_layout(tmp_path):
    from interp_datasets.folders import imagenet_wnids

    wnids = imagenet_wnids()
    _img(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", "red")
    _img(tmp_path / "val" / "ILSVRC2012_val_00000002.JPEG", "red")
    with open(tmp_path / "LOC_val_solution.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        w.writerow(["ILSVRC2012_val_00000001", f"{wnids[5]} 1 2 3 4"])
        w.writerow(["ILSVRC2012_val_00000002", f"{wnids[999]} 1 2 3 4 {wnids[999]} 5 6 7 8"])
    ds = interpcore.get_dataset("imagenet", split="val", root=tmp_path)
    assert [s["label"] for s in ds] == [5, 999]


def test_imagenet_missing_root_explains_download(tmp_path):
    with pytest.raises(InterpError, match="image-net.org"):
        interpcore.get_dataset("imagenet-val", root=tmp_path / "missing")
    (tmp_path / "val").mkdir()
    with pytest.raises(InterpError, match="no ImageNet images"):
        interpcore.get_dataset("imagenet-val", root=tmp_path)


# -- Waterbirds -----------------------------------------------------------------------


def _waterbirds(root):
    rows = [  # img_id, img_filename, y, split, place
        (1, "001.Black_footed_Albatross/a.jpg", 1, 2, 0),
        (2, "001.Black_footed_Albatross/b.jpg", 1, 2, 1),
        (3, "002.Laysan/c.jpg", 0, 2, 1),
        (4, "002.Laysan/d.jpg", 0, 0, 0),
    ]
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        for r in rows:
            w.writerow(list(r) + ["/x/y.jpg"])
            _img(root / r[1], "red")
    return rows


def test_waterbirds_splits_labels_groups(tmp_path):
    _waterbirds(tmp_path)
    test = interpcore.get_dataset("waterbirds", split="test", root=tmp_path)
    assert len(test) == 3
    assert test.classes == ["landbird", "waterbird"]
    assert [(s["label"], s["group"]) for s in test] == [(1, 2), (1, 3), (0, 1)]
    assert test[2]["attributes"] == {"place": "water", "bird": "landbird"}
    assert test.groups() == [2, 3, 1]
    train = interpcore.get_dataset("waterbirds", split="train", root=tmp_path)
    assert len(train) == 1 and train[0]["group"] == 0
    with pytest.raises(InterpError, match="no image in the 'val' split"):
        interpcore.get_dataset("waterbirds", split="val", root=tmp_path)


def test_waterbirds_errors(tmp_path):
    with pytest.raises(InterpError, match="waterbird_complete95_forest2water2"):
        interpcore.get_dataset("waterbirds", root=tmp_path / "none")
    with pytest.raises(InterpError, match="no metadata.csv"):
        interpcore.get_dataset("waterbirds", root=tmp_path)
    (tmp_path / "metadata.csv").write_text("img_filename,y\na.jpg,1\n")
    with pytest.raises(InterpError, match="lacks the column"):
        interpcore.get_dataset("waterbirds", root=tmp_path)


# -- ImageNet-segmentation (.mat / HDF5) ----------------------------------------------


def test_imagenet_seg_reads_mat_layout(tmp_path):
    import h5py

    from interp_datasets.imagenet_seg import write_imagenet_seg

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (6, 9, 3), dtype=np.uint8), rng.integers(0, 255, (5, 4, 3), dtype=np.uint8)]
    masks = [np.zeros((6, 9)), np.ones((5, 4))]
    masks[0][1:3, 2:7] = 1
    path = write_imagenet_seg(tmp_path / "gtsegs_ijcv.mat", images, masks)
    # The layout really is references to (3, W, H) images and to 1x1 cells of references.
    with h5py.File(path) as f:
        assert f["value/img"].shape == (2, 1)
        assert f[f["value/img"][0, 0]].shape == (3, 9, 6)
        assert f[f["value/gt"][0, 0]].shape == (1, 1)
    ds = interpcore.get_dataset("imagenet-seg", root=tmp_path)  # the folder works too
    assert len(ds) == 2
    s = ds[0]
    assert s["image"].size == (9, 6)
    np.testing.assert_array_equal(np.asarray(s["image"]), images[0])
    np.testing.assert_array_equal(s["mask"], masks[0].astype(np.int64))
    assert ds[1]["mask"].shape == (5, 4) and ds[1]["mask"].all()
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers need a picklable dataset
    np.testing.assert_array_equal(clone[1]["mask"], ds[1]["mask"])


def test_imagenet_seg_errors(tmp_path):
    with pytest.raises(InterpError, match="calvin-vision.net"):
        interpcore.get_dataset("imagenet-seg", root=tmp_path)
    (tmp_path / "gtsegs_ijcv.mat").write_bytes(b"garbage")
    with pytest.raises(InterpError, match="not a readable HDF5"):
        interpcore.get_dataset("imagenet-seg", root=tmp_path)
    import h5py

    with h5py.File(tmp_path / "other.mat", "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(InterpError, match="lacks /value/img"):
        interpcore.get_dataset("imagenet-seg", root=tmp_path / "other.mat")


# -- CIFAR ----------------------------------------------------------------------------


def test_cifar10_missing_without_download_explains(tmp_path):
    with pytest.raises(InterpError, match="download=True.*cifar-10-python.tar.gz"):
        interpcore.get_dataset("cifar10", root=tmp_path)


def test_cifar10_reads_the_python_batches(tmp_path, monkeypatch):
    import torchvision

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((3, 3072), dtype=np.uint8)
    data[1, :1024] = 255  # image 1 is red
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": [3, 7, 1]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"]}, f)
    # The real files are checked against published MD5 sums; these tiny ones cannot match.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    ds = interpcore.get_dataset("cifar10", split="test", root=tmp_path)
    assert len(ds) == 3 and ds.classes[3] == "cat"
    s = ds[1]
    assert s["label"] == 7 and s["image"].size == (32, 32)
    assert s["image"].getpixel((0, 0)) == (255, 0, 0)
