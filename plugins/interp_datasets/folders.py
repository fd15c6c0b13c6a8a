"""Datasets read from folders of image files: image folders (with optional masks), ImageNet
and Waterbirds. PIL and numpy only; no torch."""

from __future__ import annotations

import csv
from pathlib import Path

from interpcore import Dataset, InterpError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
_SPLIT_DIRS = {a for names in SPLIT_ALIASES.values() for a in names}


def _require_root(root, what: str, hint: str) -> Path:
    if root is None or str(root) == "":
        raise InterpError(f"the {what} dataset needs root=PATH (the folder that holds it); {hint}")
    path = Path(root).expanduser()
    if not path.exists():
        raise InterpError(f"{what} folder not found: {path}; {hint}")
    return path


def _is_image(path: Path, extensions) -> bool:
    return path.is_file() and path.suffix.lower() in extensions and not path.name.startswith(".")


def _open_rgb(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InterpError(f"{path} is not an image that can be read ({exc})") from None


def load_mask(path: Path, size: tuple[int, int] | None = None, binarize: str | bool = "auto"):
    """A mask file as an (H, W) int64 array: 0 = background, k = object k.

    Colour masks count any non-black pixel as object 1. With ``binarize="auto"`` a mask whose
    values are only 0 and 255 (a saved black/white PNG) becomes 0/1; ``True`` maps every
    nonzero value to 1. ``size=(width, height)`` resizes (nearest neighbour) to the image.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if size is not None and im.size != tuple(size):
                im = im.resize(tuple(size), Image.NEAREST)
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise InterpError(f"mask {path} is not an image that can be read ({exc})") from None
    if arr.ndim == 3:
        arr = arr[..., :3]
        if (arr == arr[..., :1]).all():
            arr = arr[..., 0]
        else:
            arr = (arr.max(axis=-1) > 0).astype(np.uint8)
    arr = arr.astype(np.int64)
    if binarize is True:
        arr = (arr > 0).astype(np.int64)
    elif binarize == "auto":
        values = np.unique(arr)
        if len(values) <= 2 and set(values.tolist()) <= {0, 255}:
            arr = (arr > 0).astype(np.int64)
    return arr


def _split_root(root: Path, split: str | None) -> Path:
    """``root/<split>`` when root is split into train/val/test folders, else root itself."""
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not subdirs or not all(p.name.lower() in _SPLIT_DIRS for p in subdirs):
        return root
    if split is None:
        raise InterpError(f"{root} is divided into {', '.join(sorted(p.name for p in subdirs))}; pass split=")
    for alias in SPLIT_ALIASES.get(split, (split,)):
        for p in subdirs:
            if p.name.lower() == alias:
                return p
    raise InterpError(
        f"{root} has no '{split}' folder; it has {', '.join(sorted(p.name for p in subdirs))}"
    )


class ImageFolderDataset(Dataset):
    """Images in class subfolders (``root/<class>/<image>``), like torchvision's ImageFolder.

    Classes are the subfolder names in sorted order (or ``classes=[...]`` to fix the order
    and use only those). A root with no subfolders is an unlabelled folder of images. A root
    split into ``train``/``val``/``test`` folders is entered at ``split``.

    ``mask_root`` names a parallel folder of masks: the mask of ``root/a/b.jpg`` is
    ``mask_root/a/b<mask_suffix>.<ext>`` (any image extension, PNG preferred); samples then
    carry ``mask`` (see :func:`load_mask`). ``missing_masks="error"`` (default) or ``"skip"``.
    """

    name = "imagefolder"

    def __init__(self, split: str | None = "test", root=None, *, classes=None, mask_root=None,
                 mask_suffix: str = "", binarize_masks="auto", missing_masks: str = "error",
                 extensions=IMAGE_EXTENSIONS, limit: int | None = None):
        hint = "point root= at a folder of class subfolders with images"
        root = _require_root(root, self.name, hint)
        if not root.is_dir():
            raise InterpError(f"{self.name} root must be a folder, got a file: {root}")
        self.root = _split_root(root, split)
        self.split = split
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        self.samples = self._scan(classes)
        if not self.samples:
            raise InterpError(
                f"no images ({', '.join(self.extensions)}) found in {self.root}; {hint}"
            )
        self.binarize_masks = binarize_masks
        self.mask_root = None
        if mask_root is not None:
            if missing_masks not in ("error", "skip"):
                raise InterpError(f"missing_masks must be 'error' or 'skip', got '{missing_masks}'")
            self.mask_root = _require_root(mask_root, "mask", "point mask_root= at the mask folder")
            if self.mask_root.is_dir() and self.mask_root != root:
                try:
                    self.mask_root = _split_root(self.mask_root, split)
                except InterpError:
                    pass
            self._attach_masks(mask_suffix, missing_masks)
        if limit is not None:
            self.samples = self.samples[: int(limit)]

    # -- scanning -----------------------------------------------------------------------
    def _scan(self, classes):
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is not None:
            classes = [str(c) for c in classes]
            missing = [c for c in classes if not (self.root / c).is_dir()]
            if missing:
                raise InterpError(f"class folder(s) {', '.join(missing[:5])} not found in {self.root}")
        elif subdirs:
            classes = [p.name for p in subdirs]
        if classes:
            self.classes = list(classes)
            samples = []
            for label, c in enumerate(self.classes):
                files = sorted(
                    p for p in (self.root / c).rglob("*") if _is_image(p, self.extensions)
                )
                samples.extend({"path": p, "label": label} for p in files)
            return samples
        self.classes = None
        return [{"path": p} for p in sorted(self.root.iterdir()) if _is_image(p, self.extensions)]

    def _attach_masks(self, suffix: str, missing: str):
        kept, absent = [], []
        for s in self.samples:
            rel = s["path"].relative_to(self.root)
            base = self.mask_root / rel.parent / (rel.stem + suffix)
            found = None
            for ext in (".png",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".png"):
                cand = base.with_name(base.name + ext)
                if cand.is_file():
                    found = cand
                    break
            if found is None:
                absent.append(rel)
                if missing == "skip":
                    continue
            s["mask_path"] = found
            kept.append(s)
        if absent and missing == "error":
            raise InterpError(
                f"{len(absent)} image(s) have no mask in {self.mask_root}, e.g. {absent[0]} "
                f"(expected {Path(absent[0]).with_suffix('')}{suffix}.png there); "
                "pass missing_masks='skip' to leave them out"
            )
        if not kept:
            raise InterpError(f"no image in {self.root} has a mask in {self.mask_root}")
        self.samples = kept

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        index = self.check_index(index)
        s = self.samples[index]
        image = _open_rgb(s["path"])
        out = {"image": image, "path": str(s["path"]), "index": index}
        if "label" in s:
            out["label"] = s["label"]
        if s.get("mask_path") is not None:
            out["mask"] = load_mask(s["mask_path"], image.size, self.binarize_masks)
        return out

    def __repr__(self) -> str:
        n_cls = len(self.classes) if self.classes else 0
        return f"<{type(self).__name__} {self.root} n={len(self)} classes={n_cls}>"


class ImageFolderMasksDataset(ImageFolderDataset):
    """An image folder with a parallel mask folder (``mask_root=`` is required)."""

    name = "imagefolder-masks"

    def __init__(self, split: str | None = "test", root=None, *, mask_root=None, **options):
        if mask_root is None:
            raise InterpError(
                "imagefolder-masks needs mask_root=PATH: a folder laid out like root= whose "
                "files (same names, .png) are the masks"
            )
        super().__init__(split, root, mask_root=mask_root, **options)


# --------------------------------------------------------------------------------------
# ImageNet
# --------------------------------------------------------------------------------------

IMAGENET_HINT = (
    "download ILSVRC2012 from https://image-net.org (or the Kaggle 'imagenet-object-"
    "localization-challenge' copy) and give root= the folder that holds val/ (one folder per "
    "WordNet id, e.g. val/n01440764/*.JPEG, as made by the usual valprep.sh) or the Kaggle "
    "ILSVRC/Data/CLS-LOC folder next to LOC_val_solution.csv"
)


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc).joinpath(*parts)
        if path.is_file():
            return path
    return None


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in the standard label order (sorted)."""
    path = _package_file("timm", "data", "_info", "imagenet_synsets.txt")
    if path is not None:
        wnids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        if len(wnids) == 1000:
            return wnids
    raise InterpError("the ImageNet synset list (from the timm package) is missing; reinstall timm")


def imagenet_classnames() -> list[str]:
    """The 1000 readable ImageNet class names of OpenAI's CLIP (as used by SpLiCE and PRS),
    in label order, read from open_clip's metadata file without importing torch."""
    import ast

    path = _package_file("open_clip", "zero_shot_metadata.py")
    if path is not None:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "IMAGENET_CLASSNAMES" for t in node.targets
            ):
                names = list(ast.literal_eval(node.value))
                if len(names) == 1000:
                    return names
    try:
        from open_clip import IMAGENET_CLASSNAMES  # noqa: PLC0415

        return list(IMAGENET_CLASSNAMES)
    except ImportError:
        raise InterpError("ImageNet class names need the open_clip_torch package") from None


