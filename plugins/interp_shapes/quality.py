"""The quality table of the shapes-world models (imports torch)."""

from __future__ import annotations


def measure(n: int = 1000, split: str = "test", device: str = "cpu", clip=None, resnet=None) -> dict:
    """Zero-shot attribute accuracy and shapes-spurious groups of ``shapes:clip-vit`` and
    the accuracy of ``shapes:resnet`` on ``n`` held-out images of ``split`` each."""
    import interpcore

    from . import evaluate

    clip_bb = interpcore.get_backbone("shapes:clip-vit", pretrained=clip, device=device)
    res_bb = interpcore.get_backbone("shapes:resnet", pretrained=resnet, device=device)
    zs = evaluate.clip_attribute_accuracy(clip_bb, n=n, split=split)
    sp = evaluate.clip_spurious_accuracy(clip_bb, n=n, split=split)
    rn = evaluate.resnet_accuracy(res_bb, n=n, split=split)
    return {
        "split": split,
        "n": n,
        "clip": {"backbone": clip_bb.name, "weights": clip_bb.pretrained, "zero_shot": zs},
        "spurious": sp,
        "resnet": {"backbone": res_bb.name, "weights": res_bb.pretrained, **rn},
        "thresholds": dict(evaluate.THRESHOLDS),
    }


def format_table(result: dict) -> str:
    from .evaluate import ATTRIBUTE_ORDER, THRESHOLDS

    lines = [f"shapes world quality on {result['n']} held-out {result['split']} images per row",
             "", f"{'model / task':<44} {'accuracy':>9} {'threshold':>10}  ok"]

    def row(label, value, thr=None):
        ok = "" if thr is None else ("yes" if value >= thr else "NO")
        t = "" if thr is None else f"{thr:.0%}"
        lines.append(f"{label:<44} {value:>9.1%} {t:>10}  {ok}")

    for attr in ATTRIBUTE_ORDER:
        row(f"shapes:clip-vit zero-shot {attr}", result["clip"]["zero_shot"][attr], THRESHOLDS.get(attr))
    row("shapes:resnet colours+shapes (exact match)", result["resnet"]["exact_match"], THRESHOLDS["resnet"])
    row("shapes:resnet per-label", result["resnet"]["per_label"])
    lines.append("")
    lines.append("shapes-spurious zero-shot circle vs hexagon (balanced test groups):")
    for name, acc in result["spurious"]["per_group"].items():
        row(f"  {name}", acc)
    row("  average", result["spurious"]["average"])
    row("  worst group", result["spurious"]["worst_group"])
    gap = result["spurious"]["average"] - result["spurious"]["worst_group"]
    lines.append(f"  gap (average - worst group): {gap * 100:.1f} points")
    return "\n".join(lines)
