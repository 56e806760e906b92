"""Differentiable rotate-and-sum projector (the physics term of PANN stage 1).

Geometry (docs/design.md, contract): volumes are ``[z, y, x]``, the tilt axis is y and the beam runs
along z at 0°. The projection at angle θ images the object rotated by R_y(θ) about the volume
centre c = ((N-1)/2 per axis)::

    (x, y, z) -> (x cosθ + z sinθ,  y,  -x sinθ + z cosθ)

summed over the rotated z. Since the rotation leaves y alone, every y-row is a 2D problem in the
x–z plane: the volume is viewed as a 2D image over (z, x) with the y-rows as channels and
resampled bilinearly (``grid_sample``, ``align_corners=True`` so that index k sits at k) on the
rotated grid. Rays are sampled at unit spacing over the whole chord through the volume (not
only its inscribed circle), so corners are not lost at high tilt. The result is the line
integral in voxel units, as ASTRA's forward projector with unit voxels gives.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "project",
    "Projector",
    "psf_kernel",
    "gaussian_kernel",
    "blur_series",
    "poisson_deviance",
]


def _as_angles(angles, device, dtype) -> Tensor:
    if isinstance(angles, Tensor):
        theta = angles.to(device=device, dtype=dtype)
    else:
        theta = torch.as_tensor(np.asarray(angles, dtype=np.float64), device=device, dtype=dtype)
    if theta.ndim != 1 or theta.numel() == 0:
        raise ValueError(
            f"angles.shape={tuple(theta.shape)}: expected a non-empty 1D array of angles in degrees"
        )
    return torch.deg2rad(theta)


def project(volume: Tensor, angles, *, angle_batch: int = 16) -> Tensor:
    """Project a volume at tilt angles about y (differentiable in the volume and the angles).

    Args:
        volume: (B, 1, D, H, W), (B, D, H, W) or (D, H, W) tensor, ``[z, y, x]``.
        angles: (A,) tilt angles in degrees (tensor, array or list).
        angle_batch: Angles resampled at once (bounds the peak memory to about
            ``B * H * angle_batch * L * W`` floats, L ≈ √(D² + W²)).

    Returns:
        (B, A, H, W) tilt series ``[angle, y, x]`` for batched input, (A, H, W) for a 3D input.
    """
    if not isinstance(volume, Tensor):
        raise ValueError(f"volume: expected a torch.Tensor, got {type(volume).__name__}")
    squeeze = volume.ndim == 3
    if volume.ndim == 5:
        if volume.shape[1] != 1:
            raise ValueError(
                f"volume.shape={tuple(volume.shape)}: expected one channel (B, 1, D, H, W)"
            )
        vol = volume[:, 0]
    elif volume.ndim in (3, 4):
        vol = volume[None] if squeeze else volume
    else:
        raise ValueError(
            f"volume.shape={tuple(volume.shape)}: expected (B, 1, D, H, W), (B, D, H, W) or (D, H, W)"
        )
    if angle_batch < 1:
        raise ValueError(f"angle_batch={angle_batch!r}: expected a positive integer")
    batch, depth, height, width = vol.shape
    theta = _as_angles(angles, vol.device, vol.dtype)
    image = vol.permute(0, 2, 1, 3)  # (B, H, D, W): y-rows as channels of a (z, x) image
    cz, cx = (depth - 1) / 2.0, (width - 1) / 2.0
    # Half length of the longest chord along the rotated z through the (z, x) rectangle.
    half = math.ceil(math.hypot(cz, cx)) if depth > 1 or width > 1 else 0
    zr = torch.arange(-half, half + 1, device=vol.device, dtype=vol.dtype)  # rotated z - cz
    xr = torch.arange(width, device=vol.device, dtype=vol.dtype) - cx  # rotated x - cx (detector)
    sx = 2.0 / (width - 1) if width > 1 else 1.0
    sz = 2.0 / (depth - 1) if depth > 1 else 1.0
    out = []
    for a0 in range(0, theta.numel(), angle_batch):
        t = theta[a0 : a0 + angle_batch]
        c, s = torch.cos(t)[:, None, None], torch.sin(t)[:, None, None]
        # Inverse rotation: a point (x', z') of the rotated object comes from (x, z) of the object.
        x = c * xr[None, None, :] - s * zr[None, :, None]  # (a, L, W), relative to the centre
        z = s * xr[None, None, :] + c * zr[None, :, None]
        grid = torch.stack((x * sx, z * sz), dim=-1).reshape(1, -1, width, 2)  # (1, a*L, W, 2)
        grid = grid.expand(batch, -1, -1, -1)
        sampled = F.grid_sample(
            image, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        out.append(sampled.reshape(batch, height, t.numel(), zr.numel(), width).sum(dim=3))
    series = torch.cat(out, dim=2).permute(0, 2, 1, 3)  # (B, A, H, W)
    return series[0] if squeeze else series


class Projector(nn.Module):
    """:func:`project` at fixed angles, as a module (for a physics loss term).

    Args:
        angles: (A,) tilt angles in degrees.
        angle_batch: See :func:`project`.

    Shapes:
        input (B, 1, D, H, W) -> output (B, A, H, W).
    """

    def __init__(self, angles, angle_batch: int = 16):
        super().__init__()
        self.register_buffer("angles", torch.as_tensor(np.asarray(angles, dtype=np.float32)))
        self.angle_batch = angle_batch

    def __repr__(self) -> str:
        a = self.angles
        return f"{type(self).__name__}(angles={a.numel()} from {float(a.min()):g}° to {float(a.max()):g}°)"

    def forward(self, volume: Tensor) -> Tensor:
        return project(volume, self.angles, angle_batch=self.angle_batch)


def psf_kernel(sampling: float, *, microscope=None, radius: float = 2.0) -> np.ndarray:
    """The calibrated probe PSF (:func:`simgen.forward.psf_image`) as a small image kernel.

    Args:
        sampling: Pixel size in Å.
        microscope: ``simgen.physics.imaging.Microscope`` (default: the project's).
        radius: Half-width of the kernel, Å (the tails beyond it are dropped and the kernel is
            renormalised to unit sum, so it conserves σ(Z)).

    Returns:
        (2r+1, 2r+1) float32 kernel ``[y, x]``, r = ceil(radius / sampling).
    """
    from simgen.forward import psf_image
    from simgen.physics.microscope import Microscope

    if not (np.isfinite(sampling) and sampling > 0):
        raise ValueError(f"sampling={sampling!r}: expected a positive pixel size in Å")
    r = max(int(math.ceil(radius / sampling)), 1)
    kernel = psf_image(float(sampling), 2 * r + 1, microscope or Microscope())
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_kernel(sampling: float, sigma: float, *, radius: float = 2.0) -> np.ndarray:
    """A 2D Gaussian of ``sigma`` Å sampled at pixel centres, unit sum (the targets' blur)."""
    if not (np.isfinite(sampling) and sampling > 0):
        raise ValueError(f"sampling={sampling!r}: expected a positive pixel size in Å")
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r}: expected a positive width in Å")
    r = max(int(math.ceil(radius / sampling)), 1)
    x = np.arange(-r, r + 1) * sampling
    g = np.exp(-(x**2) / (2 * sigma**2))
    kernel = np.outer(g, g)
    return (kernel / kernel.sum()).astype(np.float32)


def blur_series(series: Tensor, kernel) -> Tensor:
    """Convolve every image of a tilt series ``(B, A, H, W)`` with a 2D kernel (zero padding)."""
    kernel = torch.as_tensor(np.asarray(kernel), dtype=series.dtype, device=series.device)
    r = kernel.shape[-1] // 2
    b, a, h, w = series.shape
    # conv2d computes a correlation: flip the kernel to convolve.
    out = F.conv2d(series.reshape(b * a, 1, h, w), kernel.flip(-1, -2)[None, None], padding=(r, r))
    return out.reshape(b, a, h, w)


def poisson_deviance(model: Tensor, measured: Tensor, offset=0.0, floor: float = 1e-6) -> Tensor:
    """Mean Poisson deviance of dose-normalised images (the Poisson likelihood up to constants).

    With ``d`` the dose, the counts are ``k = d·(measured + offset)`` with mean
    ``λ = d·(model + offset)``, ``offset`` = background / dose. The negative log likelihood
    ``λ − k log λ`` minus its minimum over λ, divided by ``d``, is the deviance
    ``m − y − y·log(m / y)`` with ``m = model + offset`` and ``y = measured + offset``; it has
    the same minimiser as the likelihood at every dose. Negative ``y`` (read noise) are clipped.

    Args:
        model: Predicted dose-normalised images.
        measured: Measured dose-normalised images (background subtracted), same shape.
        offset: Background per dose (scalar or broadcastable tensor), ≥ 0.
        floor: Lower bound on ``m`` (the log needs a positive mean).
    """
    m = (model + offset).clamp(min=floor)
    y = (measured + offset).clamp(min=0.0)
    log_term = torch.where(y > 0, y * torch.log(y.clamp(min=floor) / m), torch.zeros_like(y))
    return (m - y + log_term).mean()
