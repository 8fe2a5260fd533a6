"""3D-R2N2 (Choy et al., ECCV 2016) in PyTorch: 2D CNN encoder, 3D convolutional LSTM/GRU, 3D decoder.

Views of one object are fed one at a time to the same encoder; each view's 1024-d feature updates a
4x4x4 grid of recurrent units (128 channels each) whose neighbours talk through a 3D convolution of
size 1 or 3; the decoder turns the final grid into 2 x 32^3 logits (voxel-wise softmax). The
``width`` multiplier scales every channel count (1.0 = the paper's size) for quick runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

SLOPE = 0.1  # LeakyReLU slope of the paper
ENCODER_CHANNELS = (96, 128, 256, 256, 256, 256)
GRID = 4


@dataclass(frozen=True)
class Variant:
    cell: str  # "lstm" | "gru" | "vector"
    kernel: int  # recurrent 3D convolution size
    residual: bool


VARIANTS: dict[str, Variant] = {
    "3d-lstm-1": Variant("lstm", 1, False),
    "3d-gru-1": Variant("gru", 1, False),
    "3d-lstm-3": Variant("lstm", 3, False),
    "3d-gru-3": Variant("gru", 3, False),
    "res3d-gru-3": Variant("gru", 3, True),
    "gru-vector": Variant("vector", 1, False),
}


def _scaled(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def _norm(channels: int, enabled: bool) -> nn.Module:
    """Batch normalization after an encoder convolution (not in the paper; ``batch_norm=True``) or nothing."""
    return nn.BatchNorm2d(channels) if enabled else nn.Identity()


class ConvBlock2d(nn.Module):
    """conv (-> conv, with a 1x1 shortcut when residual) -> max-pool -> LeakyReLU."""

    def __init__(self, inputs: int, outputs: int, kernel: int, residual: bool, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2)
        self.norm = _norm(outputs, batch_norm)
        self.residual = residual
        if residual:
            self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1)
            self.norm2 = _norm(outputs, batch_norm)
            self.shortcut = nn.Conv2d(inputs, outputs, 1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm(self.conv(x)), SLOPE)
        if self.residual:
            y = F.leaky_relu(self.norm2(self.conv2(y)), SLOPE) + self.shortcut(x)
        return F.leaky_relu(self.pool(y), SLOPE)


class Encoder(nn.Module):
    """127x127 RGB -> 1024-d feature (six conv stages halving the size, then a fully connected layer)."""

    def __init__(self, width: float = 1.0, residual: bool = False, image_size: int = 127, features: int = 1024,
                 batch_norm: bool = False) -> None:
        super().__init__()
        channels = [3] + [_scaled(c, width) for c in ENCODER_CHANNELS]
        kernels = [7] + [3] * 5
        self.blocks = nn.Sequential(*[
            ConvBlock2d(channels[i], channels[i + 1], kernels[i], residual and i > 0, batch_norm) for i in range(6)
        ])
        side = image_size
        for _ in range(6):
            side = (side + 1) // 2
        self.fc = nn.Linear(channels[-1] * side * side, _scaled(features, width))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.fc(self.blocks(images).flatten(1)), SLOPE)


class ConvRecurrent3d(nn.Module):
    """The 3D convolutional LSTM (no output gate, as in the paper) or GRU over a 4x4x4 grid."""

    def __init__(self, features: int, hidden: int, kernel: int, cell: str) -> None:
        super().__init__()
        self.cell, self.hidden = cell, hidden
        gates = 3  # lstm: input, forget, candidate; gru: update, reset, candidate
        self.from_input = nn.Linear(features, gates * hidden * GRID**3)
        self.from_hidden = nn.Conv3d(hidden, 2 * hidden, kernel, padding=kernel // 2, bias=False)
        self.candidate_hidden = nn.Conv3d(hidden, hidden, kernel, padding=kernel // 2, bias=False)

    def initial_state(self, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch, self.hidden, GRID, GRID, GRID, device=device)
        return zeros, zeros.clone()

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, memory = state
        a, b, c = self.from_input(x).view(x.shape[0], 3, self.hidden, GRID, GRID, GRID).unbind(1)
        ha, hb = self.from_hidden(hidden).chunk(2, dim=1)
        if self.cell == "lstm":
            input_gate, forget_gate = torch.sigmoid(a + ha), torch.sigmoid(b + hb)
            memory = forget_gate * memory + input_gate * torch.tanh(c + self.candidate_hidden(hidden))
            return torch.tanh(memory), memory
        update, reset = torch.sigmoid(a + ha), torch.sigmoid(b + hb)
        candidate = torch.tanh(c + self.candidate_hidden(reset * hidden))
        return (1 - update) * hidden + update * candidate, memory


class Decoder(nn.Module):
    """4^3 x hidden -> 2 x 32^3 logits: three unpool+conv stages, then two convs (residual optional)."""

    def __init__(self, hidden: int, width: float = 1.0, residual: bool = False) -> None:
        super().__init__()
        channels = [hidden, _scaled(128, width), _scaled(128, width), _scaled(64, width), _scaled(32, width)]
        self.up = nn.ModuleList(nn.Conv3d(channels[i], channels[i + 1], 3, padding=1) for i in range(3))
        self.shortcuts = nn.ModuleList(
            nn.Conv3d(channels[i], channels[i + 1], 1) if residual else nn.Identity() for i in range(3)
        )
        self.residual = residual
        self.conv = nn.Conv3d(channels[3], channels[4], 3, padding=1)
        self.out = nn.Conv3d(channels[4], 2, 3, padding=1)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        x = grid
        for conv, shortcut in zip(self.up, self.shortcuts):
            x = F.interpolate(x, scale_factor=2, mode="nearest")  # unpooling
            y = F.leaky_relu(conv(x), SLOPE)
            x = y + shortcut(x) if self.residual else y
        return self.out(F.leaky_relu(self.conv(x), SLOPE))


class R2N2(nn.Module):
    """A named 3D-R2N2 variant; ``forward(images (B, V, 3, H, W)) -> logits``.

    ``batch_norm`` adds batch normalization after the encoder's convolutions (not in the paper). The
    views are rendered over a nearly uniform light background that fills most of the image, so
    without it the encoder's features barely differ between images early on and small runs stall at
    the occupancy prior. It stays out of the decoder on purpose: there the batch statistics depend on
    how many views the recurrent grid has seen (1..5, one count per batch), and running averages over
    mixed counts disagreed with the training-mode output (measured: IoU 0.96 in training mode, 0.58 in
    eval mode on the same objects). Views of another size than ``image_size`` are resized first.

    Logits are (B, 2, 32, 32, 32) for the recurrent-grid variants (softmax over the 2 channels) and
    (B, 1, 32, 32, 32) for ``gru-vector`` (sigmoid). Use :meth:`loss` and :meth:`occupancy` rather than
    interpreting the logits by hand.
    """

    def __init__(self, arch: str = "res3d-gru-3", width: float = 1.0, image_size: int = 127,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if arch not in VARIANTS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(VARIANTS)}")
        self.arch, self.variant = arch, VARIANTS[arch]
        self.encoder = Encoder(width, self.variant.residual, image_size, batch_norm=batch_norm)
        features = self.encoder.fc.out_features
        if self.variant.cell == "vector":
            self.rnn = nn.GRUCell(features, _scaled(128, width))
            self.to_grid = nn.Linear(self.rnn.hidden_size, 16 * 8**3)
            self.decoder = nn.Conv3d(16, 1, 3, padding=1)
        else:
            hidden = _scaled(128, width)
            self.rnn = ConvRecurrent3d(features, hidden, self.variant.kernel, self.variant.cell)
            self.decoder = Decoder(hidden, width, self.variant.residual)
        self.image_size = image_size
        msra_init(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, views = images.shape[:2]
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = resize_views(images, self.image_size)
        features = self.encoder(images.flatten(0, 1)).view(batch, views, -1)
        if self.variant.cell == "vector":
            hidden = features.new_zeros(batch, self.rnn.hidden_size)
            for view in range(views):
                hidden = self.rnn(features[:, view], hidden)
            grid = self.to_grid(hidden).view(batch, 16, 8, 8, 8)
            return self.decoder(F.interpolate(grid, scale_factor=4, mode="trilinear", align_corners=False))
        state = self.rnn.initial_state(batch, images.device)
        for view in range(views):
            state = self.rnn(features[:, view], state)
        return self.decoder(state[0])

    def loss(self, logits: torch.Tensor, voxels: torch.Tensor, foreground_weight: float = 1.0) -> torch.Tensor:
        """Voxel-wise softmax cross-entropy (sigmoid + BCE for ``gru-vector``).

        ``foreground_weight`` > 1 weighs occupied voxels more (they are 3-15% of a 32^3 grid); 1.0 is
        the paper's unweighted loss.
        """
        logits = logits.float()
        if self.variant.cell == "vector":
            weight = None if foreground_weight == 1.0 else 1.0 + (foreground_weight - 1.0) * voxels.float()
            return F.binary_cross_entropy_with_logits(logits[:, 0], voxels.float(), weight=weight)
        weight = None if foreground_weight == 1.0 else logits.new_tensor([1.0, foreground_weight])
        return F.cross_entropy(logits, voxels.long(), weight=weight)

    def occupancy(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability (B, 32, 32, 32) that each voxel is occupied."""
        if self.variant.cell == "vector":
            return torch.sigmoid(logits[:, 0])
        return torch.softmax(logits.float(), dim=1)[:, 1]


