"""A third-party-style plugin for the engine tests, registered in-process (and in Ray workers
through ``JobSpec.plugins``): a tiny deterministic image encoder, two toy decomposers and a
toy dataset. Nothing here is imported by the project itself.

Environment switches read by the decomposers (forwarded to Ray workers because they start
with ``INTERP_``): ``INTERP_TEST_SLEEP`` seconds to sleep per batch, and
``INTERP_TEST_FAIL_AFTER`` = k makes each worker process fail on its (k+1)-th batch.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import interpcore

#: A tiny open_clip config the engine tests build random CLIPs from.
TINY_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 48, "layers": 2,
                   "head_width": 12, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4,
                 "layers": 1},
}

EMBED_DIM = 8
_calls = {"n": 0}


def _load_toy(model, *, pretrained=None, device="auto", dtype=None, **options):
    import torch
    from torchvision import transforms

    from interpcore.torch_backbone import TorchBackbone

    if model != "tiny":
        raise interpcore.get_registry().unknown_model("enginetoy", model)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(1234)
            self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)
            self.fc = torch.nn.Linear(6 * 7 * 7, EMBED_DIM)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    class ToyBackbone(TorchBackbone):
        def _encode_image(self, pixels):
            return self.model(pixels)

    tf = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    return ToyBackbone(f"enginetoy:{model}", Tiny(), pretrained=pretrained, device=device,
                       dtype=dtype, transform=tf, embed_dim=EMBED_DIM,
                       capabilities=[interpcore.Capability.IMAGE_ENCODER])


@dataclasses.dataclass
class ToyResult(interpcore.Result):
    """Shaped like SpLiCE's: per-image weights, L0 and cosine, plus a batch-level mean."""

    weights: object
    l0: object
    cosine: object
    mean_l0: float
    concepts: list


def _maybe_fail_or_sleep():
    _calls["n"] += 1
    fail_after = os.environ.get("INTERP_TEST_FAIL_AFTER")
    if fail_after and _calls["n"] > int(fail_after):
        raise interpcore.InterpError(f"toy failure injected on call {_calls['n']}")
    sleep = float(os.environ.get("INTERP_TEST_SLEEP", "0") or 0)
    if sleep:
        time.sleep(sleep)


class ToySparse(interpcore.Decomposer):
    """weights = relu(z - threshold): a sparse nonnegative 'decomposition' of the embedding."""

    name = "toy_sparse"
    requires = (interpcore.Capability.IMAGE_ENCODER,)

    def decompose(self, inputs, **kwargs):
        import torch

        _maybe_fail_or_sleep()
        z = self.backbone.encode_image(inputs)
        w = torch.relu(z - float(self.options.get("threshold", 0.1)))
        l0 = (w > 0).sum(dim=1)
        cos = torch.nn.functional.cosine_similarity(w + 1e-12, z, dim=1)
        return ToyResult(w, l0, cos, float(l0.float().mean()), [f"c{i}" for i in range(EMBED_DIM)])


class ToyContrib:
    """A result with its own to_arrays(): per-image (parts, dim) contributions."""

    def __init__(self, contributions, total):
        self.contributions, self.total = contributions, total

    def to_arrays(self):
        return {"contributions": self.contributions, "embedding": self.total}


class ToyParts(interpcore.Decomposer):
    """Splits the embedding into its per-channel parts: contributions sum to the embedding."""

    name = "toy_parts"
    requires = (interpcore.Capability.IMAGE_ENCODER,)

    def decompose(self, inputs, **kwargs):
        import torch

        _maybe_fail_or_sleep()
        z = self.backbone.encode_image(inputs)
        parts = torch.diag_embed(z)  # (N, dim, dim): part k carries channel k
        return ToyContrib(parts, z)


#: while this file exists, reading a toy sample with index >= its number fails (the tests
#: use it to break a job half way without changing the job spec or the workers' environment)
FAIL_MARKER = Path(tempfile.gettempdir()) / f"interp-engine-toy-fail-{os.getuid()}"


class ToyDataset(interpcore.Dataset):
    name = "enginetoy"
    classes = ["a", "b", "c"]

    def __init__(self, split="test", n=96, size=20):
        self.n, self.size, self.split = int(n), int(size), split

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import numpy as np
        from PIL import Image

        if not 0 <= i < self.n:
            raise IndexError(i)
        if FAIL_MARKER.exists() and i >= int(FAIL_MARKER.read_text()):
            raise interpcore.InterpError(f"toy read failure injected at sample {i}")
        rng = np.random.default_rng(10_000 + i)
        arr = rng.integers(0, 256, size=(self.size, self.size, 3), dtype=np.uint8)
        return {"image": Image.fromarray(arr), "label": i % 3, "index": i}


@interpcore.hookimpl
def register_backbones(register):
    register("enginetoy", _load_toy, list_models=lambda: ["tiny"], description="engine test model")


@interpcore.hookimpl
def register_decomposers(register):
    register("toy_sparse", ToySparse, requires=ToySparse.requires, description="engine test")
    register("toy_parts", ToyParts, requires=ToyParts.requires, description="engine test")


@interpcore.hookimpl
def register_datasets(register):
    register("enginetoy", ToyDataset, description="engine test images")


def adapter_weights_only(result, n):
    """An adapter named in a job spec: keep only the weights, renamed."""
    return {"w": result.weights}
