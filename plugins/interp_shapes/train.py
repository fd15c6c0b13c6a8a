"""Train the shapes-world models, reproducibly.

    python -m interp_shapes.train clip   --out DIR --seed 0
    python -m interp_shapes.train resnet --out DIR --seed 0

(also ``interp shapes train clip|resnet``). Each run writes, atomically, ``DIR/<model>.safetensors``
(fp16 weights), ``DIR/<model>-config.json`` (the architecture) and ``DIR/<model>.json`` (every
hyperparameter, the seed, the library versions, the training time and the final quality
metrics on held-out images). Training images are generated on the fly: step ``s`` uses the
training-split samples ``s * batch .. (s + 1) * batch - 1``, so a run depends only on its
arguments (up to floating-point nondeterminism of the CPU kernels).

The CLIP is trained contrastively (symmetric InfoNCE with a learned temperature) on captions
of ``shapes`` training images mixed with ``shapes-spurious`` training images, whose captions
carry the label/background correlation the way web captions do. The ResNet is trained as a
multi-label classifier of the colours and shapes present in an image.

The recipe lives with the world's generator; the architectures come through the registry like
any user's model (``interpcore.get_backbone("shapes:clip-vit", pretrained="random",
config=...)``), and the trained weights are what the ``shapes`` backbone family loads.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import time
from pathlib import Path

CLIP_DEFAULTS = {
    "steps": 5000,
    "batch_size": 128,
    "lr": 1.5e-3,
    "weight_decay": 0.1,
    "betas": [0.9, 0.98],
    "eps": 1e-6,
    "warmup_fraction": 0.1,
    "grad_clip": 1.0,
    "spurious_fraction": 0.35,
    "contrast_fraction": 0.5,
    "init_logit_scale": 14.285714,
    # (attribute varied, probability, values or None for all): see _contrast_groups
    "contrast_groups": [["position", 0.6, None], ["shape", 0.3, None], ["size", 0.1, None]],
    "eval_n": 1000,
}
RESNET_DEFAULTS = {
    "steps": 2000,
    "batch_size": 64,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "warmup_fraction": 0.1,
    "grad_clip": 1.0,
    "eval_n": 1000,
}


def one_cycle(step: int, total: int, warmup_fraction: float) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to zero (a one-cycle shape)."""
    warm = max(1, int(total * warmup_fraction))
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


#: Contrast groups: (attribute varied, probability, values); every member of a group is the
#: same single-object scene except for that attribute, and its caption names the attribute.
CONTRAST_GROUPS = tuple(tuple(g) for g in CLIP_DEFAULTS["contrast_groups"])


def _contrast_groups(rng, n_slots, groups=CONTRAST_GROUPS):
    """Hard negatives for the contrastive loss: groups of images that differ in one
    attribute only (position, shape or size), with captions that name it. Random batches
    rarely need position to match a caption; these groups do (docs/shapes.md: position is
    still learned late, after about 4,000 steps)."""
    import numpy as np

    from . import world

    images, captions, scenes = [], [], []
    probs = np.array([g[1] for g in groups])
    while len(images) < n_slots:
        attr, _, subset = groups[rng.choice(len(groups), p=probs / probs.sum())]
        base = world.random_scene(rng, one_object_prob=1.0).objects[0]
        bg = world.BACKGROUNDS[rng.integers(len(world.BACKGROUNDS))]
        values = list(subset or world.ATTRIBUTES[attr])
        if attr == "shape" and subset is None:
            values = list(rng.choice(values, size=4, replace=False))
        for v in values:
            if len(images) >= n_slots:
                break
            obj = world.ObjectSpec(**dict(base.to_dict(), **{attr: str(v)}))
            scene = world.Scene(bg, [obj])
            img, _ = world.render(scene, rng)
            images.append(img)
            scenes.append(scene)
            captions.append(world.caption(
                scene, rng, shape_weight=1.0 if attr == "shape" else 0.8,
                p_position=1.0 if attr == "position" else 0.65,
                p_size=1.0 if attr == "size" else 0.5))
    return images, captions, scenes


def _clip_batch(step, batch_size, seed, spurious_fraction, contrast_fraction, main_ds, spur_ds,
                groups=CONTRAST_GROUPS):
    """A CLIP training batch: contrast groups first, then shapes / shapes-spurious samples."""
    import numpy as np

    n_hard = int(round(batch_size * contrast_fraction))
    rng = np.random.default_rng([seed, 104729, step])
    h_img, h_cap, _ = _contrast_groups(rng, n_hard, groups) if n_hard else ([], [], [])
    images, captions, _ = _batch(step, batch_size - n_hard, seed, spurious_fraction, main_ds, spur_ds)
    if n_hard:
        images = np.concatenate([np.stack(h_img), images])
        captions = h_cap + captions
    return images, captions


