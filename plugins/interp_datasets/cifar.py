"""CIFAR-10 and CIFAR-100 through torchvision (SpLiCE's ``CIFAR10`` / ``CIFAR100``).

Nothing is downloaded unless ``download=True`` is given.
"""

from __future__ import annotations

from pathlib import Path

from interpcore import Dataset, InterpError

URLS = {
    "cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}


def default_root() -> Path:
    from interpcore.cache import cache_dir

    return cache_dir("datasets")


class _CIFAR(Dataset):
    name = "?"
    _tv_class = "?"

    def __init__(self, split: str = "test", root=None, *, download: bool = False,
                 limit: int | None = None):
        if split not in ("train", "test", "val"):
            raise InterpError(f"{self.name} has splits 'train' and 'test', not '{split}'")
        folder, url = URLS[self.name]
        root = Path(root).expanduser() if root else default_root()
        if not download and not (root / folder).is_dir():
            raise InterpError(
                f"{self.name} not found: {root / folder} does not exist. Pass download=True "
                f"(--download on the command line) to fetch it, or download {url} and unpack "
                f"it into {root}"
            )
        import torchvision

        cls = getattr(torchvision.datasets, self._tv_class)
        try:
            self._ds = cls(str(root), train=(split == "train"), download=bool(download))
        except RuntimeError as exc:
            raise InterpError(
                f"{self.name} in {root} is incomplete or corrupt ({exc}); delete {root / folder} "
                f"and pass download=True, or unpack {url} there again"
            ) from None
        self.root, self.split = root, split
        self.classes = list(self._ds.classes)
        self.n = len(self._ds) if limit is None else min(int(limit), len(self._ds))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        index = self.check_index(index)
        image, label = self._ds[index]
        return {"image": image.convert("RGB"), "label": int(label), "index": index}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.root} split={self.split} n={self.n}>"


class CIFAR10Dataset(_CIFAR):
    name = "cifar10"
    _tv_class = "CIFAR10"


class CIFAR100Dataset(_CIFAR):
    name = "cifar100"
    _tv_class = "CIFAR100"
