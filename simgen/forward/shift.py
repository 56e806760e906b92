"""Sub-pixel translation of images by the shift theorem, for numpy arrays and torch tensors."""

from __future__ import annotations

import math

import numpy as np

from simgen.forward._backend import array_namespace, constant

__all__ = ["fourier_shift"]


def _ramp(xp, shift, n: int, like):
    """exp(−2πi k d) over the DFT frequencies k of ``n`` samples; cos(π d) at an even Nyquist."""
    freqs = constant(xp, np.fft.fftfreq(n), like)  # cycles per pixel
    phase = -2j * math.pi * shift[:, None] * freqs[None, :]
    phase = xp.exp(phase)
    if n % 2 == 0:
        nyquist = xp.astype(xp.cos(math.pi * shift), phase.dtype)[:, None]
        index = constant(xp, np.arange(n, dtype=np.float64), like)
        phase = xp.where(index[None, :] == n // 2, nyquist, phase)
    return phase


def _is_plain(value) -> bool:
    """True for numpy arrays and Python sequences (anything that is not another library's array)."""
    return isinstance(value, (np.ndarray, list, tuple, float, int, np.generic))


def fourier_shift(images, shifts_px):
    """Translate each image (y, x) by ``shifts_px[k] = (dy, dx)`` pixels, exactly (Fourier).

    The shift theorem: the spectrum is multiplied by ``exp(−2πi (k_y dy + k_x dx))``, so an integer
    shift is an exact (periodic) roll, any shift conserves the sum of the image, and no
    interpolation blur is added. The field of view is periodic (what leaves one edge enters at the
    other); the particle must keep a margin of empty pixels, as every simulated one does. For an
    even number of pixels the Nyquist row/column is multiplied by ``cos(π d)`` to keep the result
    real (exact for integer shifts; band-limited images are unaffected). Differentiable in the
    images and the shifts for torch tensors. For images with content above the pixel Nyquist
    frequency this is not the image of translated atoms (the samples alias).

    Parameters
    ----------
    images
        ``(A, P_y, P_x)`` images (numpy array or torch tensor).
    shifts_px
        ``(A, 2)`` shifts (dy, dx) in pixels; positive moves the content towards larger indices.

    Returns
    -------
    array
        ``(A, P_y, P_x)`` shifted images: numpy float32 for float32 input, else float64; torch in
        the images' dtype.
    """
    numpy_input = _is_plain(images)
    xp = array_namespace(np.asarray(0.0) if numpy_input else images)
    if numpy_input:
        images = np.asarray(images)
        shifts = np.asarray(shifts_px, dtype=np.float64)
        work = images.astype(np.float64, copy=False)
    else:
        shifts, work = xp.astype(shifts_px, images.dtype), images
    if images.ndim != 3 or tuple(shifts.shape) != (images.shape[0], 2):
        raise ValueError(
            f"shifts_px.shape={tuple(shifts.shape)}: expected (A, 2) for images of shape "
            f"{tuple(images.shape)}"
        )
    if numpy_input and not np.all(np.isfinite(shifts)):
        raise ValueError("shifts_px: expected finite shifts in pixels")
    ny, nx = images.shape[1:]
    phase_y = _ramp(xp, shifts[:, 0], ny, work)  # (A, P_y)
    phase_x = _ramp(xp, shifts[:, 1], nx, work)
    spectrum = xp.fft.fftn(work, axes=(-2, -1))
    if numpy_input:
        from simgen.tools.reproducible import complex_multiply

        # numpy's complex product rounds by CPU (simgen.tools.reproducible)
        spectrum = complex_multiply(
            spectrum, complex_multiply(phase_y[:, :, None], phase_x[:, None, :])
        )
    else:
        spectrum = spectrum * (phase_y[:, :, None] * phase_x[:, None, :])
    out = xp.real(xp.fft.ifftn(spectrum, axes=(-2, -1)))
    if numpy_input:
        return out.astype(np.float32) if images.dtype == np.float32 else out
    return out
