"""The torch side of the example plugin."""

from __future__ import annotations

import dataclasses

import torch

from interpcore import Capability, Explainer, Result
from interpcore.torch_backbone import TorchBackbone


class _Histogram(torch.nn.Module):
    def __init__(self, bins: int):
        super().__init__()
        self.bins = bins

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) in [0, 1]
        q = (pixels.clamp(0, 1) * (self.bins - 1)).round().long()
        index = (q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2]  # (N, H, W)
        hist = torch.zeros(pixels.shape[0], self.bins**3, device=pixels.device)
        hist.scatter_add_(1, index.flatten(1), torch.ones_like(index.flatten(1), dtype=hist.dtype))
        return hist / index[0].numel()


class ColorHistogramBackbone(TorchBackbone):
    def __init__(self, name: str, bins: int, device="auto", dtype=None):
        from torchvision.transforms import functional as TF

        super().__init__(
            name, _Histogram(bins), device=device, dtype=dtype,
            transform=lambda im: TF.to_tensor(im.resize((32, 32))),
            embed_dim=bins**3, capabilities=[Capability.IMAGE_ENCODER],
        )

    def _encode_image(self, pixels):
        return self.model(pixels)


@dataclasses.dataclass
class OcclusionResult(Result):
    heatmap: list  # (grid, grid): 1 - cosine(embedding, embedding with the patch occluded)
    grid: int

    def __str__(self):
        rows = [" ".join(f"{v:.3f}" for v in row) for row in self.heatmap]
        return f"occlusion sensitivity ({self.grid}x{self.grid} patches):\n" + "\n".join(rows)


class OcclusionExplainer(Explainer):
    name = "occlusion"
    requires = (Capability.IMAGE_ENCODER,)

    def __init__(self, backbone, grid: int = 4, **options):
        super().__init__(backbone, **options)
        self.grid = grid

    @torch.no_grad()
    def explain(self, image, **kwargs) -> OcclusionResult:
        pixels = self.backbone.to_pixels(image)[:1]
        base = self.backbone.encode_image(pixels, normalize=True)
        _, _, h, w = pixels.shape
        ph, pw = h // self.grid, w // self.grid
        variants = []
        for i in range(self.grid):
            for j in range(self.grid):
                p = pixels.clone()
                p[:, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] = 0.5
                variants.append(p)
        emb = self.backbone.encode_image(torch.cat(variants), normalize=True)
        drop = (1 - emb @ base[0]).reshape(self.grid, self.grid)
        return OcclusionResult(drop.tolist(), self.grid)
