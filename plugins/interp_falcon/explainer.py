"""The ``falcon`` explainer: find a vision model's feature groups and explain them in words.

    >>> import interpcore
    >>> falcon = interpcore.get_explainer("falcon", interpcore.default_backbone("vision"))
    >>> groups = falcon.find_groups()                 # on the dataset the backbone advertises
    >>> result = falcon.explain(groups=groups)        # captions + concepts per group
    >>> print(result)

With nothing named, the captioner, the caption pool and the probe dataset are what the target
backbone advertises (``defaults["captioner"]`` / ``["caption_pool"]`` / ``["dataset"]``; the
dataset's own ``caption_pool`` wins), else the installed default vision-language backbone as
the captioner.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from interpcore import Capability, Explainer, InterpError, Result, default_for

from . import steps
from .concepts import LOW_RULES, contrastive_concepts
from .pool import load_pool, retrieve, top_captions

DEFAULTS = dict(
    captioner=None,  # None: what the backbone advertises, else the default vision-language one
    pool=None,  # None: what the dataset or the backbone advertises
    layer=None,
    cam="gradcam",
    grouping="reference",  # or "coactivation"
    sigma=5.0,
    min_images=11,  # the reference keeps groups of more than 10 images
    min_jaccard=0.5,
    max_images=50,
    box_threshold=0.6,
    crop_view=None,  # None: what the captioner / dataset advertises, else "crop" (the reference)
    score_threshold=0.8,
    score_include_self=True,
    low_count=10,
    low_min_similarity=0.3,
    top_k=5,
    candidates=20,
    temperature=100.0,
    weights="pool",
    low_word_threshold=0.1,
    low_rule="contrast",  # or "reference" (see concepts.py)
    n_concepts=8,
    batch_size=32,
    chunk_size=16384,
    limit=None,
    split="test",
)


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

    def __init__(self, backbone, **options):
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            from interpcore.errors import close_matches

            bad = sorted(unknown)[0]
            near = close_matches(bad, sorted(DEFAULTS))
            raise InterpError(
                f"unknown falcon option '{bad}'"
                + (f"; did you mean: {', '.join(near)}?" if near else "")
                + f" Options: {', '.join(sorted(DEFAULTS))}."
            )
        opts = {**DEFAULTS, **options}
        self._pool_named = opts["pool"] is not None
        if opts["captioner"] is None:
            opts["captioner"] = default_for("captioner", backbone)
            if opts["captioner"] is None:
                from interpcore import default_backbone

                opts["captioner"] = default_backbone("vision-language")
        if opts["pool"] is None:
            opts["pool"] = default_for("caption_pool", backbone, opts["captioner"])
        super().__init__(backbone, **opts)
        if opts["grouping"] not in ("reference", "coactivation"):
            raise InterpError(f"unknown grouping '{opts['grouping']}'; use reference or coactivation")
        steps.cam_class(opts["cam"])  # fail early on a bad name
        steps.crop_view_for(opts["crop_view"])
        if opts["low_rule"] not in LOW_RULES:
            raise InterpError(f"unknown low_rule '{opts['low_rule']}'; use {' or '.join(LOW_RULES)}")
        self._captioner = None
        self._pool = None
        self._features: dict[Any, torch.Tensor] = {}
        self._datasets: dict[str, Any] = {}

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
        return dataset

    def features(self, dataset) -> torch.Tensor:
        """Raw ``(N, F)`` activations of the target layer over the probe dataset (cached per
        dataset object for this explainer)."""
        ds = self._dataset(dataset)
        key = id(ds)
        if key not in self._features:  # the dataset is kept with its features: ids stay unique
            self._features[key] = (ds, steps.extract_features(
                self.backbone, ds, layer=self.options["layer"],
                batch_size=self.options["batch_size"], limit=self.options["limit"]))
        return self._features[key][1]

    # -- step 1-4 ------------------------------------------------------------------------
    def find_groups(self, dataset=None, *, features: torch.Tensor | None = None,
                    score: bool = True) -> FalconResult:
        """Feature groups, their Grad-CAM crops and interpretability scores."""
        o = self.options
        ds = self._dataset(dataset)
        reps = self.features(ds) if features is None else torch.as_tensor(features).float()
        reps_n = steps.normalize_rows(reps)
        if o["grouping"] == "reference":
            groups, thr = steps.find_groups(reps_n, sigma=o["sigma"], min_images=o["min_images"])
        else:
            groups, thr = steps.find_coactivation_groups(
                reps_n, sigma=o["sigma"], min_images=o["min_images"], min_jaccard=o["min_jaccard"])
        out = []
        crops_by_group = {}
        for g in steps.progress_groups(groups, desc="grad-cam crops"):
            used = steps.rank_images(reps_n, g, o["max_images"])
            ge = GroupExplanation(g.id, g.features, g.images, used)
            if score:
                crops, boxes, _ = steps.group_crops(
                    self.backbone, ds, used, g.features, layer=o["layer"], method=o["cam"],
                    box_threshold=o["box_threshold"], batch_size=o["batch_size"])
                emb = self.captioner.encode_image(crops, normalize=True, batch_size=o["batch_size"])
                ge.score = steps.interpretability_score(emb, include_self=o["score_include_self"])
                ge.interpretable = bool(ge.score > o["score_threshold"])
                ge.boxes = [list(b) for b in boxes]
                crops_by_group[g.id] = (crops, emb)
            out.append(ge)
        res = FalconResult(
            backbone=self.backbone.name, captioner=self.settings()["captioner"],
            layer=o["layer"], dataset=getattr(ds, "name", str(dataset)), n_images=reps.shape[0],
            n_features=reps.shape[1], threshold=thr, groups=out, settings=self.settings())
        res._crops = crops_by_group  # kept for explain() and the output writer
        res._reps_n = reps_n
        res._dataset = ds
        return res

    def settings(self) -> dict:
        s = {k: v for k, v in self.options.items() if k not in ("captioner", "pool")}
        cap, pool = self.options["captioner"], self.options["pool"]
        s["captioner"] = cap if isinstance(cap, str) else getattr(cap, "name", str(cap))
        s["pool"] = pool if isinstance(pool, str) else getattr(pool, "name", str(pool))
        s["backbone"] = self.backbone.name
        return s

    # -- step 5-7 --------------------------------------------------------------------------
    def explain(self, inputs=None, groups: FalconResult | None = None, *, which=None,
                only_interpretable: bool = True, **kwargs) -> FalconResult:
        """Caption and explain feature groups.

        ``inputs``: the probe dataset (name or object; default: the one the backbone
        advertises). ``groups``: a :meth:`find_groups`
        result (computed when missing). ``which``: group ids / feature keys to explain
        (default: every interpretable group, or all groups with
        ``only_interpretable=False``). All chosen groups are captioned in ONE pass over the
        caption pool.
        """
        if kwargs:
            raise InterpError(f"unknown explain() argument '{sorted(kwargs)[0]}'")
        o = self.options
        # with named groups only those are cropped (find_groups would score every group)
        res = groups if groups is not None else self.find_groups(inputs, score=not which)
        ds = getattr(res, "_dataset", None) or self._dataset(inputs)
        self._use_dataset_pool(ds)
        reps_n = getattr(res, "_reps_n", None)
        if reps_n is None:
            reps_n = steps.normalize_rows(self.features(ds))
        crops_by_group = getattr(res, "_crops", {})
        view = steps.crop_view_for(o["crop_view"], self.captioner, ds, self.backbone)
        # the caption steps' settings are this call's (groups may come from an earlier run)
        res.settings.update({k: o[k] for k in ("top_k", "candidates", "temperature", "weights",
                                               "low_word_threshold", "low_rule", "n_concepts")},
                            crop_view=view)
        if which:
            chosen = [res.group(w) for w in which]
        elif only_interpretable:
            chosen = res.interpretable
        else:
            chosen = list(res.groups)
        # crops for groups that were not scored yet (e.g. loaded from a find-groups run)
        queries, spans = [], []
        for g in steps.progress_groups(chosen, desc="crops + low images"):
            if g.id not in crops_by_group:
                crops, boxes, _ = steps.group_crops(
                    self.backbone, ds, g.used_images, g.features, layer=o["layer"],
                    method=o["cam"], box_threshold=o["box_threshold"], batch_size=o["batch_size"])
                emb = self.captioner.encode_image(crops, normalize=True, batch_size=o["batch_size"])
                crops_by_group[g.id] = (crops, emb)
                g.boxes = [list(b) for b in boxes]
                if g.score is None:
                    g.score = steps.interpretability_score(emb, include_self=o["score_include_self"])
                    g.interpretable = bool(g.score > o["score_threshold"])
            high_emb = crops_by_group[g.id][1]  # the score's crops; captions may see others
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
        res._crops = crops_by_group
        res._explained = [g.id for g in chosen]
        return res


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
