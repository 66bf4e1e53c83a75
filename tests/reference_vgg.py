"""A hand-written torchvision-layout VGG (features / avgpool / classifier), for tests
and benchmarks; written here so that torchvision is never a dependency."""

from __future__ import annotations

from torch import nn

# Conv widths per config; "M" is a max-pool (torchvision's vgg11/13/16/19 = A/B/D/E).
CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


class ReferenceVGG(nn.Module):
    def __init__(self, config: str, num_classes: int = 1000, batch_norm: bool = False):
        super().__init__()
        layers, channels = [], 3
        for item in CONFIGS[config]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.Conv2d(channels, item, 3, padding=1))
                if batch_norm:  # torchvision's vgg*_bn: conv, BatchNorm2d, ReLU
                    layers.append(nn.BatchNorm2d(item))
                layers.append(nn.ReLU(inplace=True))
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
