"""Stage 1 of PANN: a global-local residual 3D U-Net and sliding-window inference.

The local branch is a residual 3D U-Net (He et al. 2016 residual blocks in a Ronneberger et al.
2015 / Çiçek et al. 2016 U-Net) that sees a full-resolution patch of the reconstruction. The
global branch sees the whole volume downsampled to ``global_size`` voxels per side; its feature
map is sampled at the positions of the patch's bottleneck voxels in the full volume and fused
there, so every patch knows where it lies in the particle (PANN, arXiv 2603.19942).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ResidualBlock3d", "GlobalLocalResUNet", "global_view", "sliding_window_predict"]

logger = logging.getLogger(__name__)

_NORMS = ("instance", "group", "batch", None)
_OUTPUTS = ("residual", "softplus", "linear")


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.Identity()


class ResidualBlock3d(nn.Module):
    """conv3³-norm-act-conv3³-norm plus a (1×1×1-projected) skip, then the activation.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        norm: ``"instance"``, ``"group"`` (8 groups), ``"batch"`` or ``None``.
        negative_slope: Slope of the LeakyReLU (0 gives a ReLU).

    Shapes:
        input (B, in_channels, D, H, W) -> output (B, out_channels, D, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: str | None = "instance",
        negative_slope: float = 0.01,
    ):
        super().__init__()
        bias = norm is None
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.norm1 = _norm(norm, out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = _norm(norm, out_channels)
        self.act = nn.LeakyReLU(negative_slope)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv3d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(h)) + self.skip(x))


def global_view(volume: Tensor, size: int) -> Tensor:
    """The whole volume resampled to ``size`` voxels per side (box average when shrinking).

    Args:
        volume: (B, C, D, H, W).
        size: Output side in voxels.

    Returns:
        (B, C, size, size, size). Cell ``k`` covers the input extent ``[k N/size, (k+1) N/size)``
        along an axis of N voxels, i.e. the resampling is ``align_corners=False``-consistent.
    """
    if all(n >= size for n in volume.shape[-3:]):
        return F.adaptive_avg_pool3d(volume, size)
    return F.interpolate(volume, size=(size, size, size), mode="trilinear", align_corners=False)


