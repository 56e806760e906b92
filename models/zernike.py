# ruff: noqa: E741  (l is the angular degree, as in every paper on Zernike moments)
"""3D Zernike moments and their rotation-invariant norms, for whole volumes and atom patches.

The 3D Zernike functions (Canterakis 1999; Novotni & Klein 2003) form an orthonormal basis
of functions on the unit ball,

    Z_nl^m(x) = R_nl(r) Y_l^m(theta, phi),   0 <= l <= n,  n - l even,  |m| <= l,

with the radial polynomial in the closed form of Novotni & Klein (2003, eq. 5-6),

    R_nl(r) = sum_{nu=0}^{k} q_kl^nu r^(l + 2 nu),   k = (n - l) / 2,
    q_kl^nu = (-1)^(k+nu) / 2^(2k) * sqrt((2l + 4k + 3) / 3) * C(2k, k) * C(k, nu)
              * C(2(k + l + nu) + 1, 2k) / C(k + l + nu, k),

and ``Y_l^m`` the spherical harmonics normalised to 4 pi over the sphere (``sqrt(4 pi)`` times the
orthonormal Condon-Shortley harmonics of :func:`scipy.special.sph_harm_y`), so that

    (3 / 4 pi) * integral_{ball} Z_nl^m conj(Z_n'l'^m') dV = delta_nn' delta_ll' delta_mm'

and ``Z_00^0 = 1``. The moments of a density ``f`` are

    Omega_nl^m = (3 / 4 pi) * integral f(x) conj(Z_nl^m(x)) dV,

and the descriptors are the norms ``||Omega_nl|| = sqrt(sum_m |Omega_nl^m|^2)``, which do not
change when ``f`` is rotated (or mirrored) about the ball's centre. They are returned in the
Novotni-Klein order: ``n`` ascending, then ``l`` ascending (``l = n mod 2, ..., n`` in steps
of 2), e.g. 25 values for order 8 and 121 for order 20.

Discretisation. Every Z_nl^m is a polynomial of degree ``n`` in (x, y, z); this module expands
it in monomials (from the closed forms above and the explicit associated Legendre sum) and
integrates it *exactly* over each voxel cube, like Novotni & Klein's geometric-moment method. A
voxel that the sphere cuts is weighted by the fraction of its cube inside the ball (measured by
sub-sampling once per geometry). Voxel indexing is ``[z, y, x]`` and voxel ``k`` is centred at
``k`` (in voxels), as in the project's geometry contract.

Batched form. :class:`ZernikeBasis` precomputes these voxel integrals for a ``(D, D, D)`` patch
as one real matrix (real and imaginary parts of ``conj(Z_nl^m)`` for ``m >= 0``; ``m < 0`` adds
the same magnitude for real data, ``|Omega_nl^-m| = |Omega_nl^m|``), so that the invariants of
``N`` patches are one matrix product followed by squared sums and a square root.

References:
    N. Canterakis, "3D Zernike moments and Zernike affine invariants for 3D image analysis and
    recognition", 11th Scandinavian Conference on Image Analysis (1999).
    M. Novotni and R. Klein, "3D Zernike descriptors for content based shape retrieval",
    ACM Symposium on Solid Modeling and Applications (2003) 216-225; Computer-Aided Design 36
    (2004) 1047-1062.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from functools import cache, lru_cache

import numpy as np

__all__ = [
    "NORMALIZATIONS",
    "ZernikeBasis",
    "atom_descriptors",
    "extract_patches",
    "radial_polynomial",
    "zernike_descriptors",
    "zernike_function",
    "zernike_indices",
]

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("none", "intensity", "novotni_klein")
"""Accepted ``normalization`` values; see :func:`zernike_descriptors`."""

_MAX_ORDER = 30  # beyond this the monomial expansion loses too many digits in float64
_SUBSAMPLES = 8  # sub-samples per axis to measure the fraction of a voxel inside the ball
_PREFACTOR = 3.0 / (4.0 * math.pi)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(f"order={order!r}: expected an integer in [0, {_MAX_ORDER}]")
    if not 0 <= int(order) <= _MAX_ORDER:
        raise ValueError(f"order={order!r}: expected an integer in [0, {_MAX_ORDER}]")
    return int(order)


def _check_normalization(normalization: str, allowed: tuple[str, ...] = NORMALIZATIONS) -> str:
    if normalization not in allowed:
        raise ValueError(f"normalization={normalization!r}: expected one of {allowed}")
    return normalization


def _check_volume(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3 or len(set(volume.shape)) != 1 or volume.shape[0] < 1:
        raise ValueError(f"{name}.shape={volume.shape!r}: expected a cubic 3D array (D, D, D)")
    if volume.dtype == np.bool_:
        volume = volume.astype(np.float64)
    if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise ValueError(f"{name}.dtype={volume.dtype}: expected a real numeric array")
    if not np.all(np.isfinite(volume)):
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return volume


# --------------------------------------------------------------------------------------------
# the functions themselves
# --------------------------------------------------------------------------------------------


def zernike_indices(order: int) -> list[tuple[int, int]]:
    """The (n, l) pairs of the invariants, in the order they are returned.

    Args:
        order: Maximal radial order ``n``.

    Returns:
        ``[(n, l) for n in 0..order for l in n%2..n step 2]`` (25 pairs for order 8).
    """
    order = _check_order(order)
    return [(n, l) for n in range(order + 1) for l in range(n % 2, n + 1, 2)]


@cache
def _radial_coefficients(n: int, l: int) -> np.ndarray:
    """Coefficients ``q_kl^nu`` of ``r^(l + 2 nu)`` in R_nl (Novotni & Klein 2003, eq. 5-6)."""
    k = (n - l) // 2
    coefficients = np.empty(k + 1)
    for nu in range(k + 1):
        numerator = math.comb(2 * k, k) * math.comb(k, nu) * math.comb(2 * (k + l + nu) + 1, 2 * k)
        denominator = 4**k * math.comb(k + l + nu, k)
        sign = -1.0 if (k + nu) % 2 else 1.0
        coefficients[nu] = sign * numerator / denominator * math.sqrt((2 * l + 4 * k + 3) / 3.0)
    return coefficients


def radial_polynomial(n: int, l: int, r: np.ndarray) -> np.ndarray:
    """The 3D Zernike radial polynomial R_nl(r), normalised so that ∫_0^1 R_nl² r² dr = 1/3.

    Args:
        n: Radial order, ``n >= 0``.
        l: Angular degree, ``0 <= l <= n`` with ``n - l`` even.
        r: Radii (unit-ball coordinates).

    Returns:
        R_nl evaluated at ``r`` (same shape).
    """
    if not (0 <= l <= n and (n - l) % 2 == 0):
        raise ValueError(f"(n, l)={(n, l)!r}: expected 0 <= l <= n with n - l even")
    r = np.asarray(r, dtype=float)
    r2 = r * r
    total = np.zeros_like(r)
    for coefficient in _radial_coefficients(n, l)[::-1]:  # Horner in r^2
        total = total * r2 + coefficient
    return total * r**l


def zernike_function(n: int, l: int, m: int, points: np.ndarray) -> np.ndarray:
    """Z_nl^m at points in unit-ball coordinates, from R_nl and scipy's spherical harmonics.

    This direct form (rather than the monomial expansion used for the moments) is given for
    reconstruction and as an independent check of the expansion.

    Args:
        n: Radial order.
        l: Angular degree (``n - l`` even).
        m: Azimuthal order, ``|m| <= l``.
        points: ``(..., 3)`` Cartesian coordinates ``(x, y, z)``.

    Returns:
        Complex values of shape ``points.shape[:-1]``; ``Z_00^0 = 1``.
    """
    from scipy.special import sph_harm_y

    if abs(m) > l:
        raise ValueError(f"m={m!r}: expected |m| <= l={l}")
    points = np.asarray(points, dtype=float)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    r = np.sqrt(x * x + y * y + z * z)
    polar = np.arccos(np.clip(np.divide(z, r, out=np.ones_like(r), where=r > 0), -1.0, 1.0))
    azimuth = np.mod(np.arctan2(y, x), 2.0 * np.pi)
    harmonic = sph_harm_y(l, m, polar, azimuth)
    return math.sqrt(4.0 * math.pi) * radial_polynomial(n, l, r) * harmonic


# --------------------------------------------------------------------------------------------
# monomial expansion: polynomials are dense arrays P[p, q, r] = coefficient of x^p y^q z^r
# --------------------------------------------------------------------------------------------


def _times_r2(poly: np.ndarray) -> np.ndarray:
    """Multiply a dense polynomial by x² + y² + z² (degree must stay within the array)."""
    out = np.zeros_like(poly)
    out[2:] += poly[:-2]
    out[:, 2:] += poly[:, :-2]
    out[:, :, 2:] += poly[:, :, :-2]
    return out


def _solid_harmonic(l: int, m: int, degree: int) -> np.ndarray:
    """sqrt(4π) r^l Y_l^m(θ, φ) as a dense complex polynomial in (x, y, z), for m >= 0.

    From P_l(t) = 2^-l Σ_k (-1)^k C(l,k) C(2l-2k,l) t^(l-2k) and
    P_l^m(t) = (-1)^m (1-t²)^(m/2) d^m P_l/dt^m, using r^l sin^m θ e^(imφ) cos^j θ r^-j... =
    (x+iy)^m z^j r^(l-m-j).
    """
    size = degree + 1
    normalisation = math.sqrt((2 * l + 1) * math.factorial(l - m) / math.factorial(l + m))
    normalisation *= (-1.0) ** m / 2.0**l
    # (x + iy)^m as a polynomial in (x, y)
    xy_part = np.zeros((size, size), dtype=complex)
    for a in range(m + 1):
        xy_part[a, m - a] = math.comb(m, a) * 1j ** (m - a)
    out = np.zeros((size, size, size), dtype=complex)
    for k in range((l - m) // 2 + 1):
        j = l - 2 * k - m
        coefficient = (
            (-1) ** k
            * math.comb(l, k)
            * math.comb(2 * l - 2 * k, l)
            * math.factorial(l - 2 * k)
            / math.factorial(j)
        )
        term = np.zeros((size, size, size), dtype=complex)
        term[:, :, j] = xy_part
        for _ in range(k):
            term = _times_r2(term)
        out += normalisation * coefficient * term
    return out


def _harmonic_stacks(order: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (l, m, stack) with stack[nu] = r^(2nu) sqrt(4π) r^l Y_l^m, nu = 0..(order-l)//2."""
    for l in range(order + 1):
        for m in range(l + 1):
            poly = _solid_harmonic(l, m, order)
            stack = [poly]
            for _ in range((order - l) // 2):
                stack.append(_times_r2(stack[-1]))
            yield l, m, np.stack(stack)


def _zernike_from_stack(n: int, l: int, stack_values: np.ndarray) -> np.ndarray:
    """Combine values of r^(2nu) S_lm (leading axis nu) into values of Z_nl^m."""
    q = _radial_coefficients(n, l)
    return np.tensordot(q, stack_values[: len(q)], axes=(0, 0))


def _cell_integrals(edges: np.ndarray, order: int) -> np.ndarray:
    """I[i, p] = ∫ t^p dt over [edges[i], edges[i+1]] (exact), shape (len(edges) - 1, order + 1)."""
    powers = np.arange(1, order + 2)
    antiderivative = edges[:, None] ** powers / powers
    return np.diff(antiderivative, axis=0)


def _moment_table(order: int) -> dict[tuple[int, int], slice]:
    """Column layout of the real basis: for each (n, l) a slice of 2l+1 real columns."""
    layout, start = {}, 0
    for n, l in zernike_indices(order):
        layout[(n, l)] = slice(start, start + 2 * l + 1)
        start += 2 * l + 1
    return layout


def _invariants_from_moments(
    moments: dict[tuple[int, int, int], complex], order: int
) -> np.ndarray:
    """||Omega_nl|| from the m >= 0 moments of a real density (|Omega^-m| = |Omega^m|)."""
    out = np.empty(len(zernike_indices(order)))
    for i, (n, l) in enumerate(zernike_indices(order)):
        total = abs(moments[(n, l, 0)]) ** 2
        total += 2.0 * sum(abs(moments[(n, l, m)]) ** 2 for m in range(1, l + 1))
        out[i] = math.sqrt(total)
    return out


def _moments_from_geometric(
    geometric: np.ndarray, order: int
) -> dict[tuple[int, int, int], complex]:
    """Omega_nl^m (m >= 0) = (3/4π) Σ_pqr conj(Z_nl^m)[p,q,r] M[p,q,r], M[p,q,r] = ∫ f x^p y^q z^r."""
    moments = {}
    for l, m, stack in _harmonic_stacks(order):
        # <conj(r^2nu S_lm), M> for every nu
        projections = np.tensordot(np.conj(stack), geometric, axes=([1, 2, 3], [0, 1, 2]))
        for n in range(l, order + 1, 2):
            moments[(n, l, m)] = _PREFACTOR * complex(_zernike_from_stack(n, l, projections))
    return moments


def _geometric_moments(weighted: np.ndarray, edges: np.ndarray, order: int) -> np.ndarray:
    """M[p, q, r] = Σ_voxels f ∫_voxel x^p y^q z^r dV for a [z, y, x] volume on given cell edges.

    ``edges`` is (3, D + 1): the unit-ball coordinates of the cell boundaries along z, y, x.
    """
    iz, iy, ix = (_cell_integrals(edges[a], order) for a in range(3))
    partial = np.tensordot(weighted, ix, axes=([2], [0]))  # (z, y, p)
    partial = np.tensordot(partial, iy, axes=([1], [0]))  # (z, p, q)
    partial = np.tensordot(partial, iz, axes=([0], [0]))  # (p, q, r)
    return partial


# --------------------------------------------------------------------------------------------
# geometry of the ball in a voxel cube
# --------------------------------------------------------------------------------------------


def _ball_fraction(size: int, radius_voxels: float) -> np.ndarray:
    """Fraction of each voxel cube of a (size,)*3 grid inside the ball about the grid centre.

    Voxel centres sit at integer offsets from ``(size - 1) / 2``; cubes are one voxel wide. Cubes
    that the sphere cuts are sub-sampled ``_SUBSAMPLES³`` times.
    """
    centre = (size - 1) / 2.0
    offsets = np.arange(size) - centre
    distance = np.sqrt(
        offsets[:, None, None] ** 2 + offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2
    )
    half_diagonal = math.sqrt(3.0) / 2.0
    fraction = (distance <= radius_voxels - half_diagonal).astype(float)
    cut = np.argwhere(np.abs(distance - radius_voxels) < half_diagonal)
    if len(cut):
        sub = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5
        sub_grid = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), axis=-1).reshape(-1, 3)
        for start in range(0, len(cut), 4096):
            block = cut[start : start + 4096]
            points = (block - centre)[:, None, :] + sub_grid[None, :, :]
            inside = np.sum(points * points, axis=-1) <= radius_voxels**2
            fraction[tuple(block.T)] = inside.mean(axis=1)
    return fraction