class ImageNetDataset(Dataset):
    """ImageNet-1k from its folder layout; ``label`` is the standard index (0-999) and
    :attr:`classes` the 1000 OpenAI class names, even when only some classes are present.

    Layouts: ``root/<split>/<wnid>/*.JPEG`` or ``root/<wnid>/*.JPEG`` (validation images sorted
    into class folders), or a flat ``root/<split>/*.JPEG`` with Kaggle's ``LOC_<split>_solution.csv``
    in root or its parent. ``class_names=FILE`` (one name per line, 1000 lines) replaces the
    names. ``limit`` keeps the first n images (sorted by path).
    """

    name = "imagenet"

    def __init__(self, split: str = "val", root=None, *, class_names=None, limit: int | None = None):
        split = {"test": "val", "validation": "val", "valid": "val"}.get(split, split)
        if split not in ("train", "val"):
            raise InterpError(f"ImageNet has splits 'train' and 'val', not '{split}'")
        base = _require_root(root, "ImageNet", IMAGENET_HINT)
        self.split = split
        wnids = imagenet_wnids()
        index = {w: i for i, w in enumerate(wnids)}
        self.wnids = wnids
        self.classes = self._names(class_names)
        folder = base / split if (base / split).is_dir() else base
        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name in index)
        samples = []
        if class_dirs:
            for d in class_dirs:
                samples.extend(
                    (p, index[d.name]) for p in sorted(d.iterdir()) if _is_image(p, IMAGE_EXTENSIONS)
                )
        else:
            samples = self._flat(folder, base, split, index)
        if not samples:
            raise InterpError(f"no ImageNet images found in {folder}; {IMAGENET_HINT}")
        self.root = folder
        self.samples = samples[: int(limit)] if limit is not None else samples

    def _names(self, class_names):
        if class_names is None:
            return imagenet_classnames()
        if isinstance(class_names, (list, tuple)):
            names = [str(n) for n in class_names]
        else:
            path = Path(class_names).expanduser()
            if not path.is_file():
                raise InterpError(f"class name file not found: {path}")
            names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(names) != 1000:
            raise InterpError(f"ImageNet needs 1000 class names, got {len(names)}")
        return names

    def _flat(self, folder: Path, base: Path, split: str, index: dict):
        for cand in (base / f"LOC_{split}_solution.csv", base.parent / f"LOC_{split}_solution.csv",
                     base.parent.parent.parent / f"LOC_{split}_solution.csv"):
            if cand.is_file():
                labels = {}
                with open(cand, newline="", encoding="utf-8") as f:
                    for row in csv.DictReader(f):
                        pred = (row.get("PredictionString") or "").split()
                        if pred and pred[0] in index:
                            labels[row["ImageId"]] = index[pred[0]]
                files = sorted(p for p in folder.iterdir() if _is_image(p, IMAGE_EXTENSIONS))
                return [(p, labels[p.stem]) for p in files if p.stem in labels]
        return []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        index = self.check_index(index)
        path, label = self.samples[index]
        return {"image": _open_rgb(path), "label": label, "path": str(path), "index": index,
                "wnid": self.wnids[label]}

    def __repr__(self) -> str:
        return f"<ImageNetDataset {self.root} split={self.split} n={len(self)}>"


