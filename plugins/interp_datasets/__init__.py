"""Built-in interpcore plugin: datasets on disk (image folders, CIFAR, ImageNet, Waterbirds,
ImageNet-segmentation).

Only names and loaders are registered here; the dataset classes live in submodules that are
imported when a dataset is first asked for (``interp datasets list`` imports nothing heavy).
Every dataset returns samples as :class:`interpcore.Dataset` dicts: ``image`` (PIL RGB),
``label`` (int, where the dataset has labels), ``mask`` (numpy int array, for segmentation
data), ``group`` (Waterbirds), ``path`` and ``index``.
"""

from __future__ import annotations

import interpcore


def _lazy(module: str, attr: str):
    def factory(split: str = "test", **options):
        import importlib

        mod = importlib.import_module(f"{__name__}.{module}")
        return getattr(mod, attr)(split=split, **options)

    factory.__name__ = f"load_{attr}"
    return factory


DATASETS = [
    ("imagefolder", "folders", "ImageFolderDataset",
     "images in class subfolders (root=..., like torchvision ImageFolder); mask_root=... adds masks"),
    ("imagefolder-masks", "folders", "ImageFolderMasksDataset",
     "images (root=...) with a parallel folder of masks (mask_root=...), for segmentation"),
    ("imagenet", "folders", "ImageNetDataset",
     "ImageNet-1k in its folder layout (root=..., val/<wnid>/*.JPEG), OpenAI class names"),
    ("imagenet-val", "folders", "ImageNetValDataset",
     "the ImageNet-1k validation split (root=...), OpenAI class names"),
    ("waterbirds", "folders", "WaterbirdsDataset",
     "Waterbirds (root=... with metadata.csv): landbird/waterbird, group = 2*y + place"),
    ("imagenet-seg", "imagenet_seg", "ImageNetSegDataset",
     "ImageNet-segmentation gtsegs_ijcv.mat (root=... file or folder): images + object masks"),
    ("cifar10", "cifar", "CIFAR10Dataset",
     "CIFAR-10 via torchvision (root=..., download=True to fetch it)"),
    ("cifar100", "cifar", "CIFAR100Dataset",
     "CIFAR-100 via torchvision (root=..., download=True to fetch it)"),
]


@interpcore.hookimpl
def register_datasets(register):
    for name, module, attr, description in DATASETS:
        register(name, _lazy(module, attr), description=description)


@interpcore.hookimpl
def register_commands(cli):
    from .cli import show

    group = cli.commands.get("datasets")  # the core's 'interp datasets' group
    if group is not None:
        group.add_command(show)
