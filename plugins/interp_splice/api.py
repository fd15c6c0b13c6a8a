"""The reference SpLiCE package's Python API, on interpcore's registry.

``import interp_splice as splice`` then, as with the reference::

    model = splice.load("open_clip:ViT-B-32", "laion", 10000, l1_penalty=0.25, return_weights=True)
    preprocess = splice.get_preprocess("open_clip:ViT-B-32")
    weights, l0, cosine = splice.decompose_image(preprocess(img).unsqueeze(0), model)
    vocab = splice.get_vocabulary("laion", 10000)

When no backbone is named, every function uses the installed default vision-language
backbone (``interpcore.default_backbone("vision-language")``, offline with the built-in
plugins) and the vocabulary it advertises. Differences from the reference: any
registered backbone and vocabulary work; ``device`` defaults to ``"auto"``; cosines are
per-image means, not sums over a batch; inputs may also be paths or PIL images.
"""

from __future__ import annotations

import torch

from .model import (
    DEFAULT_L1,
    DatasetDecomposition,
    SpliceDecomposer,
    SpliceModel,
    decompose_data,
    default_vocabulary,
)

__all__ = ["load", "decompose_image", "decompose_classes", "decompose_dataset", "get_vocabulary",
           "get_preprocess", "get_tokenizer", "available_models", "SpliceModel", "SPLICE"]

#: The vocabularies the reference downloads (``download_root`` is where it keeps them).
REFERENCE_VOCABULARIES = ("laion", "laion_bigrams", "mscoco")


class SPLICE(SpliceModel):
    """The reference's class, with its defaults: ``SPLICE(image_mean, dictionary, clip=None,
    solver, l1_penalty=0.01, return_weights=False, return_cosine=False, decomp_text=False,
    text_mean=None, device="cpu")``. ``clip`` may be any module with ``encode_image`` and
    ``encode_text``. The default solver is ``active_set`` (the same optimum as the
    reference's ``skl``, certified, faster); ``solver="skl"`` runs scikit-learn."""

    def __init__(self, image_mean, dictionary, clip=None, solver="active_set", l1_penalty=0.01,
                 return_weights=False, return_cosine=False, decomp_text=False, text_mean=None,
                 device="cpu", **kwargs):
        super().__init__(image_mean, dictionary, clip, solver, l1_penalty, return_weights,
                         return_cosine, decomp_text, text_mean, device, **kwargs)


def _folder(name, download_root) -> dict:
    """``folder=`` for the reference's own vocabularies when a download root is given."""
    return {"folder": download_root} if download_root is not None and name in REFERENCE_VOCABULARIES else {}


def _backbone(backbone_name=None, device="auto", pretrained=None):
    from interpcore import Backbone, default_backbone, get_backbone

    if backbone_name is None:
        backbone_name = default_backbone("vision-language")
    if isinstance(backbone_name, Backbone):
        return backbone_name
    if not isinstance(backbone_name, str):
        from interpcore import InterpError

        raise InterpError(
            f"backbone must be a name like 'open_clip:ViT-B-32' or an interpcore Backbone, "
            f"got {type(backbone_name).__name__}"
        )
    return get_backbone(backbone_name, pretrained=pretrained, device=device or "auto")


def load(backbone_name=None, vocabulary=None, vocabulary_size=None, *args,
         l1_penalty: float | None = None, return_weights: bool | None = None, device=None,
         pretrained=None, download_root=None, **kwargs) -> SpliceModel:
    """A :class:`SpliceModel` for a backbone (name or object; default: the installed default
    vision-language backbone) and a vocabulary (default: the one the backbone advertises, else
    ``laion``).

    Positionally, the reference's order ``load(name, vocabulary, vocabulary_size, device,
    download_root)`` (a string, ``torch.device`` or ``None`` in fourth place is the device),
    or ``load(name, vocabulary, vocabulary_size, l1_penalty, return_weights, device)``.
    ``vocabulary_size`` ``None`` / ``-1`` / ``0`` keeps the whole vocabulary; else the k most
    frequent words. ``download_root`` is a folder holding SpLiCE's published image means.
    Other options (``solver``, ``return_cosine``, ``image_mean``, ``mean_dataset``,
    ``templates``, ``dictionary``, ``decomp_text``, ``text_mean``, ``solver_options``...) are
    passed on to :class:`~interp_splice.model.SpliceDecomposer` / :class:`SpliceModel`.
    """
    from interpcore import InterpError

    args = list(args)
    given = {"l1_penalty": l1_penalty, "return_weights": return_weights, "device": device,
             "download_root": download_root}
    if args and (args[0] is None or isinstance(args[0], (str, torch.device))):
        names = ["device", "download_root"]  # the reference's order
    else:
        names = ["l1_penalty", "return_weights", "device"]
    if len(args) > len(names):
        raise InterpError(f"load() takes at most {3 + len(names)} positional arguments here "
                          f"({', '.join(names)} after the vocabulary size), got {3 + len(args)}")
    for name, value in zip(names, args):
        if given[name] is not None:
            raise InterpError(f"{name} was given twice (positionally and by name)")
        given[name] = value
    l1 = DEFAULT_L1 if given["l1_penalty"] is None else given["l1_penalty"]
    ret_w = bool(given["return_weights"]) if given["return_weights"] is not None else False
    dev = given["device"] or "auto"
    download_root = given["download_root"]
    if "solver" in kwargs and kwargs["solver"] == "skl":
        kwargs["solver"] = "sklearn"
    decomp_text = kwargs.pop("decomp_text", False)
    text_mean = kwargs.pop("text_mean", None)
    backbone = _backbone(backbone_name, dev, pretrained)
    if vocabulary is None:
        vocabulary = default_vocabulary(backbone)
    if vocabulary_size is not None and vocabulary_size <= 0:
        vocabulary_size = None
    if download_root is not None:
        kwargs.setdefault("means_folder", download_root)
        if _folder(vocabulary, download_root):
            from interpcore import get_registry

            vocabulary = get_registry().get_vocabulary(vocabulary, size=vocabulary_size,
                                                       **_folder(vocabulary, download_root))
    dec = SpliceDecomposer(backbone, vocabulary=vocabulary, vocabulary_size=vocabulary_size,
                           l1_penalty=l1, return_weights=ret_w, device=dev, **kwargs)
    model = dec.model
    model.decomp_text = bool(decomp_text)
    if text_mean is not None:
        model.register_buffer("text_mean", torch.as_tensor(text_mean).float().reshape(-1).to(model.device))
    return model


