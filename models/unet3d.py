"""The 3D U-Net baseline of Lee, Jeong & Yang (2021), Nat. Commun. 12, 1962.

"Deep learning augmented atomic electron tomography" refines a whole reconstructed tomogram with
a small 3D U-Net trained by a voxel-wise mean squared error against the ideal volume: two
down-sampling and two up-sampling levels, 12 channels at full resolution, batch normalisation,
LeakyReLU (slope 0.2), dropout 0.2 and a ReLU output (densities are non-negative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet3D"]


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, negative_slope: float, dropout: float):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.LeakyReLU(negative_slope),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.LeakyReLU(negative_slope),
            nn.Dropout(dropout),
        )


class UNet3D(nn.Module):
    """3D U-Net of Lee, Jeong & Yang (2021) for AET volume refinement (the ``unet3d`` baseline).

    Each level is two 3×3×3 convolutions with batch norm and LeakyReLU, followed by dropout;
    max-pooling goes down, 2×2×2 transposed convolutions go up, skips are concatenated; a 1×1×1
    convolution and a ReLU give the output. Train it with :meth:`loss` (mean squared error).
    Sides that are not multiples of :attr:`size_divisor` are zero-padded at the high end
    internally and the output is cropped back.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        base_channels: Channels at full resolution (12 in the paper).
        levels: Down-sampling steps (2 in the paper).
        negative_slope: LeakyReLU slope (0.2).
        dropout: Dropout probability after each double convolution (0.2).
        positive: Apply the ReLU to the output (as the paper).

    Shapes:
        input (B, in_channels, D, H, W) -> output (B, out_channels, D, H, W).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 12,
        levels: int = 2,
        negative_slope: float = 0.2,
        dropout: float = 0.2,
        positive: bool = True,
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("base_channels", base_channels),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not isinstance(levels, int) or levels < 0:
            raise ValueError(f"levels={levels!r}: expected a non-negative integer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r}: expected a probability in [0, 1)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.base_channels, self.levels = base_channels, levels
        self.negative_slope, self.dropout, self.positive = negative_slope, dropout, positive
        ch = [base_channels * 2**i for i in range(levels + 1)]
        self.encoder = nn.ModuleList(
            _DoubleConv(in_channels if i == 0 else ch[i - 1], ch[i], negative_slope, dropout)
            for i in range(levels + 1)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(ch[i], ch[i - 1], 2, stride=2) for i in range(levels, 0, -1)
        )
        self.decoder = nn.ModuleList(
            _DoubleConv(2 * ch[i - 1], ch[i - 1], negative_slope, dropout)
            for i in range(levels, 0, -1)
        )
        self.head = nn.Conv3d(ch[0], out_channels, 1)
        self.reset_parameters()

    @property
    def size_divisor(self) -> int:
        """Input sides that are multiples of this need no internal padding."""
        return 2**self.levels

    def reset_parameters(self) -> None:
        """Kaiming initialisation for the LeakyReLU; unit/zero batch-norm affine parameters."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=self.negative_slope, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                m.reset_parameters()

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}(in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"base_channels={self.base_channels}, levels={self.levels}, dropout={self.dropout}, params={n:,})"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Refine a volume.

        Args:
            x: (B, in_channels, D, H, W).

        Returns:
            (B, out_channels, D, H, W), non-negative when ``positive``.
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"x.shape={tuple(x.shape)}: expected (B, {self.in_channels}, D, H, W)")
        size = x.shape[-3:]
        pad = [(-n) % self.size_divisor for n in size]
        h = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0])) if any(pad) else x
        skips = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                h = F.max_pool3d(h, 2)
            h = block(h)
            skips.append(h)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            h = block(torch.cat([up(h), skip], dim=1))
        out = self.head(h)[..., : size[0], : size[1], : size[2]]
        return F.relu(out) if self.positive else out

    @staticmethod
    def loss(prediction: Tensor, target: Tensor) -> Tensor:
        """Mean squared error, the training loss of Lee, Jeong & Yang (2021)."""
        return F.mse_loss(prediction, target)
