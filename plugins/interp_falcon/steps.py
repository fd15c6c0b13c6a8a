"""FALCON's steps, each a separate function (Kalibhat et al., ICML 2023).

1. :func:`extract_features` - a target model's activations at one layer over a probe dataset.
2. :func:`normalize_rows` + :func:`find_groups` - highly activating images per feature and
   feature groups (the reference rule), or :func:`find_coactivation_groups`.
3. :func:`gradcam_maps` + :func:`largest_box` + :func:`crop_to_box` - Grad-CAM of the group's
   summed activation, thresholded, the largest box, the crop (:func:`crop_views`: what the
   captioner is shown of each box).
4. :func:`interpretability_score` - mean pairwise cosine of the crops' captioner embeddings.
5. :func:`low_activating_images` - images on which the group is silent but that are most
   similar on the other features.
(6. captioning and 7. concept extraction live in :mod:`.pool` and :mod:`.concepts`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from interpcore import InterpError
from interpcore.progress import progress

# --------------------------------------------------------------------------------------
# 1. features
# --------------------------------------------------------------------------------------


def pool_activations(act: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` vectors from layer outputs: spatial maps ``(N, C, H, W)`` are averaged over
    H and W, token sequences ``(N, T, C)`` over T."""
    if act.dim() == 4:
        return act.mean(dim=(2, 3))
    if act.dim() == 3:
        return act.mean(dim=1)
    if act.dim() == 2:
        return act
    raise InterpError(f"cannot turn activations of shape {tuple(act.shape)} into feature vectors")


def extract_features(backbone, dataset, *, layer: str | None = None, batch_size: int = 32,
                     limit: int | None = None) -> torch.Tensor:
    """``(N, F)`` float32 activations of ``layer`` (default: the pooled layer before the
    classifier) for the first ``limit`` images of ``dataset``, streamed in batches."""
    from interpcore.data import batched_samples

    outs = []
    for _, samples in batched_samples(dataset, batch_size, limit, desc="features"):
        images = [s["image"] for s in samples]
        act = backbone.features(images, layer=layer, batch_size=batch_size)
        outs.append(pool_activations(act.detach().float().cpu()))
    if not outs:
        raise InterpError("the probe dataset has no images")
    return torch.cat(outs)


# --------------------------------------------------------------------------------------
# 2. feature groups
# --------------------------------------------------------------------------------------


def normalize_rows(reps: torch.Tensor) -> torch.Tensor:
    """Per-image normalization (unit L2 norm per row), as the reference does."""
    return torch.nn.functional.normalize(reps.float(), dim=1)


def high_threshold(reps_n: torch.Tensor, sigma: float = 5.0) -> float:
    """The global threshold: mean + ``sigma`` standard deviations of all normalized values."""
    return float(reps_n.mean() + sigma * reps_n.std())


@dataclass
class FeatureGroup:
    """A set of features and the images that activate all of them (and no other) highly."""

    features: list[int]
    images: list[int]
    id: int = -1
    extra: dict = field(default_factory=dict)


def find_groups(reps_n: torch.Tensor, *, sigma: float = 5.0, min_images: int = 11,
                threshold: float | None = None) -> tuple[list[FeatureGroup], float]:
    """The reference's grouping rule.

    Each image's set of features at or above ``threshold`` (default mean + ``sigma`` std of
    the normalized matrix) is its key; images with the same non-empty key form a group;
    groups of at least ``min_images`` images (default 11: the reference keeps groups of
    more than 10) are kept, largest first. Returns
    ``(groups, threshold)``.
    """
    if reps_n.dim() != 2:
        raise InterpError(f"expected features of shape (images, features), got {tuple(reps_n.shape)}")
    thr = high_threshold(reps_n, sigma) if threshold is None else float(threshold)
    above = (reps_n >= thr).numpy()
    by_key: dict[tuple[int, ...], list[int]] = {}
    for img in np.nonzero(above.any(axis=1))[0].tolist():
        key = tuple(np.nonzero(above[img])[0].tolist())
        by_key.setdefault(key, []).append(img)
    groups = [FeatureGroup(list(k), v) for k, v in by_key.items() if len(v) >= min_images]
    groups.sort(key=lambda g: (-len(g.images), g.features))
    for i, g in enumerate(groups):
        g.id = i
    return groups, thr