class GlobalLocalResUNet(nn.Module):
    """Global-local residual 3D U-Net (PANN stage 1).

    Local branch: a residual U-Net with ``levels`` resolutions (``base_channels * 2**i`` channels
    at level ``i``; stride-2 convolutions down, transposed convolutions up, skip concatenation).
    Global branch: a residual encoder over the whole volume resampled to ``global_size``³; its
    feature map is sampled (trilinear) at the full-volume position of every bottleneck voxel of
    the patch, concatenated to the bottleneck features and fused by a residual block.

    Output modes: ``"residual"`` returns ``input + Δ`` (the head is zero-initialised, so an
    untrained model is the identity — the reconstruction is already close to the target);
    ``"softplus"`` returns a positive density ``softplus(head)``; ``"linear"`` returns ``head``.

    Patch sides that are not multiples of :attr:`size_divisor` (``2**(levels-1)``) are zero-padded
    at the high end internally and the output is cropped back, so any size ≥ 1 works.

    Args:
        in_channels: Input channels (1 for a reconstruction).
        out_channels: Output channels; must equal ``in_channels`` for ``output="residual"``.
        base_channels: Channels at full resolution.
        levels: Number of resolutions of the local U-Net (≥ 1; 3 → full, 1/2, 1/4).
        global_size: Side (voxels) of the downsampled whole volume seen by the global branch.
        global_channels: Channels of the global feature map (default ``2 * base_channels``).
        global_levels: Resolutions of the global encoder (3 → a ``global_size/4`` feature map).
        norm: ``"instance"`` (default), ``"group"``, ``"batch"`` or ``None``. Per-sample norms
            make a patch's output depend slightly on the patch extent; ``"batch"`` (in eval mode)
            or ``None`` make the network translation-equivariant by ``size_divisor`` voxels.
        output: ``"residual"``, ``"softplus"`` or ``"linear"`` (see above).
        use_global: Build and use the global branch (``False`` gives a plain residual U-Net).

    Shapes:
        patch (B, in_channels, d, h, w); global_volume (B or 1, in_channels, D, H, W) — the whole
        volume at any resolution, whose full-resolution shape is ``volume_shape`` (default its
        own); patch_origin (B, 3) or (3,) voxel index (z, y, x) of the patch's first voxel in the
        full volume -> output (B, out_channels, d, h, w).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        levels: int = 3,
        global_size: int = 32,
        global_channels: int | None = None,
        global_levels: int = 3,
        norm: str | None = "instance",
        output: str = "residual",
        use_global: bool = True,
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("base_channels", base_channels),
            ("levels", levels),
            ("global_levels", global_levels),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if norm not in _NORMS:
            raise ValueError(f"norm={norm!r}: expected one of {_NORMS}")
        if output not in _OUTPUTS:
            raise ValueError(f"output={output!r}: expected one of {_OUTPUTS}")
        if output == "residual" and in_channels != out_channels:
            raise ValueError(
                f"out_channels={out_channels}: expected in_channels={in_channels} for output='residual'"
            )
        if use_global and (
            not isinstance(global_size, int) or global_size < 2 ** (global_levels - 1)
        ):
            raise ValueError(
                f"global_size={global_size!r}: expected an integer ≥ 2**(global_levels-1) = {2 ** (global_levels - 1)}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.base_channels, self.levels = base_channels, levels
        self.global_size, self.global_levels = global_size, global_levels
        self.global_channels = (global_channels or 2 * base_channels) if use_global else 0
        self.norm, self.output, self.use_global = norm, output, use_global

        ch = [base_channels * 2**i for i in range(levels)]
        self.stem = ResidualBlock3d(in_channels, ch[0], norm)
        self.down = nn.ModuleList(
            nn.Conv3d(ch[i - 1], ch[i], 2, stride=2) for i in range(1, levels)
        )
        self.encoder = nn.ModuleList(ResidualBlock3d(ch[i], ch[i], norm) for i in range(1, levels))
        self.fuse = ResidualBlock3d(ch[-1] + self.global_channels, ch[-1], norm)
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(ch[i], ch[i - 1], 2, stride=2) for i in range(levels - 1, 0, -1)
        )
        self.decoder = nn.ModuleList(
            ResidualBlock3d(2 * ch[i - 1], ch[i - 1], norm) for i in range(levels - 1, 0, -1)
        )
        self.head = nn.Conv3d(ch[0], out_channels, 1)

        if use_global:
            gc = self.global_channels
            gch = [max(gc // 2 ** (global_levels - 1 - i), 1) for i in range(global_levels)]
            self.global_stem = ResidualBlock3d(in_channels, gch[0], norm)
            self.global_down = nn.ModuleList(
                nn.Conv3d(gch[i - 1], gch[i], 2, stride=2) for i in range(1, global_levels)
            )
            self.global_encoder = nn.ModuleList(
                ResidualBlock3d(gch[i], gch[i], norm) for i in range(1, global_levels)
            )
        self.reset_parameters()

    @property
    def size_divisor(self) -> int:
        """Patch sides that are multiples of this need no internal padding; the network is
        translation-equivariant by shifts of this many voxels (with ``norm`` None or batch)."""
        return 2 ** (self.levels - 1)

    def reset_parameters(self) -> None:
        """Kaiming initialisation; the head starts at zero for ``output="residual"`` (identity)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=0.01, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif (
                isinstance(m, (nn.InstanceNorm3d, nn.GroupNorm, nn.BatchNorm3d))
                and m.weight is not None
            ):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.output == "residual":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        glob = (
            f", global_size={self.global_size}, global_channels={self.global_channels}"
            if self.use_global
            else ", use_global=False"
        )
        return (
            f"{type(self).__name__}(in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"base_channels={self.base_channels}, levels={self.levels}{glob}, norm={self.norm!r}, "
            f"output={self.output!r}, params={n:,})"
        )

    def encode_global(self, global_volume: Tensor) -> Tensor:
        """Global feature map of the whole volume.

        Args:
            global_volume: (B, in_channels, D, H, W), the whole volume at any resolution.

        Returns:
            (B, global_channels, g, g, g) with ``g = global_size / 2**(global_levels-1)``.
        """
        if not self.use_global:
            raise ValueError("use_global=False: this model has no global branch")
        h = self.global_stem(global_view(global_volume, self.global_size))
        for down, block in zip(self.global_down, self.global_encoder):
            h = block(down(h))
        return h

    def _sample_global(
        self,
        features: Tensor,
        origin: Tensor,
        bottleneck: Sequence[int],
        volume_shape: Sequence[int],
    ) -> Tensor:
        # Full-volume voxel coordinate of bottleneck voxel j: origin + j*s + (s-1)/2; the global map
        # covers the extent [-0.5, N-0.5] (align_corners=False): u = 2 (pos + 0.5) / N - 1.
        s = self.size_divisor
        batch = origin.shape[0]
        axes = []
        for a in range(3):
            j = torch.arange(bottleneck[a], device=features.device, dtype=features.dtype)
            pos = origin[:, a : a + 1].to(features.dtype) + j * s + (s - 1) / 2.0
            axes.append(2.0 * (pos + 0.5) / volume_shape[a] - 1.0)  # (B, n_a)
        z, y, x = axes
        grid = torch.stack(
            torch.broadcast_tensors(
                x[:, None, None, :, None], y[:, None, :, None, None], z[:, :, None, None, None]
            ),
            dim=-1,
        ).squeeze(-2)  # (B, d, h, w, 3) in (x, y, z) order
        if features.shape[0] != batch:
            features = features.expand(batch, *features.shape[1:])
        return F.grid_sample(
            features, grid, mode="bilinear", padding_mode="border", align_corners=False
        )

    def forward(
        self,
        patch: Tensor,
        global_volume: Tensor | None = None,
        patch_origin: Tensor | Sequence | None = None,
        volume_shape: Sequence[int] | None = None,
        *,
        global_features: Tensor | None = None,
    ) -> Tensor:
        """Refine a patch of a volume (or a whole volume when ``global_volume`` is omitted).

        Args:
            patch: (B, in_channels, d, h, w) full-resolution patch.
            global_volume: (B or 1, in_channels, D, H, W) whole volume; ``None`` means the patch
                is the whole volume.
            patch_origin: voxel index (z, y, x) of ``patch[..., 0, 0, 0]`` in the full volume, as
                a (B, 3) / (3,) tensor or a sequence of triples; default zeros.
            volume_shape: full-resolution (D, H, W) of the whole volume; defaults to
                ``global_volume``'s shape (pass it when ``global_volume`` is already downsampled).
            global_features: precomputed :meth:`encode_global` output (skips the global encoder;
                needs ``volume_shape``).

        Returns:
            (B, out_channels, d, h, w).
        """
        if patch.ndim != 5 or patch.shape[1] != self.in_channels:
            raise ValueError(
                f"patch.shape={tuple(patch.shape)}: expected (B, {self.in_channels}, D, H, W)"
            )
        batch, size = patch.shape[0], patch.shape[-3:]
        gfeat = None
        if self.use_global:
            if global_features is not None:
                if volume_shape is None:
                    raise ValueError(
                        "volume_shape=None: expected the full volume shape with global_features"
                    )
                gfeat = global_features
            else:
                if global_volume is None:
                    global_volume = patch
                if (
                    global_volume.ndim != 5
                    or global_volume.shape[1] != self.in_channels
                    or global_volume.shape[0] not in (1, batch)
                ):
                    raise ValueError(
                        f"global_volume.shape={tuple(global_volume.shape)}: expected ({batch} or 1, {self.in_channels}, D, H, W)"
                    )
                gfeat = self.encode_global(global_volume)
                if volume_shape is None:
                    volume_shape = global_volume.shape[-3:]
            origin = _origins(patch_origin, batch, patch.device)

        s = self.size_divisor
        pad = [(-n) % s for n in size]
        x = F.pad(patch, (0, pad[2], 0, pad[1], 0, pad[0])) if any(pad) else patch
        h = self.stem(x)
        skips = [h]
        for down, block in zip(self.down, self.encoder):
            h = block(down(h))
            skips.append(h)
        if gfeat is not None:
            sampled = self._sample_global(
                gfeat, origin, h.shape[-3:], tuple(int(n) for n in volume_shape)
            )
            h = torch.cat([h, sampled], dim=1)
        h = self.fuse(h)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            h = block(torch.cat([up(h), skip], dim=1))
        out = self.head(h)[..., : size[0], : size[1], : size[2]]
        if self.output == "residual":
            return patch + out
        if self.output == "softplus":
            return F.softplus(out)
        return out