def msra_init(model: nn.Module) -> None:
    """Gaussian weights with std sqrt(2 / mean(fan_in, fan_out)) and zero biases, as the released 3D-R2N2.

    PyTorch's default (uniform, a third of this variance) shrinks activations about 2x per layer
    here: at the start the encoder's output differed between images by 1e-4 of its scale (0.07 with
    this init). This alone did not make small CPU runs learn in a few hundred steps; ``batch_norm`` did.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            receptive = module.weight[0, 0].numel()
            fan_in, fan_out = module.weight.shape[1] * receptive, module.weight.shape[0] * receptive
            nn.init.normal_(module.weight, 0.0, (2.0 / ((fan_in + fan_out) / 2)) ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def resize_views(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, V, 3, H, W) -> (B, V, 3, size, size), area-averaged (a model built for smaller inputs)."""
    batch, views = images.shape[:2]
    resized = F.interpolate(images.flatten(0, 1), size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False)
    return resized.view(batch, views, *resized.shape[1:])


def voxel_iou(probabilities: torch.Tensor, voxels: torch.Tensor, threshold: float = 0.4) -> torch.Tensor:
    """Per-object IoU of ``probabilities > threshold`` against the ground truth (3D-R2N2 reports 0.4)."""
    predicted = probabilities > threshold
    truth = voxels.bool()
    intersection = (predicted & truth).flatten(1).sum(1).float()
    union = (predicted | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