def find_coactivation_groups(reps_n: torch.Tensor, *, sigma: float = 5.0, min_images: int = 11,
                             min_jaccard: float = 0.5, threshold: float | None = None
                             ) -> tuple[list[FeatureGroup], float]:
    """Group features that fire on the same images.

    Features with at least ``min_images`` highly activating images are linked when the
    Jaccard overlap of their image sets reaches ``min_jaccard``; connected features form a
    group. A group's images are those on which at least half of its features are high.
    """
    thr = high_threshold(reps_n, sigma) if threshold is None else float(threshold)
    above = (reps_n >= thr).float()
    counts = above.sum(0)
    feats = torch.nonzero(counts >= min_images).flatten().tolist()
    if not feats:
        return [], thr
    a = above[:, feats]
    inter = a.T @ a
    union = counts[feats][:, None] + counts[feats][None, :] - inter
    jac = (inter / union.clamp_min(1)).numpy()
    parent = list(range(len(feats)))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(*np.nonzero(np.triu(jac >= min_jaccard, k=1))):
        parent[root(int(i))] = root(int(j))
    comps: dict[int, list[int]] = {}
    for i in range(len(feats)):
        comps.setdefault(root(i), []).append(i)
    groups = []
    for members in comps.values():
        sub = a[:, members]
        imgs = torch.nonzero(sub.sum(1) * 2 >= len(members)).flatten().tolist()
        if len(imgs) >= min_images:
            groups.append(FeatureGroup(sorted(feats[m] for m in members), imgs))
    groups.sort(key=lambda g: (-len(g.images), g.features))
    for i, g in enumerate(groups):
        g.id = i
    return groups, thr


def rank_images(reps_n: torch.Tensor, group: FeatureGroup, max_images: int | None) -> list[int]:
    """The group's images ordered by the group's summed activation, at most ``max_images``."""
    idx = torch.tensor(group.images, dtype=torch.long)
    score = reps_n[idx][:, group.features].sum(1)
    order = idx[score.argsort(descending=True, stable=True)].tolist()
    return order if max_images is None else order[:max_images]


# --------------------------------------------------------------------------------------
# 3. Grad-CAM, boxes, crops
# --------------------------------------------------------------------------------------

#: CAM methods of pytorch-grad-cam by lower-case name.
CAM_METHODS = {
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "gradcam++": "GradCAMPlusPlus",
    "gradcamplusplus": "GradCAMPlusPlus",
    "gradcamelementwise": "GradCAMElementWise",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "fullgrad": "FullGrad",
    "kpcacam": "KPCA_CAM",
    "finercam": "FinerCAM",
    "shapleycam": "ShapleyCAM",
}


def cam_class(name: str):
    """The pytorch-grad-cam class for a method name (case and ``-``/``_`` ignored)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in CAM_METHODS:
        from interpcore.errors import close_matches

        near = close_matches(key, sorted(CAM_METHODS))
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise InterpError(
            f"unknown CAM method '{name}'.{hint} Valid: {', '.join(sorted(set(CAM_METHODS)))}."
        )
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, CAM_METHODS[key])


class FeatureGroupTarget:
    """Grad-CAM target: the sum of the group's features in the layer output."""

    def __init__(self, features):
        self.features = torch.as_tensor(list(features), dtype=torch.long)

    def __call__(self, output):
        if int(self.features.max()) >= output.shape[-1] or int(self.features.min()) < 0:
            raise InterpError(
                f"feature indices {self.features.tolist()} out of range for a layer with "
                f"{output.shape[-1]} features"
            )
        if output.dim() == 1:
            return output[self.features.to(output.device)].sum()
        return output[:, self.features.to(output.device)].sum(dim=1)