def _patch_size(radius_voxels: float) -> int:
    """Smallest odd cube edge that holds every voxel the ball touches."""
    return 2 * math.ceil(radius_voxels - 0.5) + 1


# --------------------------------------------------------------------------------------------
# public: single volume
# --------------------------------------------------------------------------------------------


def _normalise_intensity(invariants: np.ndarray) -> np.ndarray:
    """Divide every invariant by |Omega_00| (the zeroth moment); rows with Omega_00 = 0 stay 0."""
    first = invariants[..., :1]
    return np.divide(invariants, first, out=np.zeros_like(invariants), where=first > 0)


def zernike_descriptors(
    volume: np.ndarray, order: int = 8, *, normalization: str = "none"
) -> np.ndarray:
    """Rotation-invariant 3D Zernike descriptors ||Omega_nl|| of a cubic volume.

    With ``normalization="none"`` or ``"intensity"`` the unit ball is the ball inscribed in the
    cube: voxel centres ``k`` (0-based, ``[z, y, x]``) map to ``(k - (D-1)/2) / (D/2)``, the
    voxel volume is ``(2/D)³``, and voxels the sphere cuts count with the fraction of their cube
    inside it. Moments are exact integrals of the Zernike polynomials over each voxel cube.

    Args:
        volume: ``(D, D, D)`` real, finite density.
        order: Maximal order ``n`` (8 gives 25 values, 20 gives 121).
        normalization: One of

            - ``"none"``: the moments as defined above (they scale linearly with intensity).
            - ``"intensity"``: every invariant divided by ||Omega_00|| = |3/(4π) ∫ f dV|, so the
              first value is 1 and the rest do not change when the density is scaled.
            - ``"novotni_klein"``: the normalisation of Novotni & Klein's reference code (and
              pyzernike, which wraps it), for comparison with published descriptors. The object
              is translated to its centre of mass and scaled so that *twice the root-mean-square
              distance* of its nonzero voxels from the centre of mass maps to radius 1 (their
              ``ComputeScale_RadiusVar``; not the farthest voxel). Voxels farther than that radius
              are dropped, whole voxels are integrated (no partial-volume weights), and the
              moments are not divided by the mass. As in their code, the centre of mass is
              computed from cube integrals (voxel ``k`` spans ``[k, k+1]``) while the radius and
              the cut use the voxel index ``k`` itself, half a voxel apart, and their radius
              pairs the first array axis with the second axis's centre of mass and vice versa
              (an indexing slip in ``ComputeScale_RadiusVar``). Both quirks are reproduced, so the
              descriptors of their test cuboid agree with pyzernike's to the 6 digits stored;
              the second one makes the scale, hence the descriptors, depend on where the object
              sits in the grid, so use this option to compare with their numbers, not for
              rotation-invariant features.

    Returns:
        ``(K,)`` float64 invariants in (n ascending, l ascending) order, K = len(zernike_indices).

    Raises:
        ValueError: non-cubic or non-finite volume, bad order or normalization, or an empty
            volume with ``normalization="novotni_klein"``.
    """
    order = _check_order(order)
    normalization = _check_normalization(normalization)
    volume = _check_volume(volume).astype(np.float64, copy=False)
    size = volume.shape[0]
    if normalization == "novotni_klein":
        weighted, edges = _novotni_klein_frame(volume)
    else:
        radius = size / 2.0
        weighted = volume * _ball_fraction(size, radius)
        boundary = (np.arange(size + 1) - size / 2.0) / radius
        edges = np.stack([boundary] * 3)
    geometric = _geometric_moments(weighted, edges, order)
    invariants = _invariants_from_moments(_moments_from_geometric(geometric, order), order)
    if normalization == "intensity":
        invariants = _normalise_intensity(invariants)
    return invariants