def _origins(patch_origin, batch: int, device) -> Tensor:
    if patch_origin is None:
        return torch.zeros(batch, 3, device=device)
    origin = torch.as_tensor(
        np.asarray(patch_origin, dtype=np.float32)
        if not isinstance(patch_origin, Tensor)
        else patch_origin
    )
    origin = origin.to(device=device, dtype=torch.float32)
    if origin.shape == (3,):
        origin = origin.expand(batch, 3)
    if origin.shape != (batch, 3):
        raise ValueError(
            f"patch_origin.shape={tuple(origin.shape)}: expected ({batch}, 3) or (3,) voxel indices (z, y, x)"
        )
    return origin


# ---------------------------------------------------------------------------- inference
def _window(size: int, blend: str, sigma_scale: float) -> np.ndarray:
    i = np.arange(size, dtype=np.float64)
    if blend == "gaussian":
        return np.exp(-0.5 * ((i - (size - 1) / 2.0) / (sigma_scale * size)) ** 2)
    if blend == "cosine":
        return np.sin(np.pi * (i + 0.5) / size) ** 2  # Hann window, positive at the edges
    return np.ones(size)


def _starts(n: int, p: int, overlap: float, divisor: int, margin: int) -> tuple[list[int], int]:
    """Patch starts along one axis and the padded length; starts are multiples of ``divisor``."""
    if p >= n:
        return [0], n
    stride = min(int(p * (1.0 - overlap)), p - 2 * margin) // divisor * divisor
    if stride < 1:
        raise ValueError(
            f"margin={margin}: expected patch side {p} - 2 * margin ≥ the model's size divisor {divisor}"
        )
    # The last patch ends at most divisor - 1 voxels past the volume (where the model's own
    # internal padding would reach), so the padded volume is what the whole-volume model sees.
    last = math.ceil((n - p) / divisor) * divisor
    starts = list(range(0, last, stride)) + [last]
    return starts, last + p