class ImageNetValDataset(ImageNetDataset):
    """The ImageNet-1k validation split (SpLiCE's ``ImageNetVal``)."""

    name = "imagenet-val"

    def __init__(self, split: str = "val", root=None, **options):
        super().__init__("val", root, **options)


# --------------------------------------------------------------------------------------
# Waterbirds
# --------------------------------------------------------------------------------------

WATERBIRDS_HINT = (
    "download waterbird_complete95_forest2water2 (https://nlp.stanford.edu/data/dro/"
    "waterbird_complete95_forest2water2.tar.gz) and give root= the folder that holds "
    "metadata.csv and the image folders"
)
WATERBIRDS_SPLITS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


class WaterbirdsDataset(Dataset):
    """Waterbirds (Sagawa et al.): birds pasted on land or water backgrounds.

    ``label`` = y (0 landbird, 1 waterbird), ``place`` = 0 land / 1 water,
    ``group`` = 2 * y + place (0 landbird on land, 1 landbird on water, 2 waterbird on land,
    3 waterbird on water). Read from ``metadata.csv`` (columns img_filename, y, split, place);
    split 0 = train, 1 = val, 2 = test.
    """

    name = "waterbirds"
    classes = ["landbird", "waterbird"]
    places = ["land", "water"]
    group_names = ["landbird on land", "landbird on water", "waterbird on land", "waterbird on water"]

    def __init__(self, split: str = "test", root=None, *, limit: int | None = None):
        if split not in WATERBIRDS_SPLITS:
            raise InterpError(f"Waterbirds has splits train, val and test, not '{split}'")
        root = _require_root(root, "Waterbirds", WATERBIRDS_HINT)
        meta = root / "metadata.csv"
        if not meta.is_file():
            raise InterpError(f"{root} has no metadata.csv; {WATERBIRDS_HINT}")
        code = WATERBIRDS_SPLITS[split]
        self.root, self.split = root, split
        samples = []
        with open(meta, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            need = {"img_filename", "y", "split", "place"}
            missing = need - set(reader.fieldnames or [])
            if missing:
                raise InterpError(f"{meta} lacks the column(s) {', '.join(sorted(missing))}")
            for line, row in enumerate(reader, start=2):
                try:
                    s, y, place = int(row["split"]), int(row["y"]), int(row["place"])
                except (TypeError, ValueError):
                    raise InterpError(f"{meta}, line {line}: split, y and place must be integers") from None
                if y not in (0, 1) or place not in (0, 1):
                    raise InterpError(f"{meta}, line {line}: y and place must be 0 or 1")
                if s == code:
                    samples.append((row["img_filename"], y, place))
        if not samples:
            raise InterpError(f"{meta} lists no image in the '{split}' split")
        self.samples = samples[: int(limit)] if limit is not None else samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        index = self.check_index(index)
        rel, y, place = self.samples[index]
        path = self.root / rel
        if not path.is_file():
            raise InterpError(f"Waterbirds image {rel} listed in metadata.csv is missing from {self.root}")
        return {
            "image": _open_rgb(path), "label": y, "group": 2 * y + place, "path": str(path),
            "index": index, "attributes": {"place": self.places[place], "bird": self.classes[y]},
        }

    def groups(self) -> list[int]:
        """Every sample's group, without opening the images."""
        return [2 * y + place for _, y, place in self.samples]

    def __repr__(self) -> str:
        return f"<WaterbirdsDataset {self.root} split={self.split} n={len(self)}>"