def _batch(step, batch_size, seed, spurious_fraction, main_ds, spur_ds):
    import numpy as np

    rng = np.random.default_rng([seed, 7919, step])
    use_spur = rng.random(batch_size) < spurious_fraction
    images, captions, samples = [], [], []
    for j in range(batch_size):
        idx = step * batch_size + j
        s = spur_ds[idx % len(spur_ds)] if use_spur[j] else main_ds[idx % len(main_ds)]
        images.append(np.asarray(s["image"]))
        captions.append(s["caption"])
        samples.append(s)
    return np.stack(images), captions, samples


def _versions() -> dict:
    import numpy
    import open_clip
    import PIL
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "open_clip": open_clip.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "pillow": PIL.__version__}


def _write_json(path: Path, data: dict) -> None:
    from interpcore.cache import write_text

    write_text(path, json.dumps(data, indent=2) + "\n")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _read_config(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        from interpcore import InterpError

        raise InterpError(f"model config not found: {path}") from None


def _pixels(backbone, images):
    """A training batch of (N, H, W, 3) uint8 images through the backbone's own preprocessing."""
    from PIL import Image

    return backbone.to_pixels([Image.fromarray(im) for im in images])


def train_clip(out, *, seed=0, steps=None, batch_size=None, lr=None, threads=None,
               spurious_fraction=None, eval_n=None, config=None, quiet=False, device="cpu",
               overrides=None) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    import interpcore
    from interpcore.progress import progress

    from . import evaluate
    from .datasets import ShapesDataset, SpuriousShapesDataset

    hp = dict(CLIP_DEFAULTS)
    for k, v in {"steps": steps, "batch_size": batch_size, "lr": lr,
                 "spurious_fraction": spurious_fraction, "eval_n": eval_n}.items():
        if v is not None:
            hp[k] = v
    unknown = sorted(set(overrides or {}) - set(hp))
    if unknown:
        from interpcore import InterpError

        raise InterpError(f"unknown CLIP training hyperparameter(s) {unknown}; known: {sorted(hp)}")
    hp.update(overrides or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    np.random.seed(seed)

    # built on the CPU from the seed (the loader builds there, then moves), so that every
    # device starts from one init
    bb = interpcore.get_backbone("shapes:clip-vit", pretrained="random", config=config,
                                 device=device, dtype=torch.float32)
    model, tok, cfg = bb.model, bb.tokenizer, bb.config
    with torch.no_grad():
        model.logit_scale.fill_(math.log(hp["init_logit_scale"]))
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "logit_scale" in n or "embedding" in n else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: one_cycle(s, hp["steps"], hp["warmup_fraction"]))

    big = 10**9
    main_ds = ShapesDataset("train", n=big, seed=seed)
    spur_ds = SpuriousShapesDataset("train", n=big, seed=seed)
    B = hp["batch_size"]
    labels = torch.arange(B, device=device)
    t0 = time.time()
    model.train()
    losses = []
    bar = progress(range(hp["steps"]), desc="training clip", unit="step")
    for step in bar:
        images, captions = _clip_batch(step, B, seed, hp["spurious_fraction"],
                                       hp["contrast_fraction"], main_ds, spur_ds,
                                       hp["contrast_groups"])
        x = _pixels(bb, images)
        t = tok(captions).to(device)
        fi, ft, scale = model(x, t)
        logits = scale * fi @ ft.T
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 100 == 0 or step == hp["steps"] - 1:
            _log(f"clip step {step}/{hp['steps']} loss {np.mean(losses[-100:]):.4f} "
                 f"scale {model.logit_scale.exp().item():.1f} {time.time() - t0:.0f}s", quiet)
    train_s = time.time() - t0
    model.eval()

    metrics = {"zero_shot": evaluate.clip_attribute_accuracy(bb, n=hp["eval_n"], split="val"),
               "spurious": evaluate.clip_spurious_accuracy(bb, n=hp["eval_n"], split="val")}
    metrics["final_loss"] = float(np.mean(losses[-100:]))
    _log(f"clip metrics (val): {json.dumps(metrics)}", quiet)

    return _save_run(
        out, model.cpu(), name="clip-vit", kind="clip", seed=seed, hp=hp, cfg=cfg, metrics=metrics,
        train_s=train_s, device=device,
        optimizer="AdamW (no weight decay on gains, biases, embeddings, logit scale)",
        loss="symmetric contrastive (InfoNCE) with learned temperature, clamped at 100",
        data=("per batch: contrast_fraction of contrast groups (one scene varied in position, "
              "shape or size, captions naming it), the rest shapes train split (seed) mixed "
              "with shapes-spurious train split (spurious_fraction); generated on the fly, "
              "step s uses samples s*rest..(s+1)*rest-1"),
    )


def train_resnet(out, *, seed=0, steps=None, batch_size=None, lr=None, threads=None,
                 eval_n=None, config=None, quiet=False, device="cpu") -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    import interpcore
    from interpcore.progress import progress

    from . import evaluate, world
    from .datasets import ShapesDataset

    hp = dict(RESNET_DEFAULTS)
    for k, v in {"steps": steps, "batch_size": batch_size, "lr": lr, "eval_n": eval_n}.items():
        if v is not None:
            hp[k] = v
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)

    # the outputs are the world's colours and shapes (the shipped config lists them too)
    labels = list(world.COLORS) + list(world.SHAPES)
    if config is not None:
        config = dict(config if isinstance(config, dict) else _read_config(config), labels=labels)
    bb = interpcore.get_backbone("shapes:resnet", pretrained="random", config=config, device=device,
                                 dtype=torch.float32)
    if bb.classes != labels:
        from interpcore import InterpError

        raise InterpError(f"the shapes:resnet config's labels {bb.classes} are not the world's {labels}")
    model, cfg = bb.model, bb.config
    decay, no_decay = [], []
    for _n, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: one_cycle(s, hp["steps"], hp["warmup_fraction"]))
    ds = ShapesDataset("train", n=10**9, seed=seed)
    B = hp["batch_size"]
    t0 = time.time()
    model.train()
    losses = []
    for step in progress(range(hp["steps"]), desc="training resnet", unit="step"):
        images, _, samples = _batch(step, B, seed, 0.0, ds, ds)
        x = _pixels(bb, images)
        y = evaluate.resnet_targets(samples).to(device)
        # oneDNN's CPU convolution backward in torch 2.14 corrupts memory (double free,
        # segfault) on one thread for this small ResNet; the native kernels do not.
        mkldnn, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
        try:
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            torch.backends.mkldnn.enabled = mkldnn
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == hp["steps"] - 1:
            _log(f"resnet step {step}/{hp['steps']} loss {np.mean(losses[-100:]):.4f} "
                 f"{time.time() - t0:.0f}s", quiet)
    train_s = time.time() - t0
    model.eval()
    metrics = evaluate.resnet_accuracy(bb, n=hp["eval_n"], split="val")
    metrics["final_loss"] = float(np.mean(losses[-100:]))
    _log(f"resnet metrics (val): {json.dumps(metrics)}", quiet)
    return _save_run(
        out, model.cpu(), name="resnet", kind="resnet", seed=seed, hp=hp,
        cfg=cfg, metrics=metrics, train_s=train_s, device=device,
        optimizer="AdamW (no weight decay on norms and biases)",
        loss="binary cross-entropy, one sigmoid per colour and per shape",
        data="shapes train split (seed), 1-2 objects, generated on the fly",
    )