def sliding_window_predict(
    model: nn.Module,
    volume,
    patch_size: int | Sequence[int] = 64,
    overlap: float = 0.25,
    batch_size: int = 4,
    blend: str = "gaussian",
    sigma_scale: float = 0.125,
    margin: int = 0,
    progress: bool = False,
):
    """Apply a patch network to a volume larger than its training patches.

    Patches start on a grid whose stride is ``patch_size * (1 - overlap)`` rounded down to a
    multiple of the model's ``size_divisor`` (so the U-Net sees every patch on the same
    down-sampling lattice); the last patch starts at the first multiple of ``size_divisor`` from
    which it reaches the end, and the volume is zero-padded there (by less than the divisor).
    Overlapping outputs are averaged with a separable Gaussian (σ = ``sigma_scale`` × patch side,
    as nnU-Net and MONAI) or Hann window. With ``margin > 0`` the outputs within ``margin`` voxels
    of a patch face that lies inside the volume get zero weight (the overlap-tile strategy of
    Ronneberger et al. 2015), and the stride shrinks so that every voxel is still covered: for a
    translation-equivariant model whose receptive-field radius is ≤ ``margin`` the result equals
    the whole-volume prediction. A :class:`GlobalLocalResUNet` gets its global features
    from the whole volume once. The model is put in eval mode for the call and restored after.
    Runs on the model's device (CPU or CUDA).

    Args:
        model: A module mapping (B, C, d, h, w) patches to (B, C', d, h, w); a
            :class:`GlobalLocalResUNet` is called with its patch origins.
        volume: (D, H, W) or (1, C, D, H, W) numpy array or tensor.
        patch_size: Patch side(s) in voxels, an int or (d, h, w); clipped to the volume.
        overlap: Fraction of a patch shared with its neighbour, in [0, 1).
        batch_size: Patches per forward pass.
        blend: ``"gaussian"``, ``"cosine"`` or ``"constant"``.
        sigma_scale: Gaussian σ as a fraction of the patch side.
        margin: Voxels discarded at the inner faces of each patch (overlap-tile), ≥ 0.
        progress: Show a progress bar.

    Returns:
        The prediction, same container type as ``volume``: (D, H, W) for a 3D input (first
        output channel), else (1, C', D, H, W); numpy inputs give float32 numpy arrays.
    """
    # numpy in, numpy out: nothing can reach autograd, so skip its bookkeeping entirely
    mode = torch.no_grad() if isinstance(volume, Tensor) else torch.inference_mode()
    with mode:
        return _sliding_window_predict(
            model, volume, patch_size, overlap, batch_size, blend, sigma_scale, margin, progress
        )


