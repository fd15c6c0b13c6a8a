"""Shapes world speed: image generation, model throughput, and the projected training time.

Targets (issue 4): the training command retrains the CLIP in at most an hour on 2 CPU cores;
generation must be far cheaper than a training step (images are generated on the fly).

The training time is projected from a few timed steps of the recorded recipe (same model,
batch size and data path) times the recipe's number of steps; the recorded wall time of the
shipped weights is reported next to it. Inference is timed on the shipped weights where they
exist, else on untrained models of the same architecture (same cost).

Run: ``python bench/bench_shapes.py`` (prints the markdown section ``main()`` returns).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

THREADS = 2


def _time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> str:
    import torch

    from interp_shapes.datasets import ShapesDataset, SpuriousShapesDataset
    from interp_shapes import train
    from interp_shapes_models import models

    torch.set_num_threads(THREADS)
    rows = []

    ds = ShapesDataset("train", n=10**6)
    n_gen = 500
    t = _time(lambda: [ds[i] for i in range(n_gen)], repeat=2)
    rows.append(("generate shapes images (image + mask + caption)", f"{n_gen / t:,.0f} img/s", "> 1,000 img/s"))

    clip = models.build_clip().eval()
    tok = models.clip_tokenizer()
    note = "untrained (same architecture)"
    if models.CLIP_WEIGHTS.exists():
        state = models.load_state_dict(models.CLIP_WEIGHTS)
        clip.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        note = "shipped weights"
    images, captions, samples = train._batch(0, 256, 0, 0.2, ds, ds)
    x = models.pixels_from_uint8(images)
    with torch.no_grad():
        t_img = _time(lambda: clip.encode_image(x))
        t_txt = _time(lambda: clip.encode_text(tok(captions)))
    rows.append((f"shapes:clip-vit encode_image, batch 256 ({note})", f"{256 / t_img:,.0f} img/s", ""))
    rows.append((f"shapes:clip-vit encode_text, batch 256 ({note})", f"{256 / t_txt:,.0f} texts/s", ""))

    resnet = models.build_resnet().eval()
    with torch.no_grad():
        t_res = _time(lambda: resnet(x))
    rows.append(("shapes:resnet forward, batch 256", f"{256 / t_res:,.0f} img/s", ""))

    # projected training time of the recipe: a few real steps (data generation included)
    hp = train.CLIP_DEFAULTS
    model = models.build_clip()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B = hp["batch_size"]

    spur = SpuriousShapesDataset("train", n=10**6)

    def step(s):
        imgs, caps = train._clip_batch(s, B, 0, hp["spurious_fraction"], hp["contrast_fraction"],
                                       ds, spur, hp["contrast_groups"])
        fi, ft, scale = model(models.pixels_from_uint8(imgs), tok(caps))
        logits = scale * fi @ ft.T
        lab = torch.arange(B)
        loss = 0.5 * (torch.nn.functional.cross_entropy(logits, lab)
                      + torch.nn.functional.cross_entropy(logits.T, lab))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(0)
    n_steps = 5
    t0 = time.perf_counter()
    for s in range(1, n_steps + 1):
        step(s)
    per_step = (time.perf_counter() - t0) / n_steps
    projected = per_step * hp["steps"] / 60
    rows.append((f"CLIP training step (batch {B}, data included)", f"{per_step:.2f} s", ""))
    rows.append((f"CLIP training, projected for {hp['steps']} steps", f"{projected:.0f} min", "<= 60 min"))
    def recorded(rec):
        where = (f"{rec.get('threads')} CPU threads" if rec.get("device", "cpu") == "cpu"
                 else f"on {rec['device']}")
        return f"{rec['train_seconds'] / 60:.0f} min ({where})"

    if models.CLIP_RECORD.exists():
        rec = json.loads(models.CLIP_RECORD.read_text())
        rows.append(("CLIP training, recorded for the shipped weights", recorded(rec), ""))
    repro = Path(__file__).resolve().parent.parent / "docs" / "records" / "clip-vit-cpu-reproduction.json"
    if repro.exists():
        rec = json.loads(repro.read_text())
        rows.append(("CLIP training, recorded CPU reproduction of the recipe (docs/records)",
                     recorded(rec), "<= 60 min"))
    if models.RESNET_RECORD.exists():
        rec = json.loads(models.RESNET_RECORD.read_text())
        rows.append(("ResNet training, recorded for the shipped weights", recorded(rec), ""))

    out = ["## Shapes world", "",
           f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
           f"{THREADS} threads. Numbers vary with machine load.", "",
           "| measurement | value | target |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(main())