def _novotni_klein_frame(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass, scale and cut as in Novotni & Klein's ZernikeDescriptor code."""
    mass = volume.sum()
    nonzero = volume != 0
    if mass == 0 or not nonzero.any():
        raise ValueError("volume: expected a nonzero total mass for normalization='novotni_klein'")
    index = np.arange(volume.shape[0], dtype=float)
    # centre of mass from ∫ x over cubes [k, k+1], i.e. in cube-edge coordinates
    centre = np.array(
        [
            np.sum(volume.sum(axis=(1, 2)) * (index + 0.5)) / mass,
            np.sum(volume.sum(axis=(0, 2)) * (index + 0.5)) / mass,
            np.sum(volume.sum(axis=(0, 1)) * (index + 0.5)) / mass,
        ]
    )  # [z, y, x]
    # Their radius and cut use the voxel index itself (half a voxel from the centre of mass).
    dz, dy, dx = (index - centre[a] for a in range(3))
    squared = dz[:, None, None] ** 2 + dy[None, :, None] ** 2 + dx[None, None, :] ** 2
    # Their ComputeScale_RadiusVar reads voxel (z + d*y)*d + x, i.e. it pairs the first array
    # axis with the second axis's centre and vice versa; reproduce that to match their numbers.
    swapped = dy[:, None, None] ** 2 + dz[None, :, None] ** 2 + dx[None, None, :] ** 2
    radius = 2.0 * math.sqrt(swapped[nonzero].mean())
    weighted = np.where(squared > radius * radius, 0.0, volume)
    edges = np.stack([(np.arange(volume.shape[0] + 1) - centre[a]) / radius for a in range(3)])
    return weighted, edges


# --------------------------------------------------------------------------------------------
# public: batched patches
# --------------------------------------------------------------------------------------------


class ZernikeBasis:
    """Precomputed 3D Zernike basis on a ``(D, D, D)`` patch, for the invariants of many patches.

    The unit ball has radius ``radius_voxels`` about the patch's central voxel; ``D`` is the
    smallest odd edge that holds it (``2r + 1`` for an integer radius ``r``; a radius of
    ``r + 0.5`` is the ball inscribed in a ``(2r + 1)³`` cube and reproduces
    :func:`zernike_descriptors` of that cube). Each basis column holds, per voxel, the exact
    integral over the voxel cube of the real or imaginary part of ``conj(Z_nl^m)`` (``m >= 0``;
    ``m > 0`` columns scaled by sqrt(2) to stand for ``-m`` as well), times the voxel's
    fraction inside the ball and 3/(4π).

    Args:
        radius_voxels: Ball radius in voxels (> 0).
        order: Maximal order ``n``.
        dtype: Floating type of the matrix product (float32 is faster, float64 exact).

    Shapes:
        - patches: ``(N, D, D, D)``, indexed ``[z, y, x]`` like the volume.
        - matrix: ``(D³, C)`` with ``C = Σ_(n,l) (2l + 1)`` (165 for order 8).
        - invariants: ``(N, K)``, ``K = len(zernike_indices(order))``.

    Example:
        ::

            basis = ZernikeBasis(4.0, order=8)
            patches = extract_patches(volume, centers_vox, basis.radius_voxels)
            descriptors = basis.invariants(patches)  # (N, 25)
    """

    def __init__(self, radius_voxels: float, order: int = 8, dtype: type = np.float32) -> None:
        if not np.isfinite(radius_voxels) or radius_voxels <= 0:
            raise ValueError(f"radius_voxels={radius_voxels!r}: expected a positive number")
        self.order = _check_order(order)
        self.radius_voxels = float(radius_voxels)
        self.size = _patch_size(self.radius_voxels)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype={dtype!r}: expected a floating type (float32 or float64)")
        self.indices = zernike_indices(self.order)
        matrix, groups = self._build()
        self.matrix = matrix.astype(self.dtype)
        self._groups = groups.astype(self.dtype)
        self._torch_cache: dict = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(radius_voxels={self.radius_voxels:g}, order={self.order}, "
            f"size={self.size}, invariants={len(self.indices)}, dtype={self.dtype.name})"
        )

    @property
    def num_invariants(self) -> int:
        """Number of invariants K per patch."""
        return len(self.indices)

    def _build(self) -> tuple[np.ndarray, np.ndarray]:
        size, radius, order = self.size, self.radius_voxels, self.order
        fraction = _ball_fraction(size, radius).reshape(-1)
        boundary = (np.arange(size + 1) - size / 2.0) / radius
        cell = _cell_integrals(boundary, order)  # (D, order+1), same along z, y, x
        layout = _moment_table(order)
        matrix = np.zeros((size**3, layout[self.indices[-1]].stop))
        for l, m, stack in _harmonic_stacks(order):
            # values[nu, z, y, x] = ∫_voxel r^2nu S_lm, contracted axis by axis
            values = np.tensordot(stack, cell, axes=([1], [1]))  # (nu, q, r, x)
            values = np.tensordot(values, cell, axes=([1], [1]))  # (nu, r, x, y)
            values = np.tensordot(values, cell, axes=([1], [1]))  # (nu, x, y, z)
            values = values.transpose(0, 3, 2, 1).reshape(len(stack), -1)  # (nu, zyx)
            for n in range(l, order + 1, 2):
                column = np.conj(_zernike_from_stack(n, l, values)) * fraction * _PREFACTOR
                start = layout[(n, l)].start
                if m == 0:
                    matrix[:, start] = column.real
                else:
                    matrix[:, start + 2 * m - 1] = math.sqrt(2.0) * column.real
                    matrix[:, start + 2 * m] = math.sqrt(2.0) * column.imag
        groups = np.zeros((matrix.shape[1], len(self.indices)))
        for i, key in enumerate(self.indices):
            groups[layout[key], i] = 1.0
        return matrix, groups

    def invariants(
        self,
        patches: np.ndarray,
        *,
        normalization: str = "none",
        backend: str = "numpy",
        batch_size: int = 65536,
    ) -> np.ndarray:
        """Rotation-invariant norms ||Omega_nl|| of each patch, all (n, l, m) in one product.

        Args:
            patches: ``(N, D, D, D)`` real finite patches (or one ``(D, D, D)`` patch).
            normalization: ``"none"`` or ``"intensity"`` (divide by ||Omega_00||, see
                :func:`zernike_descriptors`). ``"novotni_klein"`` needs a per-object frame and
                is not available in batched form.
            backend: ``"numpy"`` (BLAS) or ``"torch"`` (CPU torch matmul; imported lazily).
            batch_size: Patches per matrix product, to bound memory.

        Returns:
            ``(N, K)`` invariants (``(K,)`` for a single patch), in this basis's dtype.
        """
        _check_normalization(normalization, ("none", "intensity"))
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend={backend!r}: expected 'numpy' or 'torch'")
        patches = np.asarray(patches)
        single = patches.ndim == 3
        if single:
            patches = patches[None]
        expected = (self.size,) * 3
        if patches.ndim != 4 or patches.shape[1:] != expected:
            raise ValueError(
                f"patches.shape={patches.shape!r}: expected (N, {self.size}, {self.size}, {self.size})"
            )
        if not np.all(np.isfinite(patches)):
            raise ValueError("patches: expected finite values, found NaN or inf")
        flat = patches.reshape(len(patches), -1)
        out = np.empty((len(flat), self.num_invariants), dtype=self.dtype)
        for start in range(0, len(flat), batch_size):
            block = flat[start : start + batch_size].astype(self.dtype, copy=False)
            out[start : start + batch_size] = (
                self._invariants_torch(block)
                if backend == "torch"
                else self._invariants_numpy(block)
            )
        if normalization == "intensity":
            out = _normalise_intensity(out)
        return out[0] if single else out

    def _invariants_numpy(self, block: np.ndarray) -> np.ndarray:
        projected = block @ self.matrix
        np.square(projected, out=projected)
        return np.sqrt(projected @ self._groups)

    def _invariants_torch(self, block: np.ndarray) -> np.ndarray:
        import torch

        if "matrix" not in self._torch_cache:
            self._torch_cache["matrix"] = torch.from_numpy(self.matrix)
            self._torch_cache["groups"] = torch.from_numpy(self._groups)
        with torch.no_grad():
            projected = torch.from_numpy(np.ascontiguousarray(block)) @ self._torch_cache["matrix"]
            return torch.sqrt(projected.square_() @ self._torch_cache["groups"]).numpy()


# --------------------------------------------------------------------------------------------
# patches around atoms
# --------------------------------------------------------------------------------------------


def extract_patches(
    volume: np.ndarray,
    centers_vox: np.ndarray | None = None,
    radius_voxels: float = 4.0,
    *,
    positions_A: np.ndarray | None = None,
    sampling: float | None = None,
    interpolation: str = "nearest",
) -> np.ndarray:
    """Cut ``(D, D, D)`` patches centred on atoms out of a volume, zero outside its borders.

    Give either ``centers_vox`` (voxel coordinates ``[z, y, x]``, may be fractional) or
    ``positions_A`` (Å, ``(x, y, z)`` as in the project's atom files, voxel ``k`` centred at
    ``k * sampling``) with ``sampling``. ``D = 2 * ceil(radius_voxels - 0.5) + 1``, the same as
    ``ZernikeBasis(radius_voxels).size``.

    Args:
        volume: ``(Z, Y, X)`` volume (need not be cubic).
        centers_vox: ``(N, 3)`` centres in voxels, ``[z, y, x]``.
        radius_voxels: Ball radius in voxels.
        positions_A: ``(N, 3)`` atom positions in Å, ``(x, y, z)``.
        sampling: Voxel size in Å (with ``positions_A``).
        interpolation: ``"nearest"`` centres each patch on the nearest voxel (fast, up to half a
            voxel off-centre); ``"linear"`` shifts it to the exact centre by trilinear
            interpolation (a slight blur, but the ball is centred on the atom).

    Returns:
        ``(N, D, D, D)`` patches in the volume's floating dtype (float32 for integer input).
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume.shape={volume.shape!r}: expected a 3D array [z, y, x]")
    if not np.isfinite(radius_voxels) or radius_voxels <= 0:
        raise ValueError(f"radius_voxels={radius_voxels!r}: expected a positive number")
    if interpolation not in ("nearest", "linear"):
        raise ValueError(f"interpolation={interpolation!r}: expected 'nearest' or 'linear'")
    centers = _centers_in_voxels(centers_vox, positions_A, sampling)
    if not np.issubdtype(volume.dtype, np.floating):
        volume = volume.astype(np.float32)
    half = _patch_size(radius_voxels) // 2
    size = 2 * half + 1
    if interpolation == "nearest":
        corner = np.rint(centers).astype(np.int64) - half
        return _gather(volume, corner, size)
    base = np.floor(centers)
    weight = (centers - base).astype(volume.dtype)  # (N, 3), weight of the upper neighbour
    out = _gather(volume, base.astype(np.int64) - half, size + 1)
    # trilinear = three separable linear passes: f + w * (f[upper] - f[lower]) along z, y, x
    for axis in (1, 2, 3):
        lower = [slice(None)] * 4
        upper = [slice(None)] * 4
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        step = out[tuple(upper)] - out[tuple(lower)]
        step *= weight[:, axis - 1].reshape(-1, 1, 1, 1)
        step += out[tuple(lower)]
        out = step
    return out


def _centers_in_voxels(
    centers_vox: np.ndarray | None, positions_A: np.ndarray | None, sampling: float | None
) -> np.ndarray:
    if (centers_vox is None) == (positions_A is None):
        raise ValueError("centers_vox/positions_A: expected exactly one of them")
    if positions_A is not None:
        if sampling is None or not np.isfinite(sampling) or sampling <= 0:
            raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
        centers = np.asarray(positions_A, dtype=float)[..., ::-1] / sampling
        name = "positions_A"
    else:
        centers = np.asarray(centers_vox, dtype=float)
        name = "centers_vox"
    if centers.ndim != 2 or centers.shape[1] != 3:
        raise ValueError(f"{name}.shape={centers.shape!r}: expected (N, 3)")
    if not np.all(np.isfinite(centers)):
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return centers


def _gather(volume: np.ndarray, corner: np.ndarray, size: int) -> np.ndarray:
    """Patches ``volume[c : c + size]`` per axis for each corner ``c``, zero-padded."""
    if len(corner) == 0:
        return np.zeros((0, size, size, size), dtype=volume.dtype)
    low = np.maximum(0, -corner.min(axis=0))
    high = np.maximum(0, corner.max(axis=0) + size - np.array(volume.shape))
    if low.any() or high.any():
        volume = np.pad(volume, list(zip(low, high)))
        corner = corner + low
    windows = np.lib.stride_tricks.sliding_window_view(volume, (size, size, size))
    return windows[corner[:, 0], corner[:, 1], corner[:, 2]]


def atom_descriptors(
    volume: np.ndarray,
    positions_A: np.ndarray,
    sampling: float,
    radius_A: float,
    order: int = 8,
    *,
    normalization: str = "none",
    interpolation: str = "linear",
    dtype: type = np.float32,
    basis: ZernikeBasis | None = None,
) -> np.ndarray:
    """Zernike invariants of the density in a ball of ``radius_A`` around each atom.

    Args:
        volume: ``(Z, Y, X)`` reconstructed volume, voxel ``k`` centred at ``k * sampling``; or a
            list of such volumes (same atoms in each), described in one batched product.
        positions_A: ``(N, 3)`` atom positions in Å, ``(x, y, z)``.
        sampling: Voxel size in Å.
        radius_A: Ball radius in Å (``radius_A / sampling`` voxels).
        order: Maximal order ``n``.
        normalization: ``"none"`` or ``"intensity"`` (see :func:`zernike_descriptors`).
        interpolation: Patch centring, see :func:`extract_patches`.
        dtype: Floating type of the product.
        basis: A prebuilt :class:`ZernikeBasis` to reuse (must match radius and order).

    Returns:
        ``(N, K)`` invariants (a list of them, one per volume, for a list of volumes).
    """
    if not np.isfinite(sampling) or sampling <= 0:
        raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
    if not np.isfinite(radius_A) or radius_A <= 0:
        raise ValueError(f"radius_A={radius_A!r}: expected a positive radius in Å")
    radius_voxels = radius_A / sampling
    if basis is None:
        basis = _cached_basis(round(radius_voxels, 9), _check_order(order), np.dtype(dtype).name)
    elif not math.isclose(basis.radius_voxels, radius_voxels) or basis.order != order:
        raise ValueError(
            f"basis={basis!r}: expected radius_voxels={radius_voxels:g} and order={order}"
        )
    volumes = volume if isinstance(volume, (list, tuple)) else [volume]
    patches = []
    for v in volumes:
        v = np.asarray(v)
        if not np.all(np.isfinite(v)):
            raise ValueError("volume: expected finite values, found NaN or inf")
        patches.append(
            extract_patches(
                v.astype(basis.dtype, copy=False),
                radius_voxels=radius_voxels,
                positions_A=positions_A,
                sampling=sampling,
                interpolation=interpolation,
            )
        )
    # one matrix product for all volumes' patches
    invariants = basis.invariants(
        np.concatenate(patches) if len(patches) > 1 else patches[0], normalization=normalization
    )
    if volumes is volume:
        return list(np.split(invariants, len(volumes)))
    return invariants


@lru_cache(maxsize=8)
def _cached_basis(radius_voxels: float, order: int, dtype: str) -> ZernikeBasis:
    return ZernikeBasis(radius_voxels, order, dtype=np.dtype(dtype))
