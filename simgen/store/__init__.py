"""Zarr v3 stores of simulated (or imported) samples, one concept per module:

- :mod:`simgen.store.schema`: the declared schema (every array and meta field: dtype, shape,
  fill, chunking, unit, meaning), read by the three modules below;
- :mod:`simgen.store.writer`: :class:`StoreLayout`, :func:`create_store`, :func:`write_sample`, :func:`consolidate`,
  :func:`write_single_sample_store`;
- :mod:`simgen.store.reader`: :func:`open_dataset` -> :class:`Dataset`, :func:`read_samples`
  (the only part ``models`` and ``benchmark`` import);
- :mod:`simgen.store.verify`: :func:`inspect_store`, :func:`format_inspection`,
  :func:`verify_store`;
- :mod:`simgen.store.codecs`: the lossy codecs (``float16``, ``bitround:K``) and the per-sample
  sha256 digests.

Lossless Zstd compression by default; ``lossy={"volume": "float16" | "bitround:K"}`` stores an
array as float16 or with K float32 mantissa bits, and records the max and RMS absolute error it
introduced (per sample in ``/meta/<array>_max_error`` / ``_rms_error``, dataset-wide in the
array's attributes after :func:`consolidate`). Checksums are of the stored values, so
:func:`verify_store` detects any chunk that changed or was truncated after generation.

``/atoms`` holds the initial structure; with damage models the structure seen by every
projection, the final one and the dose-weighted mean are rebuilt from it and the damage events
(:meth:`Dataset.history`), exactly at the store's float32 precision.
"""

from __future__ import annotations

from simgen.store.codecs import encode_lossy, parse_lossy, sample_digests
from simgen.store.reader import DamagedDataError, Dataset, open_dataset, read_samples
from simgen.store.schema import (
    ALIGNED_ARRAYS,
    CHECKSUMMED_ARRAYS,
    LOCK_NAME,
    MANIFEST_NAME,
    READABLE_SCHEMAS,
    SAMPLE_ARRAYS,
    SCHEMA_VERSION,
    TRACKED_ARRAYS,
    TRUTHS,
)
from simgen.store.verify import format_inspection, inspect_store, verify_store
from simgen.store.writer import (
    StoreLayout,
    consolidate,
    create_store,
    default_max_atoms,
    write_sample,
    write_single_sample_store,
)

__all__ = [
    "SCHEMA_VERSION",
    "READABLE_SCHEMAS",
    "SAMPLE_ARRAYS",
    "CHECKSUMMED_ARRAYS",
    "TRACKED_ARRAYS",
    "ALIGNED_ARRAYS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "TRUTHS",
    "StoreLayout",
    "create_store",
    "write_sample",
    "consolidate",
    "write_single_sample_store",
    "open_dataset",
    "DamagedDataError",
    "Dataset",
    "read_samples",
    "inspect_store",
    "format_inspection",
    "verify_store",
    "sample_digests",
    "default_max_atoms",
    "encode_lossy",
    "parse_lossy",
]
