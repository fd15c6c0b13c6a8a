"""outside:cnn: a tiny CNN classifier written from scratch, randomly initialised (seed 1).

stem (32 x 32) -> layer1 (16 x 16) -> layer2 (8 x 8) -> pool (global average, 48 features)
-> fc (3 classes: the outside-shapes shapes). ``pool`` is the pooled layer before the
classifier (the default layer, and what encode_image returns); Grad-CAM targets ``layer2``.
"""

from __future__ import annotations

from torch import nn

import interpcore
from interpcore import Capability
from interpcore.torch_backbone import TorchBackbone

from .common import load_weights, seeded, transform

FEATURES = 48


def _stage(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout),
                         nn.ReLU())


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.stem = _stage(3, 16, 1)
        self.layer1 = _stage(16, 32, 2)
        self.layer2 = _stage(32, FEATURES, 2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(FEATURES, num_classes)

    def features(self, pixels):
        return self.pool(self.layer2(self.layer1(self.stem(pixels))))

    def forward(self, pixels):
        return self.fc(self.features(pixels))


class OutsideCNN(TorchBackbone):
    def _encode_image(self, pixels):
        return self.model.features(pixels)

    # the whole model, so that the classifier ``fc`` is a hookable layer too
    def _forward_for_features(self, pixels):
        return self.model(pixels)


def build_cnn(*, pretrained=None, device="auto", dtype=None, **options):
    if options:
        raise interpcore.InterpError(
            f"outside:cnn takes no options; got {', '.join(sorted(options))}.")
    net = seeded(TinyCNN, 1)
    load_weights(net, pretrained)
    return OutsideCNN(
        "outside:cnn", net, pretrained=pretrained, device=device, dtype=dtype,
        transform=transform, embed_dim=FEATURES,
        capabilities=[Capability.IMAGE_ENCODER, Capability.FEATURE_MAPS],
        default_layer="pool", gradcam_layers=["layer2"])
