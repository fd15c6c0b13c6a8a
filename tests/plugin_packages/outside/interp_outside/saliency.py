"""outside-saliency: gradient saliency through the public backbone API only.

``backbone.to_pixels(images)`` then ``backbone.forward(pixels)`` (autograd on), as
docs/plugins.md ("Methods") says; the gradient of one embedding dimension (or, with
``target=None``, of the embedding's norm) with respect to the pixels, max over channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

import interpcore
from interpcore import Capability, Explainer, Result


@dataclass
class SaliencyResult(Result):
    backbone: str
    target: Any
    maps: Any                                   # (N, H, W) float32 tensor, on the CPU
    inputs: list = field(default_factory=list)

    def __str__(self) -> str:
        what = "|embedding|" if self.target is None else f"embedding[{self.target}]"
        lines = [f"Gradient saliency of {what} on {self.backbone}:"]
        for i, m in enumerate(self.maps):
            name = self.inputs[i] if i < len(self.inputs) else f"image {i}"
            flat = int(m.argmax())
            lines.append(f"\t{name}\tmax {float(m.max()):.4g} at (row {flat // m.shape[1]}, "
                         f"col {flat % m.shape[1]})\tmean {float(m.mean()):.4g}")
        return "\n".join(lines)


def _describe(images) -> list:
    if isinstance(images, (str, bytes)) or not isinstance(images, (list, tuple)):
        images = [images]
    return [str(im) if isinstance(im, str) or hasattr(im, "__fspath__") else type(im).__name__
            for im in images]


class OutsideSaliency(Explainer):
    name = "outside-saliency"
    requires = (Capability.IMAGE_ENCODER,)

    def __init__(self, backbone=None, *, target: int | None = None):
        if backbone is None:                    # docs: None when the user named no backbone
            backbone = interpcore.default_backbone("vision-language")
        if isinstance(backbone, str):
            backbone = interpcore.get_backbone(backbone)
        super().__init__(backbone)
        self.target = target

    def explain(self, images, *, target: int | None = ...):
        target = self.target if target is ... else target
        bb = self.backbone
        if target is not None and not 0 <= int(target) < bb.embed_dim:
            raise interpcore.InterpError(
                f"target must be an embedding dimension of {bb.name}, 0 to {bb.embed_dim - 1}; "
                f"got {target}.")
        x = bb.to_pixels(images).clone().requires_grad_(True)
        out = bb.forward(x)
        score = out.norm(dim=1) if target is None else out[:, int(target)]
        # autograd.grad, not backward(): leaves no .grad on the model's parameters
        (grad,) = torch.autograd.grad(score.sum(), x)
        maps = grad.detach().abs().amax(dim=1).float().cpu()
        return SaliencyResult(backbone=bb.name, target=target, maps=maps,
                              inputs=_describe(images))