def _model(splicemodel, device):
    """The model the dataset functions use, switched to return weights and cosines as the
    reference's functions switch it (``encode_image`` then returns ``(weights, cosines)``)."""
    if splicemodel is None:
        splicemodel = load(None, device=device)
    if not isinstance(splicemodel, SpliceModel):
        from interpcore import InterpError

        raise InterpError(f"splicemodel must be a SpliceModel (from load()), got {type(splicemodel).__name__}")
    splicemodel.return_weights = splicemodel.return_cosine = True
    return splicemodel


def decompose_image(image, splicemodel: SpliceModel | None = None, device="auto"):
    """``(weights (n, c), l0, cosine)`` for an image (pixels, PIL image, path) or embedding.

    ``l0`` and ``cosine`` are means over the images given (for one image: its values). As in
    the reference, the model is left with ``return_weights`` and ``return_cosine`` on.
    """
    model = _model(splicemodel, device)
    model.eval()
    with torch.no_grad():
        weights, _, cosine, _ = model._weights_and_cosine(image)
    l0 = float((weights > 0).sum(1).float().mean())
    return weights, l0, float(cosine.mean())


def decompose_dataset(dataloader, splicemodel: SpliceModel | None = None, device="auto", *,
                      limit: int | None = None, batch_size: int = 64, **job):
    """``(mean weights (c,), mean L0, mean cosine)`` over a dataset.

    ``dataloader``: a torch DataLoader of ``(images, labels)`` or images, an interpcore
    Dataset, or a registered dataset name (its test split). A registered name or a dataset
    from ``get_dataset``, with a model from :func:`load`, runs as a resumable engine job
    (``job``: ``job_dir``, ``engine``, ``shard_size``, ``overwrite``, ``address``,
    ``num_workers``; see :func:`interp_splice.model.decompose_data`); the rest in process.
    """
    res = _decompose(dataloader, splicemodel, device, limit=limit, batch_size=batch_size, **job)
    return res.mean_weights, res.mean_l0, res.mean_cosine


def decompose_classes(dataloader, target_label=None, splicemodel: SpliceModel | None = None,
                      device="auto", *, limit: int | None = None, batch_size: int = 64, **job):
    """``({label: mean weights}, mean L0, mean cosine)``; only ``target_label`` if given
    (an int or a class name). ``job``: as for :func:`decompose_dataset`."""
    res = _decompose(dataloader, splicemodel, device, target_label=target_label, by_class=True,
                     limit=limit, batch_size=batch_size, **job)
    return res.class_weights, res.mean_l0, res.mean_cosine


def _decompose(data, splicemodel, device, **kwargs) -> DatasetDecomposition:
    model = _model(splicemodel, device)
    model.eval()
    name = None
    if isinstance(data, str):
        from interpcore import get_dataset

        name = data
        data = get_dataset(data)
    return decompose_data(model, data, name=name, **kwargs)


def get_vocabulary(name=None, vocabulary_size=None, download_root=None) -> list[str]:
    """The concept names of a vocabulary (``vocabulary_size=k``: the k most frequent;
    default: the vocabulary the default vision-language backbone's family advertises)."""
    from interpcore import default_backbone, get_registry

    if name is None:
        name = default_vocabulary(default_backbone("vision-language"))

    if vocabulary_size is not None and vocabulary_size <= 0:
        vocabulary_size = None
    return list(get_registry().get_vocabulary(name, size=vocabulary_size,
                                              **_folder(name, download_root)).concepts)


def get_preprocess(name=None):
    """The backbone's image preprocessing: PIL image -> ``(C, H, W)`` tensor."""
    return _backbone(name).preprocess


def get_tokenizer(name=None):
    """The backbone's tokenizer: list of strings -> token tensor."""
    return _backbone(name).tokenize


def available_models(pattern: str = "*") -> dict[str, list[str]]:
    """Backbone names by library (every registered backbone; SpLiCE needs image and text
    encoders, which CLIP-style ones have)."""
    from interpcore import list_backbones

    out: dict[str, list[str]] = {}
    for info in list_backbones(pattern):
        prefix, _, model = info.name.partition(":")
        out.setdefault(prefix, []).append(model)
    return out