def _sliding_window_predict(
    model, volume, patch_size, overlap, batch_size, blend, sigma_scale, margin, progress
):
    from simgen.tools.progress import progress_bar

    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap={overlap!r}: expected a fraction in [0, 1)")
    if blend not in ("gaussian", "cosine", "constant"):
        raise ValueError(f"blend={blend!r}: expected 'gaussian', 'cosine' or 'constant'")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
    is_numpy = not isinstance(volume, Tensor)
    x = torch.as_tensor(np.asarray(volume, dtype=np.float32)) if is_numpy else volume
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None, None]
    if x.ndim != 5 or x.shape[0] != 1:
        raise ValueError(
            f"volume.shape={tuple(np.shape(volume))}: expected (D, H, W) or (1, C, D, H, W)"
        )
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = x.device
    x = x.to(device=device, dtype=torch.float32)
    shape = tuple(int(n) for n in x.shape[-3:])
    patch = (patch_size,) * 3 if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(
            f"patch_size={patch_size!r}: expected a positive int or three positive ints"
        )
    patch = tuple(min(p, n) for p, n in zip(patch, shape))
    divisor = int(getattr(model, "size_divisor", 1))
    if not isinstance(margin, int) or margin < 0:
        raise ValueError(f"margin={margin!r}: expected a non-negative integer")

    starts, padded = zip(*(_starts(n, p, overlap, divisor, margin) for n, p in zip(shape, patch)))
    xp = F.pad(x, (0, padded[2] - shape[2], 0, padded[1] - shape[1], 0, padded[0] - shape[0]))
    windows = []  # per axis: {start: 1D weights}
    for a in range(3):
        base = _window(patch[a], blend, sigma_scale)
        per_start = {}
        for s0 in starts[a]:
            w = base.copy()
            if margin and s0 > 0:
                w[:margin] = 0.0
            if margin and s0 + patch[a] < padded[a]:
                w[patch[a] - margin :] = 0.0
            per_start[s0] = torch.as_tensor(w, dtype=torch.float32, device=device)
        windows.append(per_start)

    is_global = isinstance(model, GlobalLocalResUNet) and model.use_global
    was_training = model.training
    model.eval()
    try:
        gfeat = model.encode_global(x) if is_global else None
        origins = [(z, y, w) for z in starts[0] for y in starts[1] for w in starts[2]]
        out = norm = None
        # Batches of near-equal size (5 patches in batches of 4 -> 3 + 2, not 4 + 1): torch's CPU
        # convolution falls back to its slow native kernel for one small patch (batch 1), which
        # cost more than the other four patches together; the outputs agree to float rounding.
        n_batches = -(-len(origins) // batch_size)
        bounds = [round(i * len(origins) / n_batches) for i in range(n_batches + 1)]
        batches = list(zip(bounds[:-1], bounds[1:]))
        for lo, hi in progress_bar(
            batches, total=len(batches), desc="sliding window", enabled=progress
        ):
            chunk = origins[lo:hi]
            patches = torch.cat(
                [xp[..., z : z + patch[0], y : y + patch[1], w : w + patch[2]] for z, y, w in chunk]
            )
            if is_global:
                pred = model(
                    patches,
                    patch_origin=torch.tensor(chunk, dtype=torch.float32, device=device),
                    volume_shape=shape,
                    global_features=gfeat,
                )
            else:
                pred = model(patches)
            if out is None:
                out = torch.zeros((1, pred.shape[1], *padded), device=device)
                norm = torch.zeros(padded, device=device)
            for (z, y, w), p in zip(chunk, pred):
                weight = (
                    windows[0][z][:, None, None]
                    * windows[1][y][None, :, None]
                    * windows[2][w][None, None, :]
                )
                out[0, :, z : z + patch[0], y : y + patch[1], w : w + patch[2]] += p * weight
                norm[z : z + patch[0], y : y + patch[1], w : w + patch[2]] += weight
    finally:
        model.train(was_training)
    result = (out / norm)[..., : shape[0], : shape[1], : shape[2]]
    if squeeze:
        result = result[0, 0]
    if is_numpy:
        return result.cpu().numpy().astype(np.float32)
    return result
