"""A 3D-ReConstNet-style single-view point-cloud network, in plain PyTorch.

Image -> ResNet-50 features (bottleneck blocks 3-4-6-3, written here: no torchvision, no downloaded
weights) -> a 100-d Gaussian latent (mean and log-variance heads; a reparameterized sample while
training, the mean when evaluating) -> MLP 512 -> 1024 -> N x 3 with a tanh output, so predicted
coordinates lie in (-1, 1) (the object frame's unit-diagonal box lies within [-0.5, 0.5]^3).

``width`` scales every channel count (1.0 = the real ResNet-50: 23.5 M parameters in the encoder);
smaller widths make CPU tests and smoke runs cheap.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

RESNET50_BLOCKS = (3, 4, 6, 3)


def _channels(count: int, width: float) -> int:
    return max(4, int(round(count * width)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision's "ResNet v1.5"), 1x1 expand x4, identity shortcut."""

    expansion = 4

    def __init__(self, inputs: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        outputs = planes * self.expansion
        self.conv1 = nn.Conv2d(inputs, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, outputs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outputs)
        nn.init.zeros_(self.bn3.weight)  # each block starts as the identity: deep nets train from step one
        self.shortcut = nn.Identity() if stride == 1 and inputs == outputs else nn.Sequential(
            nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        return F.relu(self.bn3(self.conv3(y)) + self.shortcut(x), inplace=True)


class ResNet50Encoder(nn.Module):
    """ResNet-50 without its classifier: (B, 3, H, W) in [0, 1] -> (B, 2048 x width) pooled features."""

    def __init__(self, width: float = 1.0, blocks: tuple[int, ...] = RESNET50_BLOCKS) -> None:
        super().__init__()
        stem = _channels(64, width)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        layers, inputs = [], stem
        for stage, count in enumerate(blocks):
            planes = _channels(64 * 2 ** stage, width)
            for index in range(count):
                layers.append(Bottleneck(inputs, planes, stride=2 if index == 0 and stage > 0 else 1))
                inputs = planes * Bottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.features = inputs
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem((images - self.mean) / self.std))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class ReconstNet(nn.Module):
    """Single image -> N x 3 points, through a reparameterized Gaussian latent."""

    def __init__(self, points: int = 1024, width: float = 1.0, latent: int = 100,
                 hidden: tuple[int, int] = (512, 1024)) -> None:
        super().__init__()
        self.points = points
        self.encoder = ResNet50Encoder(width)
        self.mean_head = nn.Linear(self.encoder.features, latent)
        self.log_variance_head = nn.Linear(self.encoder.features, latent)
        nn.init.zeros_(self.log_variance_head.weight)
        nn.init.constant_(self.log_variance_head.bias, -4.0)  # start nearly deterministic (std 0.14)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden[0]), nn.ReLU(inplace=True),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True),
            nn.Linear(hidden[1], points * 3),
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of the latent for (B, 3, H, W) images in [0, 1]."""
        features = self.encoder(images)
        return self.mean_head(features), self.log_variance_head(features).clamp(-20.0, 10.0)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(latent)).view(latent.shape[0], self.points, 3)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``points`` (B, N, 3) plus the latent's ``mean`` and ``log_variance`` (for the KL term)."""
        mean, log_variance = self.encode(images)
        latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance) if self.training else mean
        return {"points": self.decode(latent), "mean": mean, "log_variance": log_variance}


def kl_divergence(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, var) || N(0, I)) per sample, summed over latent dimensions: (B,)."""
    return 0.5 * (mean.pow(2) + log_variance.exp() - 1.0 - log_variance).sum(dim=1)