class LayerOutput(torch.nn.Module):
    """The backbone's image forward with its output replaced by the pooled activations of
    ``layer`` (default: the backbone's default feature layer), for pytorch-grad-cam. Uses
    only the public backbone contract (``forward_features``)."""

    def __init__(self, backbone, layer: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.layer = layer or backbone.default_layer
        if self.layer is None:
            raise InterpError(f"backbone '{backbone.name}' has no default feature layer; give a layer")
        # pytorch-grad-cam finds the device from the wrapper's first parameter
        self._device = torch.nn.Parameter(torch.empty(0, device=backbone.device), requires_grad=False)

    def forward(self, pixels):
        return pool_activations(self.backbone.forward_features(pixels, self.layer))


def cam_target_layers(backbone, layer: str | None = None, probe=None) -> list:
    """Where Grad-CAM looks: the chosen ``layer`` itself when its output is a spatial map
    (checked on ``probe`` pixels), else the backbone's default Grad-CAM layers
    (``backbone.gradcam_target_layers()``)."""
    if layer is not None and layer != backbone.default_layer and probe is not None:
        with torch.no_grad():
            act = backbone.forward_features(probe, layer)
        if act.dim() == 4:
            return [backbone.module(layer)]
    return backbone.gradcam_target_layers()


def gradcam_maps(backbone, pixels: torch.Tensor, features, *, layer: str | None = None,
                 method: str = "gradcam", batch_size: int = 16) -> np.ndarray:
    """``(N, H, W)`` CAM maps in [0, 1] at the input resolution for the group ``features``.

    The target is the sum of the group's features at ``layer``; pytorch-grad-cam's hooks are
    always removed afterwards, also on error.
    """
    cls = cam_class(method)
    wrapper = LayerOutput(backbone, layer)
    targets_layers = cam_target_layers(
        backbone, layer, pixels[:1].to(backbone.device, backbone.dtype) if len(pixels) else None
    )
    out = []
    # Not "with cls(...) as cam": pytorch-grad-cam's __exit__ prints and swallows errors.
    reshape = getattr(backbone, "gradcam_reshape_transform", None)
    reshape = reshape() if callable(reshape) else None  # ViT tokens -> (N, C, h, w) maps
    cam = cls(model=wrapper, target_layers=targets_layers, reshape_transform=reshape)
    try:
        for start in range(0, pixels.shape[0], batch_size):
            x = pixels[start : start + batch_size].to(backbone.device, backbone.dtype).clone()
            x.requires_grad_(True)
            targets = [FeatureGroupTarget(features) for _ in range(x.shape[0])]
            maps = cam(input_tensor=x, targets=targets)
            out.append(np.asarray(maps, dtype=np.float32))
    finally:
        cam.activations_and_grads.release()
        model = getattr(backbone, "model", None)  # TorchBackbone's module: drop CAM's grads
        if isinstance(model, torch.nn.Module):
            model.zero_grad(set_to_none=True)
    return np.concatenate(out) if out else np.zeros((0,) + tuple(pixels.shape[-2:]), np.float32)


def largest_box(cam: np.ndarray, threshold: float = 0.6) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` (right/bottom exclusive) of the largest bounding box of
    a connected region where ``cam >= threshold``; the whole map when no pixel reaches it."""
    from scipy import ndimage

    mask = np.asarray(cam) >= threshold
    h, w = mask.shape
    if not mask.any():
        return (0, 0, w, h)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    best, best_area = (0, 0, w, h), -1
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        t, b = sl[0].start, sl[0].stop
        l, r = sl[1].start, sl[1].stop
        area = (b - t) * (r - l)
        if area > best_area:
            best, best_area = (l, t, r, b), area
    return best


def box_to_image(box, map_size: tuple[int, int], image_size: tuple[int, int]):
    """Map a box on the model input (``map_size`` = (H, W)) to the original image
    (``image_size`` = (W, H), PIL order), assuming the usual preprocessing: resize the
    shorter side, centre crop (a plain resize of a same-shaped image maps the same way)."""
    mh, mw = map_size
    iw, ih = image_size
    scale = min(iw / mw, ih / mh)  # original pixels per input pixel inside the centre region
    ox = (iw - mw * scale) / 2
    oy = (ih - mh * scale) / 2
    l, t, r, b = box
    out = (ox + l * scale, oy + t * scale, ox + r * scale, oy + b * scale)
    l2, t2 = max(0, int(np.floor(out[0]))), max(0, int(np.floor(out[1])))
    r2, b2 = min(iw, int(np.ceil(out[2]))), min(ih, int(np.ceil(out[3])))
    return (l2, t2, max(r2, l2 + 1), max(b2, t2 + 1))


def crop_to_box(image, box, map_size):
    """The PIL crop of ``image`` for a box on the model input of ``map_size``; the captioner's
    preprocessing then resizes it to its input size."""
    from interpcore.torch_backbone import load_image

    image = load_image(image)
    return image.crop(box_to_image(box, map_size, image.size))


def group_crops(backbone, dataset, group_images, features, *, layer=None, method="gradcam",
                box_threshold: float = 0.6, batch_size: int = 16):
    """Grad-CAM crops for one group: ``(crops [PIL], boxes [(l,t,r,b) on original], maps)``."""
    crops, boxes, maps_all = [], [], []
    for start in range(0, len(group_images), batch_size):
        idx = group_images[start : start + batch_size]
        images = [dataset[i]["image"] for i in idx]
        pixels = backbone.to_pixels(images)
        maps = gradcam_maps(backbone, pixels, features, layer=layer, method=method,
                            batch_size=batch_size)
        for im, m in zip(images, maps):
            from interpcore.torch_backbone import load_image

            im = load_image(im)
            b = box_to_image(largest_box(m, box_threshold), m.shape, im.size)
            boxes.append(b)
            crops.append(im.crop(b))
            maps_all.append(m)
    return crops, boxes, maps_all


#: How a box is shown to the captioner: "crop" (the reference: the box cut out, then resized
#: to the captioner's input) or "in-place" (the box's pixels at their own size and place, the
#: rest of the image filled with the mean colour outside the box).
CROP_VIEWS = ("crop", "in-place")


def crop_view_for(option, *sources) -> str:
    """The crop view to use: ``option`` when given, else what ``sources`` (captioner, dataset,
    target backbone) advertise as ``defaults["crop_view"]``, else the reference's "crop"."""
    from interpcore import default_for

    view = option if option is not None else default_for("crop_view", *sources, fallback="crop")
    return _checked_view(view)


def _checked_view(view: str) -> str:
    if view not in CROP_VIEWS:
        raise InterpError(f"unknown crop view '{view}'; use {' or '.join(CROP_VIEWS)}")
    return view


def in_place_view(image, box):
    """``image`` with every pixel outside ``box`` (l, t, r, b on the image) set to the mean
    colour of those pixels: the box's content keeps its size and position in the frame.

    A captioner trained on whole images of one object scale reads a resized crop as a
    larger, zoomed object; this view keeps the scale it was trained on."""
    from PIL import Image

    from interpcore.torch_backbone import load_image

    arr = np.asarray(load_image(image).convert("RGB"), dtype=np.float32)
    l, t, r, b = (int(v) for v in box)
    inside = np.zeros(arr.shape[:2], dtype=bool)
    inside[t:b, l:r] = True
    fill = arr[~inside].mean(axis=0) if (~inside).any() else arr.reshape(-1, 3).mean(axis=0)
    out = np.where(inside[..., None], arr, fill[None, None, :])
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def crop_views(dataset, images, boxes, view: str):
    """What the captioner sees of each image's box (boxes on the original images, as
    :func:`group_crops` returns them)."""
    from interpcore.torch_backbone import load_image

    _checked_view(view)
    out = []
    for i, box in zip(images, boxes):
        im = load_image(dataset[i]["image"])
        out.append(im.crop(tuple(box)) if view == "crop" else in_place_view(im, box))
    return out


# --------------------------------------------------------------------------------------
# 4. interpretability score
# --------------------------------------------------------------------------------------


def interpretability_score(emb: torch.Tensor, *, include_self: bool = True) -> float:
    """Mean pairwise cosine similarity of the rows of ``emb``.

    ``include_self=True`` averages the full similarity matrix, diagonal included, which is
    what the reference computes and what its 0.8 threshold was chosen for; ``False`` averages
    the distinct pairs only.
    """
    z = torch.nn.functional.normalize(torch.as_tensor(emb).float(), dim=1)
    n = z.shape[0]
    if n == 0:
        return float("nan")
    sim = z @ z.T
    if include_self:
        return float(sim.mean())
    if n == 1:
        return float("nan")
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


# --------------------------------------------------------------------------------------
# 5. lowly activating images
# --------------------------------------------------------------------------------------


def low_activating_images(reps_n: torch.Tensor, features, high_images, *, count: int = 10,
                          min_similarity: float = 0.3, low_threshold: float | None = None
                          ) -> list[int]:
    """Images on which all the group's features are below ``low_threshold`` (default: the
    mean of the normalized matrix, as in the reference), ordered by how similar they are to
    the mean highly activating image on the OTHER features (dot product); those with
    similarity below ``min_similarity`` are dropped; at most ``count``."""
    f = reps_n.shape[1]
    feats = torch.as_tensor(list(features), dtype=torch.long)
    if feats.numel() == 0 or int(feats.max()) >= f or int(feats.min()) < 0:
        raise InterpError(f"feature indices {list(features)} out of range for {f} features")
    thr = float(reps_n.mean()) if low_threshold is None else float(low_threshold)
    others = torch.ones(f, dtype=torch.bool)
    others[feats] = False
    mean_high = reps_n[torch.as_tensor(list(high_images), dtype=torch.long)][:, others].mean(0)
    cand = torch.nonzero((reps_n[:, feats] < thr).all(dim=1)).flatten()
    if cand.numel() == 0:
        return []
    sim = reps_n[cand][:, others] @ mean_high
    order = sim.argsort(descending=True, stable=True)
    keep = [int(cand[i]) for i in order.tolist() if float(sim[i]) >= min_similarity]
    return keep[:count]


def progress_groups(groups, desc="groups"):
    return progress(groups, desc=desc, total=len(groups), unit="group")
