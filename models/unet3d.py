"""3D U-Nets for the ``unet3d`` baseline: Lee, Jeong & Yang (2021), Nat. Commun. 12, 1962.

"Single-atom level determination of 3-dimensional surface atomic structure via neural
network-assisted atomic electron tomography" refines a whole GENFIRE tomogram with a small 3D
U-Net trained by a voxel-wise mean squared error against the ideal volume.

:class:`Lee2021UNet3D` is the published network, built from the facts of the authors' public
repository (MDAIL-KAIST/DL-augmentation, ``DL_aug.py``): 12 base filters with 24/48/96
channels; the input is downsampled by 16 (a stride-2 convolution, 2× max pooling, a stride-2
convolution, 2× max pooling); batch norm, LeakyReLU 0.2, channel dropout 0.2 after the first
encoder block, the bottleneck and the last decoder block; 3×3×3 stride-2 transposed
convolutions on the way up (the last one is the output layer) and a ReLU output. It was trained
at 0.357 Å voxels on 144³ GENFIRE reconstructions from 21 tilts over ±65° (``DLDGen_main.m``).
:func:`from_published_state` loads the published weight files (plain torch state dicts).

:class:`UNet3D` is this suite's earlier variant (two max-pooling levels of double convolutions,
12 channels at full resolution); the shipped ``unet3d.pt`` of before the faithful network uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "UNet3D",
    "Lee2021UNet3D",
    "build_unet3d",
    "from_published_state",
    "PUBLISHED_SAMPLING",
    "PUBLISHED_INPUT_SCALE",
]

#: Voxel size (Å) of the published network's training data.
PUBLISHED_SAMPLING = 0.357
#: Factor the authors' ``run_DL_augmentation_Pt.py`` applies to a normalised input (Bf5 weights;
#: 8 for the Bf3.2 weights).
PUBLISHED_INPUT_SCALE = 13.0


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


class _Stage(nn.Module):
    """(Transposed) 3×3×3 convolution, optional batch norm, optional channel dropout, activation."""

    def __init__(self, conv: nn.Module, out_channels, act: nn.Module, dropout=0.0, norm=True):
        super().__init__()
        self.conv = conv
        self.norm = nn.BatchNorm3d(out_channels) if norm else nn.Identity()
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(self.norm(self.conv(x))))


def _down(cin, cout, stride, slope, dropout=0.0):
    conv = nn.Conv3d(cin, cout, 3, stride=stride, padding=1)
    return _Stage(conv, cout, nn.LeakyReLU(slope), dropout)


def _up(cin, cout, act, norm=True):
    conv = nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1)
    return _Stage(conv, cout, act, norm=norm)


class Lee2021UNet3D(nn.Module):
    """The 3D U-Net of Lee, Jeong & Yang (2021) as published (``DL_aug.py`` of the authors).

    Encoder: stride-2 conv (1→2f, dropout) · max-pool 2 · stride-2 conv (2f→4f) · max-pool 2 ·
    conv (4f→8f, dropout) at 1/16 resolution. Decoder: transposed conv (8f→8f, ×2) · concat with
    the 4f features at 1/8 · conv (12f→4f) · transposed conv (4f→4f, ×2) · transposed conv
    (4f→4f, ×2) · concat with the 2f features at 1/2 · conv (6f→2f, dropout) · transposed conv
    (2f→out, ×2) and ReLU. Every stage but the last has batch norm and LeakyReLU. Sides that are
    not multiples of 16 are zero-padded at the high end internally and cropped back.

    Args:
        in_channels: Input channels (1).
        out_channels: Output channels (1).
        num_filter: Base filters ``f`` (12 in the paper: 24/48/96 channels).
        negative_slope: LeakyReLU slope (0.2).
        dropout: Channel-dropout probability (0.2).

    Shapes:
        input (B, in_channels, D, H, W) -> output (B, out_channels, D, H, W), non-negative.
    """

    size_divisor = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        num_filter: int = 12,
        negative_slope: float = 0.2,
        dropout: float = 0.2,
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("num_filter", num_filter),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r}: expected a probability in [0, 1)")
        f, a = num_filter, negative_slope
        self.in_channels, self.out_channels, self.num_filter = in_channels, out_channels, f
        self.negative_slope, self.dropout = negative_slope, dropout
        self.enc1 = _down(in_channels, 2 * f, 2, a, dropout)
        self.enc2 = _down(2 * f, 4 * f, 2, a)
        self.bottom = _down(4 * f, 8 * f, 1, a, dropout)
        self.up1 = _up(8 * f, 8 * f, nn.LeakyReLU(a))
        self.dec1 = _down(12 * f, 4 * f, 1, a)
        self.up2a = _up(4 * f, 4 * f, nn.LeakyReLU(a))
        self.up2b = _up(4 * f, 4 * f, nn.LeakyReLU(a))
        self.dec2 = _down(6 * f, 2 * f, 1, a, dropout)
        self.head = _up(2 * f, out_channels, nn.ReLU(), norm=False)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (
            f"{type(self).__name__}(in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"num_filter={self.num_filter}, dropout={self.dropout}, params={n:,})"
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            # plain concatenation: the network stays scriptable (torch.jit.script)
            raise ValueError(
                "x.shape="
                + str(list(x.shape))
                + ": expected (B, "
                + str(self.in_channels)
                + ", D, H, W)"
            )
        size = x.shape[-3:]
        pad = [(16 - n % 16) % 16 for n in size]  # size_divisor (a literal for TorchScript)
        h = F.pad(x, [0, pad[2], 0, pad[1], 0, pad[0]])
        e1 = self.enc1(h)  # 1/2
        e2 = self.enc2(F.max_pool3d(e1, 2))  # 1/8
        b = self.bottom(F.max_pool3d(e2, 2))  # 1/16
        d1 = self.dec1(torch.cat([self.up1(b), e2], dim=1))  # 1/8
        d2 = self.dec2(torch.cat([self.up2b(self.up2a(d1)), e1], dim=1))  # 1/2
        return self.head(d2)[..., : size[0], : size[1], : size[2]]

    @staticmethod
    def loss(prediction: Tensor, target: Tensor) -> Tensor:
        """Mean squared error, the published training loss."""
        return F.mse_loss(prediction, target)


#: Published parameter-name prefixes (``DL_aug.UnetGenerator_3d``) -> ours.
_PUBLISHED_NAMES = {
    "down_1": "enc1",
    "down_2": "enc2",
    "bridge": "bottom",
    "trans_up_11": "up1",
    "up_1": "dec1",
    "trans_up_12": "up2a",
    "trans_up_21": "up2b",
    "up_2": "dec2",
    "out": "head",
}
#: Index inside the published ``nn.Sequential`` blocks -> our stage attribute.
_PUBLISHED_LAYERS = {"0": "conv", "1": "norm"}


def from_published_state(state: dict) -> tuple[Lee2021UNet3D, dict]:
    """A :class:`Lee2021UNet3D` holding a published state dict (``DL_aug_Pt_FCC_Bf5`` etc.).

    Args:
        state: The dict ``torch.load(path, weights_only=True)`` returns for a published file.

    Returns:
        The network (eval mode) and its metadata (``architecture``, ``sampling`` in Å,
        ``input_scale``).

    Raises:
        KeyError: if a parameter name is not one of the published network's.
    """
    mapped = {}
    for name, value in state.items():
        block, layer, rest = name.split(".", 2)
        mapped[f"{_PUBLISHED_NAMES[block]}.{_PUBLISHED_LAYERS[layer]}.{rest}"] = value
    filters = int(mapped["enc1.conv.weight"].shape[0]) // 2
    net = Lee2021UNet3D(num_filter=filters)
    net.load_state_dict(mapped)
    info = {
        "architecture": "lee2021-published",
        "sampling": PUBLISHED_SAMPLING,
        "input_scale": PUBLISHED_INPUT_SCALE,
    }
    return net.eval(), info


ARCHITECTURES = ("lee2021", "unet3d-v1")


def build_unet3d(architecture: str = "lee2021") -> nn.Module:
    """A fresh network: ``lee2021`` (:class:`Lee2021UNet3D`) or ``unet3d-v1`` (:class:`UNet3D`)."""
    if architecture in ("lee2021", "lee2021-published"):
        return Lee2021UNet3D()
    if architecture == "unet3d-v1":
        return UNet3D()
    raise ValueError(f"architecture={architecture!r}: expected one of {', '.join(ARCHITECTURES)}")
