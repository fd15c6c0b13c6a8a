"""The ImageNet-segmentation benchmark of the PRS paper (Gandelsman et al.): ``gtsegs_ijcv.mat``.

The file is a MATLAB v7.3 (HDF5) file: ``/value/img`` is an (N, 1) array of object
references, each to an image stored as (3, W, H) uint8; ``/value/gt`` is an (N, 1) array of
references to 1 x 1 cells whose single reference points to the (W, H) uint8 object mask.
Both are transposed to the usual (H, W[, 3]) on reading. Read with h5py, lazily: the file is
opened on first access in each process (so the dataset can be used by DataLoader workers).
"""

from __future__ import annotations

from pathlib import Path

from interpcore import Dataset, InterpError

FILE_NAME = "gtsegs_ijcv.mat"
HINT = (
    "download gtsegs_ijcv.mat (http://calvin-vision.net/bigstuff/proj-imagenet/"
    "data/gtsegs_ijcv.mat, the file used by the PRS / TextSpan and transformer-explainability "
    "code) and give root= that file or the folder that holds it"
)


def _resolve(root) -> Path:
    if root is None or str(root) == "":
        raise InterpError(f"the imagenet-seg dataset needs root=PATH; {HINT}")
    path = Path(root).expanduser()
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise InterpError(f"ImageNet-segmentation file not found: {path}; {HINT}")
    return path


class ImageNetSegDataset(Dataset):
    """Images with binary object masks (``mask``: 1 = object, 0 = background)."""

    name = "imagenet-seg"
    classes = None
    mask_classes = ["background", "object"]

    def __init__(self, split: str = "test", root=None, *, limit: int | None = None):
        import h5py

        if split not in ("test", "val"):
            raise InterpError(f"imagenet-seg has only a test split, not '{split}'")
        self.path = _resolve(root)
        self.split = split
        try:
            with h5py.File(self.path, "r") as f:
                if "value" not in f or "img" not in f["value"] or "gt" not in f["value"]:
                    raise InterpError(
                        f"{self.path} is not the ImageNet-segmentation file: it lacks /value/img "
                        "and /value/gt"
                    )
                n_img, n_gt = len(f["value/img"]), len(f["value/gt"])
        except OSError as exc:
            raise InterpError(f"{self.path} is not a readable HDF5 / MATLAB v7.3 file ({exc})") from None
        if n_img != n_gt:
            raise InterpError(f"{self.path} has {n_img} images but {n_gt} masks")
        self.n = n_img if limit is None else min(int(limit), n_img)
        self._file = None

    def __getstate__(self):  # an open h5py file cannot be pickled into a worker
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def _h5(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    def __len__(self) -> int:
        return self.n

    def _deref(self, f, ref):
        import h5py

        obj = f[ref]
        # Follow cells (datasets of references) down to the numeric array.
        while obj.dtype == h5py.ref_dtype or obj.dtype.kind == "O":
            obj = f[obj[(0,) * obj.ndim]]
        return obj[()]

    def __getitem__(self, index: int) -> dict:
        import numpy as np
        from PIL import Image

        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        f = self._h5()
        img = np.asarray(self._deref(f, f["value/img"][index, 0]))
        gt = np.asarray(self._deref(f, f["value/gt"][index, 0]))
        if img.ndim != 3 or img.shape[0] not in (1, 3):
            raise InterpError(f"{self.path}: image {index} has shape {img.shape}, expected (3, W, H)")
        img = img.transpose(2, 1, 0)
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        mask = gt.T.astype(np.int64)
        if mask.shape != img.shape[:2]:
            raise InterpError(
                f"{self.path}: mask {index} has shape {mask.shape} but its image is {img.shape[:2]}"
            )
        mask = (mask > 0).astype(np.int64)
        return {"image": Image.fromarray(np.ascontiguousarray(img)).convert("RGB"), "mask": mask,
                "index": index, "path": f"{self.path}#{index}"}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<ImageNetSegDataset {self.path} n={self.n}>"


def write_imagenet_seg(path, images, masks) -> Path:
    """Write images ((H, W, 3) uint8) and masks ((H, W)) in the layout of gtsegs_ijcv.mat.

    For tests and for packaging one's own segmentation data in the same format.
    """
    import h5py
    import numpy as np

    path = Path(path)
    if len(images) != len(masks):
        raise InterpError(f"got {len(images)} images but {len(masks)} masks")
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        value = f.create_group("value")
        img_refs = value.create_dataset("img", (len(images), 1), dtype=h5py.ref_dtype)
        gt_refs = value.create_dataset("gt", (len(images), 1), dtype=h5py.ref_dtype)
        for i, (im, m) in enumerate(zip(images, masks)):
            im = np.asarray(im, dtype=np.uint8)
            m = np.asarray(m, dtype=np.uint8)
            d_img = refs.create_dataset(f"img{i}", data=im.transpose(2, 1, 0))
            d_mask = refs.create_dataset(f"mask{i}", data=m.T)
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = d_mask.ref
            img_refs[i, 0] = d_img.ref
            gt_refs[i, 0] = cell.ref
    return path