def _save_run(out, model, *, name, kind, seed, hp, cfg, metrics, train_s, optimizer, loss,
              data, device="cpu") -> dict:
    """Write a trained model's weights, config and JSON record (hyperparameters, versions,
    metrics) atomically into ``out``; return the record."""
    import torch

    weights = _save_state_dict(model, out / f"{name}.safetensors",
                               metadata={"model": f"shapes:{name}", "seed": seed})
    _write_json(out / f"{name}-config.json", cfg)
    record = {
        "model": f"shapes:{name}",
        "command": (f"python -m interp_shapes.train {kind} --out {out} --seed {seed}"
                    + ("" if str(device) == "cpu" else f" --device {device}")),
        "seed": seed,
        "hyperparameters": hp,
        "optimizer": optimizer,
        "schedule": "one-cycle: linear warm-up then cosine decay to 0, stepped per batch",
        "loss": loss,
        "data": data,
        "config": cfg,
        "train_seconds": round(train_s, 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "metrics": metrics,
        "weights": weights.name,
    }
    _write_json(out / f"{name}.json", record)
    return record


def _save_state_dict(model, path: Path, *, metadata=None) -> Path:
    """fp16 safetensors, written atomically (temporary file, then rename)."""
    from interpcore.cache import save_tensors

    sd = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
          for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, sd, metadata=metadata)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m interp_shapes.train",
                                description="Train a shapes-world model (CPU by default).")
    p.add_argument("model", choices=["clip", "resnet"])
    p.add_argument("--out", required=True, help="output folder for weights + JSON records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--eval-n", type=int, default=None, help="held-out images for the metrics")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    kw = dict(seed=a.seed, steps=a.steps, batch_size=a.batch_size, lr=a.lr, threads=a.threads,
              eval_n=a.eval_n, quiet=a.quiet, device=a.device)
    rec = train_clip(a.out, **kw) if a.model == "clip" else train_resnet(a.out, **kw)
    print(json.dumps(rec["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
