"""Lossy codecs of the stored float arrays, and the sha256 digests the store keeps of each sample.

``"float16"`` stores float16 (10 mantissa bits); ``"bitround:K"`` keeps K of float32's 23
mantissa bits (round to nearest, ties to even; the zeros compress well). Lossless float32 is
the default (no codec).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from simgen.registry import Param, registry
from simgen.store.schema import CHECKSUMMED_ARRAYS, LOSSY_ARRAYS

__all__ = [
    "LOSSY_CODECS",
    "parse_lossy",
    "encode_lossy",
    "sample_digests",
    "combined_hex",
    "meta_digest",
]

#: Codec names: float16, and bitround with K (1..23) mantissa bits.
LOSSY_CODECS = ("float16", "bitround")
#: The codecs in the spec registry (:mod:`simgen.registry`), for ``simgen list codecs``.
CODEC_REGISTRY = registry(
    "codec",
    "lossy codecs (datasets.yaml storage.lossy: {ARRAY: CODEC} for "
    + ", ".join(LOSSY_ARRAYS)
    + "; lossless float32 when omitted)",
)
CODEC_REGISTRY.register(
    "float16", str, (), "10 mantissa bits, values up to 65504 (written float16)"
)
CODEC_REGISTRY.register(
    "bitround",
    str,
    (
        Param(
            "K",
            23,
            minimum=1,
            maximum=23,
            kind=int,
            doc="float32 mantissa bits kept, 1..23 (round to nearest, ties to even)",
        ),
    ),
    "float32 with the low 23 − K mantissa bits zeroed (compresses well; written bitround:K)",
)
_EXPECTED = 'lossless (omit), "float16" or "bitround:K" with 1 <= K <= 23 mantissa bits'


def parse_lossy(codec: str, key: str = "lossy", where=None) -> tuple[str, int]:
    """``"float16"`` -> ("float16", 10); ``"bitround:K"`` -> ("bitround", K), 1 <= K <= 23.

    ``where`` (an object with ``.error(key, value, expected) -> ValueError``, as the catalogue
    loader's) words the error; without it the error is ``"{key}={codec!r}: expected ..."``.
    """

    def fail():
        if where is not None:
            return where.error(key, codec, _EXPECTED)
        return ValueError(f"{key}={codec!r}: expected {_EXPECTED}")

    if codec == "float16":
        return ("float16", 10)
    if isinstance(codec, str) and codec.startswith("bitround:"):
        try:
            bits = int(codec.split(":", 1)[1])
        except ValueError:
            raise fail() from None
        if 1 <= bits <= 23:
            return ("bitround", bits)
    raise fail()


def stored_dtype(codec: str | None):
    """The dtype an array is stored with under ``codec``."""
    return np.float16 if codec == "float16" else np.float32


def encode_lossy(values: np.ndarray, codec: str | None) -> tuple[np.ndarray, float, float]:
    """Apply a lossy encoding; return (stored array, max |error|, RMS error).

    ``codec`` is None (lossless float32), ``"float16"`` or ``"bitround:K"``.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    if codec is None:
        return values, 0.0, 0.0
    kind, bits = parse_lossy(codec, "lossy")
    if kind == "float16":
        if np.any(np.abs(values) > np.finfo(np.float16).max):
            raise ValueError(
                f"lossy={codec!r}: values up to {np.abs(values).max():.3g} overflow float16 (max 65504); "
                "use bitround:K instead"
            )
        stored = values.astype(np.float16)
    else:
        drop = 23 - bits
        raw = values.view(np.uint32)
        if drop > 0:
            half = np.uint32(1 << (drop - 1))
            lsb = (raw >> np.uint32(drop)) & np.uint32(1)
            mask = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
            raw = ((raw + half - np.uint32(1) + lsb) & mask).astype(np.uint32)
        stored = raw.view(np.float32)
    error = stored.astype(np.float64) - values.astype(np.float64)
    if error.size == 0:
        return stored, 0.0, 0.0
    return stored, float(np.abs(error).max()), float(np.sqrt(np.mean(error**2)))


def _digest(values: np.ndarray) -> bytes:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    values = np.ascontiguousarray(values)
    h = hashlib.sha256()
    h.update(f"{values.dtype.str}{values.shape}".encode())
    h.update(values.tobytes())
    return h.digest()


def sample_digests(
    arrays: Mapping[str, np.ndarray | None], names: Sequence[str] = CHECKSUMMED_ARRAYS
) -> np.ndarray:
    """(K, 32) uint8 sha256 digests of a sample's stored arrays, in ``names`` order (zeros for
    an array the sample does not have)."""
    out = np.zeros((len(names), 32), dtype=np.uint8)
    for k, name in enumerate(names):
        values = arrays.get(name)
        if values is not None:
            out[k] = np.frombuffer(_digest(values), dtype=np.uint8)
    return out


def meta_digest(values) -> str:
    """sha256 (hex) of a whole ``/meta/<field>`` or ``/complete`` array: dtype, shape and values.

    Text fields (whatever dtype Zarr returns them in) are hashed as their UTF-8 strings joined by
    NUL, so the digest does not depend on how the strings are held in memory.
    """
    values = np.asarray(values)
    h = hashlib.sha256()
    if values.dtype.kind in "OUST":
        h.update(f"str{values.shape}".encode())
        h.update("\x00".join(str(v) for v in values.reshape(-1)).encode())
    else:
        values = np.ascontiguousarray(values)
        h.update(f"{values.dtype.str}{values.shape}".encode())
        h.update(values.tobytes())
    return h.hexdigest()


def combined_hex(digests: np.ndarray) -> str:
    """A sample's sha256 (hex) over its per-array digests."""
    return hashlib.sha256(np.ascontiguousarray(digests, dtype=np.uint8).tobytes()).hexdigest()
