"""The ``falcon`` explainer: find a vision model's feature groups and explain them in words.

    >>> import interpcore
    >>> falcon = interpcore.get_explainer("falcon", interpcore.default_backbone("vision"))
    >>> groups = falcon.find_groups()                 # on the dataset the backbone advertises
    >>> result = falcon.explain(groups)               # captions + concepts per group
    >>> print(result)

With nothing named, the captioner, the caption pool and the probe dataset are what the target
backbone advertises (``defaults["captioner"]`` / ``["caption_pool"]`` / ``["dataset"]``; the
dataset's own ``caption_pool`` wins), else the installed default vision-language backbone as
the captioner.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

import numpy as np
import torch

from interpcore import Capability, Explainer, InterpError, Result, default_for

from . import steps
from .concepts import contrastive_concepts
from .pool import load_pool, retrieve, top_captions

Grouping = Literal["reference", "coactivation"]
Weights = Literal["pool", "topk", "cosine"]
CropView = Literal["crop", "in-place"]
LowRule = Literal["reference", "contrast"]


@dataclasses.dataclass
class GroupExplanation:
    """One feature group: its features, images, score and (after explain) its concepts."""

    id: int
    features: list[int]
    images: list[int]  #: all highly activating images (dataset indices)
    used_images: list[int]  #: the ones cropped and captioned (top by group activation)
    score: float | None = None  #: interpretability score (mean pairwise cosine of crops)
    interpretable: bool | None = None
    boxes: list[list[int]] = dataclasses.field(default_factory=list)  #: crop boxes (l,t,r,b)
    low_images: list[int] = dataclasses.field(default_factory=list)
    words: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    phrases: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    captions_high: list[list[tuple[str, float]]] = dataclasses.field(default_factory=list)
    captions_low: list[list[tuple[str, float]]] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> str:
        return ",".join(str(f) for f in self.features)


@dataclasses.dataclass
class FalconResult(Result):
    """Feature groups of a target model (and their concepts when explained)."""

    backbone: str
    captioner: str
    layer: str | None
    dataset: str
    n_images: int
    n_features: int
    threshold: float
    groups: list[GroupExplanation]
    settings: dict = dataclasses.field(default_factory=dict)
    pool: str | None = None
    pool_passes: float = 0.0  #: measured: pool rows read / pool size (1.0 = one pass)
    files: dict = dataclasses.field(default_factory=dict)
    explained: list[int] = dataclasses.field(default_factory=list)  #: ids of explained groups
    #: fraction of the groups' images that break the grouping rule, recounted from the
    #: activations (see :attr:`verification`); ``None`` when no activations were at hand
    rule_violations: float | None = None

    @property
    def verification(self):
        """The grouping rule, recounted independently of the grouping code on the same
        activations: the fraction of (group, image) pairs that break it must be 0."""
        if self.rule_violations is None:
            return None
        from interpcore import Verification

        return Verification("fraction of group images breaking the grouping rule",
                            float(self.rule_violations), 0.0)

    def figure(self):
        """Each scored group's interpretability score against the threshold (``None`` when
        no group was scored)."""
        if not any(g.score is not None for g in self.groups):
            return None
        from .output import scores_figure

        return scores_figure(self)

    @property
    def interpretable(self) -> list[GroupExplanation]:
        return [g for g in self.groups if g.interpretable]

    def group(self, ref) -> GroupExplanation:
        """A group by id (``3``) or by its comma-separated features (``"12,40"``; one feature:
        ``"12,"``)."""
        ref = str(ref).strip()
        if "," in ref:  # features: "12,40" (a single feature: "12,")
            try:
                feats = sorted(int(x) for x in ref.split(",") if x.strip())
            except ValueError:
                feats = None
            for g in self.groups:
                if feats is not None and sorted(g.features) == feats:
                    return g
        elif ref.isdigit():  # a group id
            for g in self.groups:
                if int(ref) == g.id:
                    return g
        keys = [str(g.id) for g in self.groups] + [g.key for g in self.groups]
        from interpcore.errors import close_matches

        near = close_matches(ref, keys)
        hint = f" Close: {', '.join(near)}." if near else ""
        raise InterpError(
            f"no feature group '{ref}' (give a group id such as '3', or the group's features "
            f"such as '12,40', or '12,' for one feature);"
            f" {len(self.groups)} groups were found.{hint}"
        )

    def __str__(self) -> str:
        lines = [
            f"FALCON on {self.backbone} (layer {self.layer or 'default'}), dataset "
            f"{self.dataset}: {self.n_images} images x {self.n_features} features, "
            f"threshold {self.threshold:.4f}, {len(self.groups)} groups, "
            f"{len(self.interpretable)} interpretable"
        ]
        if not self.groups:
            lines.append(
                f"  no group of at least {self.settings.get('min_images', 11)} images at sigma "
                f"{self.settings.get('sigma', 5.0)}: the reference's 5-sigma rule suits wide, "
                "sparse layers; for a narrow or dense layer lower --sigma (e.g. 3) or --min-images"
            )
        for g in self.groups:
            score = "   -  " if g.score is None else f"{g.score:.3f}"
            mark = "*" if g.interpretable else " "
            lines.append(f"{mark} group {g.id:>3}  features [{g.key}]  {len(g.images)} images  "
                         f"score {score}")
            if g.words:
                lines.append("      words:   " + ", ".join(f"{w} ({s:.2f})" for w, s in g.words))
            if g.phrases:
                lines.append("      phrases: " + ", ".join(f"{w} ({s:.2f})" for w, s in g.phrases))
        if self.files:
            lines.append("files: " + ", ".join(f"{k}={v}" for k, v in self.files.items()))
        return "\n".join(lines)


class Falcon(Explainer):
    """FALCON (Kalibhat et al., ICML 2023) on any backbone with feature maps.

    Options (all keyword): ``captioner`` (a CLIP backbone or name), ``pool`` (caption pool:
    vocabulary name, text file, shard folder or :class:`~.pool.CaptionPool`), ``layer``,
    ``cam`` (pytorch-grad-cam method name), ``grouping`` ("reference" or "coactivation"),
    ``sigma``, ``min_images``, ``max_images`` (images cropped per group), ``box_threshold``,
    ``score_threshold``, ``low_count``, ``low_min_similarity``, ``top_k`` captions per image,
    ``temperature``, ``weights`` (caption weights: pool/topk/cosine), ``crop_view`` (what the
    captioner sees of a box: crop/in-place), ``low_word_threshold``, ``low_rule``
    (contrast/reference),
    ``n_concepts``, ``batch_size``, ``chunk_size``, ``limit`` (probe images), ``split``.
    See docs/falcon.md.
    """

    name = "falcon"
    requires = (Capability.FEATURE_MAPS,)

    def __init__(self, backbone, *, captioner=None, pool=None, layer: str | None = None,
                 cam: str = "gradcam", grouping: Grouping = "reference", sigma: float = 5.0,
                 min_images: int = 11, min_jaccard: float = 0.5, max_images: int = 50,
                 box_threshold: float = 0.6, crop_view: CropView | None = None,
                 score_threshold: float = 0.8, score_include_self: bool = True,
                 low_count: int = 10,
                 low_min_similarity: float = 0.3, top_k: int = 5, candidates: int = 20,
                 temperature: float = 100.0, weights: Weights = "pool",
                 low_word_threshold: float = 0.1, low_rule: LowRule = "contrast",
                 n_concepts: int = 8, batch_size: int = 32,
                 chunk_size: int = 16384, limit: int | None = None, split: str = "test"):
        # captioner None: what the backbone advertises, else the default vision-language
        # backbone; pool None: what the probe dataset, else the backbone, advertises;
        # crop_view None: what the captioner, dataset or backbone advertises, else "crop"
        opts = dict(captioner=captioner, pool=pool, layer=layer, cam=cam, grouping=grouping,
                    sigma=sigma, min_images=min_images, min_jaccard=min_jaccard,
                    max_images=max_images, box_threshold=box_threshold, crop_view=crop_view,
                    score_threshold=score_threshold, score_include_self=score_include_self,
                    low_count=low_count, low_min_similarity=low_min_similarity, top_k=top_k,
                    candidates=candidates, temperature=temperature, weights=weights,
                    low_word_threshold=low_word_threshold, low_rule=low_rule,
                    n_concepts=n_concepts,
                    batch_size=batch_size, chunk_size=chunk_size, limit=limit, split=split)
        _check_ranges(opts)
        self._pool_named = pool is not None
        if opts["captioner"] is None:
            opts["captioner"] = default_for("captioner", backbone)
            if opts["captioner"] is None:
                from interpcore import default_backbone

                opts["captioner"] = default_backbone("vision-language")
        if opts["pool"] is None:
            opts["pool"] = default_for("caption_pool", backbone, opts["captioner"])
        super().__init__(backbone, **opts)
        steps.cam_class(opts["cam"])  # fail early on a bad name
        steps.crop_view_for(opts["crop_view"])
        self._captioner = None
        self._pool = None
        # caches of this explainer (results hold only data): activations per dataset object,
        # datasets by name, and Grad-CAM crops + their captioner embeddings per
        # (dataset, group features, images)
        self._features: dict[Any, torch.Tensor] = {}
        self._datasets: dict[str, Any] = {}
        self._crops: dict[tuple, tuple] = {}

    # -- parts ----------------------------------------------------------------------------
    @property
    def captioner(self):
        if self._captioner is None:
            cap = self.options["captioner"]
            if isinstance(cap, str):
                from interpcore import get_backbone

                cap = get_backbone(cap)
            for c in (Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER):
                if not cap.has(c):
                    from interpcore import CapabilityError

                    raise CapabilityError(cap.name, c, "the FALCON captioner")
            self._captioner = cap
        return self._captioner

    def _use_dataset_pool(self, ds) -> None:
        """A probe dataset's advertised caption pool wins over the backbone's (unless the
        user named one)."""
        advertised = default_for("caption_pool", ds)
        if not self._pool_named and advertised is not None and advertised != self.options["pool"]:
            self.options["pool"] = advertised
            self._pool = None

    @property
    def pool(self):
        if self._pool is None:
            spec = self.options["pool"]
            if spec is None:
                raise InterpError("no caption pool: name one (pool= / --pool: a vocabulary name, "
                                  "a text file or a folder of embedding shards)")
            from .pool import ShardPool

            needs_captioner = not (isinstance(spec, ShardPool) or (
                isinstance(spec, str) and __import__("os").path.isdir(spec)))
            self._pool = load_pool(spec, self.captioner if needs_captioner else None)
        return self._pool

    def _dataset(self, dataset):
        """The probe dataset object for a name, an object, ``None`` (the advertised one) or a
        :class:`FalconResult` (the dataset its groups were found on)."""
        if isinstance(dataset, FalconResult):
            dataset = dataset.dataset
        if dataset is None:
            dataset = default_for("dataset", self.backbone)
        if isinstance(dataset, str):
            from interpcore import get_dataset

            if dataset not in self._datasets:  # one object per name: features are cached per object
                self._datasets[dataset] = get_dataset(dataset, split=self.options["split"])
            return self._datasets[dataset]
        if dataset is None:
            raise InterpError("give a probe dataset (a registered name or a Dataset): backbone "
                              f"'{self.backbone.name}' advertises none")
        name = getattr(dataset, "name", None)
        if isinstance(name, str):  # a result found on this object names it: find it again
            self._datasets[name] = dataset
        return dataset

    def features(self, dataset=None, *, features: torch.Tensor | None = None) -> torch.Tensor:
        """Raw ``(N, F)`` activations of the target layer over the probe dataset, cached per
        dataset object for this explainer. ``features``: activations computed earlier (e.g. a
        ``find-groups`` run's ``features.safetensors``) to use instead of a forward pass."""
        ds = self._dataset(dataset)
        key = id(ds)
        if features is not None:
            feats = torch.as_tensor(features).float()
            if feats.dim() != 2:
                raise InterpError(f"features must be (images, features), got {tuple(feats.shape)}")
            self._features[key] = (ds, feats)
        if key not in self._features:  # the dataset is kept with its features: ids stay unique
            self._features[key] = (ds, steps.extract_features(
                self.backbone, ds, layer=self.options["layer"],
                batch_size=self.options["batch_size"], limit=self.options["limit"]))
        return self._features[key][1]

    def crops(self, group: GroupExplanation, dataset=None) -> tuple[list, torch.Tensor]:
        """The Grad-CAM crops of a group's used images and their normalized captioner
        embeddings (computed once per dataset, features and images; ``group.boxes`` is set)."""
        o = self.options
        ds = self._dataset(dataset)
        key = (id(ds), tuple(group.features), tuple(group.used_images))
        if key not in self._crops:
            crops, boxes, _ = steps.group_crops(
                self.backbone, ds, group.used_images, group.features, layer=o["layer"],
                method=o["cam"], box_threshold=o["box_threshold"], batch_size=o["batch_size"])
            emb = self.captioner.encode_image(crops, normalize=True, batch_size=o["batch_size"])
            self._crops[key] = (crops, emb, [list(b) for b in boxes])
        crops, emb, boxes = self._crops[key]
        group.boxes = [list(b) for b in boxes]
        return crops, emb

    def cropped(self, result: FalconResult, dataset=None) -> dict[int, list]:
        """``{group id: crops}`` for the groups of ``result`` cropped so far (for figures)."""
        ds = self._dataset(dataset if dataset is not None else result)
        return {g.id: self._crops[k][0] for g in result.groups
                if (k := (id(ds), tuple(g.features), tuple(g.used_images))) in self._crops}

    def _score(self, g: GroupExplanation, emb) -> None:
        o = self.options
        g.score = steps.interpretability_score(emb, include_self=o["score_include_self"])
        g.interpretable = bool(g.score > o["score_threshold"])

    # -- step 1-4 ------------------------------------------------------------------------
    def find_groups(self, dataset=None, *, features: torch.Tensor | None = None,
                    score: bool = True) -> FalconResult:
        """Feature groups, their Grad-CAM crops and interpretability scores. ``features``:
        activations computed earlier, used instead of a forward pass; ``score=False`` skips
        the crops and scores."""
        o = self.options
        ds = self._dataset(dataset)
        reps = self.features(ds, features=features)
        reps_n = steps.normalize_rows(reps)
        if o["grouping"] == "reference":
            groups, thr = steps.find_groups(reps_n, sigma=o["sigma"], min_images=o["min_images"])
        else:
            groups, thr = steps.find_coactivation_groups(
                reps_n, sigma=o["sigma"], min_images=o["min_images"], min_jaccard=o["min_jaccard"])
        out = []
        for g in steps.progress_groups(groups, desc="grad-cam crops"):
            ge = GroupExplanation(g.id, g.features, g.images,
                                  steps.rank_images(reps_n, g, o["max_images"]))
            if score:
                self._score(ge, self.crops(ge, ds)[1])
            out.append(ge)
        return FalconResult(
            backbone=self.backbone.name, captioner=self.settings()["captioner"],
            layer=o["layer"], dataset=getattr(ds, "name", str(dataset)), n_images=reps.shape[0],
            n_features=reps.shape[1], threshold=thr, groups=out, settings=self.settings(),
            rule_violations=rule_violations(reps_n, out, thr, o["grouping"]))

    def settings(self) -> dict:
        s = {k: v for k, v in self.options.items() if k not in ("captioner", "pool")}
        cap, pool = self.options["captioner"], self.options["pool"]
        s["captioner"] = cap if isinstance(cap, str) else getattr(cap, "name", str(cap))
        s["pool"] = pool if isinstance(pool, str) else getattr(pool, "name", str(pool))
        s["backbone"] = self.backbone.name
        return s

    # -- step 5-7 --------------------------------------------------------------------------
    def explain(self, inputs=None, *, which=None, only_interpretable: bool = True,
                features: torch.Tensor | None = None) -> FalconResult:
        """Caption and explain feature groups; returns a new :class:`FalconResult`.

        ``inputs``: a :meth:`find_groups` result (or one read with :func:`load_groups`), or
        the probe dataset (name or object; default: the one the backbone advertises), whose
        groups are found first. ``which``: group ids / feature keys to explain (default: every
        interpretable group, or all groups with ``only_interpretable=False``). ``features``:
        activations computed earlier. All chosen groups are captioned in ONE pass over the
        caption pool.
        """
        o = self.options
        if isinstance(inputs, FalconResult):
            ds = self._dataset(inputs)
            res = copy.deepcopy(inputs)
        else:
            ds = self._dataset(inputs)
            # with named groups only those are cropped (find_groups would score every group)
            res = self.find_groups(ds, features=features, score=not which)
            features = None
        self._use_dataset_pool(ds)
        reps = self.features(ds, features=features)
        if reps.shape != (res.n_images, res.n_features):
            raise InterpError(f"the groups were found on {res.n_images} x {res.n_features} "
                              f"activations but the dataset gives {tuple(reps.shape)}; give the "
                              "same dataset, --limit and --layer as the find-groups run")
        reps_n = steps.normalize_rows(reps)
        if res.rule_violations is None:
            res.rule_violations = rule_violations(reps_n, res.groups, res.threshold, o["grouping"])
        view = steps.crop_view_for(o["crop_view"], self.captioner, ds, self.backbone)
        if which:
            chosen = [res.group(w) for w in which]
        elif only_interpretable:
            chosen = res.interpretable
        else:
            chosen = list(res.groups)
        queries, spans = [], []
        for g in steps.progress_groups(chosen, desc="crops + low images"):
            high_emb = self.crops(g, ds)[1]  # the score's crops; captions may see others
            if g.score is None:  # e.g. a group named with which= that was never scored
                self._score(g, high_emb)
            if view != "crop":
                high_emb = self.captioner.encode_image(
                    steps.crop_views(ds, g.used_images, g.boxes, view), normalize=True,
                    batch_size=o["batch_size"])
            g.low_images = steps.low_activating_images(
                reps_n, g.features, g.images, count=o["low_count"],
                min_similarity=o["low_min_similarity"])
            if g.low_images:
                low_emb = self.captioner.encode_image(
                    [ds[i]["image"] for i in g.low_images], normalize=True,
                    batch_size=o["batch_size"])
            else:
                low_emb = high_emb[:0]
            spans.append((g, len(high_emb), len(low_emb)))
            queries += [high_emb, low_emb]
        res.pool = getattr(self.pool, "name", str(o["pool"])) if chosen else None
        if chosen:
            q = torch.cat(queries)
            ret = retrieve(q, self.pool, k=max(o["candidates"], o["top_k"]),
                           chunk_size=o["chunk_size"], temperature=o["temperature"],
                           device=getattr(self.captioner, "device", None))
            caps = top_captions(ret, self.pool, k=o["top_k"], weights=o["weights"])
            res.pool_passes = ret.passes
            pos = 0
            for g, nh, nl in spans:
                g.captions_high = caps[pos : pos + nh]
                g.captions_low = caps[pos + nh : pos + nh + nl]
                pos += nh + nl
                g.words, g.phrases = contrastive_concepts(
                    g.captions_high, g.captions_low, top=o["n_concepts"],
                    low_threshold=o["low_word_threshold"], low_rule=o["low_rule"])
        # the caption steps' settings are this call's (groups may come from an earlier run)
        res.settings = {**self.settings(), "crop_view": view}
        res.explained = [g.id for g in chosen]
        return res


def _check_ranges(o: dict) -> None:
    """Values the types allow but FALCON cannot use."""
    positive = ("min_images", "max_images", "low_count", "top_k", "candidates", "n_concepts",
                "batch_size", "chunk_size")
    for name in positive:
        if o[name] < 1:
            raise InterpError(f"falcon option '{name}' must be at least 1, got {o[name]}")
    if o["limit"] is not None and o["limit"] < 1:
        raise InterpError(f"falcon option 'limit' must be at least 1 (or None), got {o['limit']}")
    for name in ("min_jaccard", "box_threshold"):
        if not 0 < o[name] <= 1:
            raise InterpError(f"falcon option '{name}' must be in (0, 1], got {o[name]}")
    if o["temperature"] <= 0:
        raise InterpError(f"falcon option 'temperature' must be positive, got {o['temperature']}")


def rule_violations(reps_n: torch.Tensor, groups, threshold: float, grouping: str) -> float:
    """Fraction of (group, image) pairs breaking the grouping rule, recounted with one boolean
    matrix (not the grouping code's per-image keys): under the reference rule an image's set of
    high features must be exactly its group's; under co-activation at least half of the
    group's features must be high on each of its images. ``0.0`` for no groups."""
    high = (reps_n >= threshold).numpy()
    pairs = bad = 0
    for g in groups:
        member = np.zeros(high.shape[1], dtype=bool)
        member[list(g.features)] = True
        rows = high[list(g.images)]
        if grouping == "reference":
            ok = (rows == member).all(axis=1)
        else:
            ok = rows[:, member].sum(axis=1) * 2 >= member.sum()
        pairs += len(ok)
        bad += int((~ok).sum())
    return bad / pairs if pairs else 0.0


def load_groups(run_dir, falcon: Falcon | None = None) -> FalconResult:
    """Read the groups a ``find-groups --out DIR`` run saved (``DIR/falcon.json``)."""
    import json
    from pathlib import Path

    path = Path(run_dir) / "falcon.json"
    if not path.is_file():
        raise InterpError(f"{run_dir} has no falcon.json; give a folder written by "
                          "'interp falcon find-groups --out DIR'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        groups = [GroupExplanation(**{k: v for k, v in g.items()
                                      if k in {f.name for f in dataclasses.fields(GroupExplanation)}})
                  for g in data["groups"]]
        fields = {f.name for f in dataclasses.fields(FalconResult)}
        res = FalconResult(**{k: v for k, v in data.items() if k in fields and k != "groups"},
                           groups=groups)
    except (KeyError, TypeError, ValueError) as exc:
        raise InterpError(f"{path} is not a FALCON result file ({exc})") from None
    if falcon is not None and res.backbone != falcon.backbone.name:
        raise InterpError(f"{path} was computed for backbone '{res.backbone}', not "
                          f"'{falcon.backbone.name}'")
    return res
