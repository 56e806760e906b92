"""Checking a store: :func:`inspect_store` (a summary) and :func:`verify_store` (every complete
sample's checksums recomputed from what is on disk). Both read :mod:`simgen.store.schema`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from simgen.store.codecs import combined_hex, meta_digest, sample_digests
from simgen.store.reader import RaggedGroup, open_group, read_samples, read_stored
from simgen.store.schema import (
    CHECKSUMMED_ARRAYS,
    COUNTED_META,
    MANIFEST_NAME,
    RAGGED_COUNTS,
    SAMPLE_ARRAYS,
)

__all__ = ["inspect_store", "format_inspection", "verify_store", "missing_samples"]


def _disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                continue
    return total


def _nan_stat(function, values: np.ndarray) -> float:
    return float(function(values)) if np.isfinite(values).any() else float("nan")


def inspect_store(path: str | Path) -> dict:
    """Summary of a store: completeness, failures, counts by field, shapes, size on disk."""
    path = Path(path)
    root = open_group(path, "r")
    complete = np.asarray(read_samples(root["complete"]), dtype=bool)
    failed_reasons = np.asarray(root["failed"][:]) if "failed" in root else np.array([], dtype=str)
    failed = [
        (int(i), str(failed_reasons[i]))
        for i in np.flatnonzero(failed_reasons != "")
        if not complete[i]
    ]
    meta = {name: np.asarray(arr[:]) for name, arr in root["meta"].arrays()}
    counts = {}
    for field_name in COUNTED_META:
        if field_name not in meta:
            continue
        values = meta[field_name][complete]
        uniques, n = np.unique(values, return_counts=True)
        counts[field_name] = {
            (u.item() if isinstance(u, np.generic) else u): int(c) for u, c in zip(uniques, n)
        }
    raw = sum(int(np.prod(root[name].shape[1:])) * 4 for name in SAMPLE_ARRAYS if name in root)
    runs = list(root.attrs.get("runs", []))
    alignment = {}
    if "align" in meta and "align_shift_error_pm" in meta:
        for method in np.unique(meta["align"][complete]):
            if not str(method):  # samples without an alignment record (imported data)
                continue
            chosen = complete & (meta["align"] == method)
            shift = meta["align_shift_error_pm"][chosen]
            angle = meta["align_angle_error_deg"][chosen]
            alignment[str(method)] = {
                "n": int(chosen.sum()),
                "shift_error_pm_median": _nan_stat(np.nanmedian, shift),
                "shift_error_pm_max": _nan_stat(np.nanmax, shift),
                "angle_error_deg_median": _nan_stat(np.nanmedian, angle),
            }
    return {
        "path": str(path),
        "dataset": root.attrs.get("dataset", ""),
        "schema_version": root.attrs.get("schema_version"),
        "n_samples": int(len(complete)),
        "n_complete": int(complete.sum()),
        "n_missing": int((~complete).sum()),
        "missing": [int(i) for i in np.flatnonzero(~complete)],
        "n_failed": len(failed),
        "failed": failed,
        "counts": counts,
        "n_atoms_total": int(meta["n_atoms"][complete].sum()) if "n_atoms" in meta else 0,
        "shapes": {name: list(root[name].shape) for name in SAMPLE_ARRAYS if name in root},
        "sampling": float(root.attrs.get("sampling", 0.0)),
        "lossy": {
            name: dict(root[name].attrs.get("lossy", {}))
            for name in dict(root.attrs.get("lossy", {}))
            if name in root
        },
        "size_on_disk": _disk_usage(path),
        "raw_bytes_per_sample": raw,
        "dataset_sha256": root.attrs.get("dataset_sha256", ""),
        "created": dict(root.attrs.get("created", {})),
        "runs": runs,
        "alignment": alignment,
    }


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def format_inspection(info: Mapping) -> str:
    """Text rendering of :func:`inspect_store` for the ``simgen inspect`` command."""
    lines = [
        f"store: {info['path']}",
        f"dataset: {info['dataset']} (schema {info['schema_version']})",
        f"samples: {info['n_samples']} planned, {info['n_complete']} complete, {info['n_missing']} missing, {info['n_failed']} failed",
    ]
    shapes = info["shapes"]
    if shapes:
        lines.append(
            "arrays: "
            + ", ".join(f"{k} {tuple(v[1:])}" for k, v in shapes.items())
            + f" at {info['sampling']:g} Å"
        )
    for field_name, counts in info["counts"].items():
        text = ", ".join(
            f"{k:g}: {v}" if isinstance(k, float) else f"{k}: {v}" for k, v in counts.items()
        )
        lines.append(f"  by {field_name}: {text or '-'}")
    if info["n_complete"]:
        per_sample = info["size_on_disk"] / info["n_complete"]
        lines.append(
            f"size on disk: {_human_bytes(info['size_on_disk'])} ({_human_bytes(per_sample)} per sample; "
            f"raw float32 {_human_bytes(info['raw_bytes_per_sample'])}, ratio {info['raw_bytes_per_sample'] / max(per_sample, 1):.2f})"
        )
    else:
        lines.append(f"size on disk: {_human_bytes(info['size_on_disk'])}")
    if info.get("alignment"):
        width = max(22, *(len(method) for method in info["alignment"]))
        lines.append(
            f"{'alignment':<{width + 2}} samples  shift error (pm, median / max)  "
            "angle error (°, median)"
        )
        for method, row in info["alignment"].items():
            lines.append(
                f"  {method:<{width}} {row['n']:>7}  {row['shift_error_pm_median']:>12.1f} / "
                f"{row['shift_error_pm_max']:<8.1f}  {row['angle_error_deg_median']:>12.3f}"
            )
    for name, lossy in info["lossy"].items():
        if lossy.get("max_abs_error") is not None:
            lines.append(
                f"lossy {name}: {lossy['codec']} (max |error| {lossy['max_abs_error']:.3g}, RMS {lossy['rms_error']:.3g})"
            )
        else:
            lines.append(f"lossy {name}: {lossy.get('codec')}")
    for index, reason in info["failed"][:20]:
        lines.append(f"  failed sample {index}: {reason}")
    if len(info["failed"]) > 20:
        lines.append(f"  ... and {len(info['failed']) - 20} more failed samples")
    if info["dataset_sha256"]:
        lines.append(f"dataset sha256: {info['dataset_sha256']}")
    return "\n".join(lines)


def _load_manifest(path: Path, what: str) -> tuple[dict | None, str | None]:
    """(manifest dict, None) or (None, the problem) for the manifest at ``path``."""
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{what}={str(path)!r}: no such file"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{what}={str(path)!r}: not a valid manifest (not JSON: {exc})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("samples"), dict):
        return None, (
            f"{what}={str(path)!r}: not a valid manifest (expected the JSON object of "
            "`simgen generate` with a 'samples' entry)"
        )
    return manifest, None


def _check_meta(root, manifest: Mapping, complete: np.ndarray, where: str) -> list[str]:
    """The ``/meta`` fields and ``/complete`` flags against the manifest's digests."""
    problems = []
    expected = manifest.get("meta_sha256")
    if isinstance(expected, dict):
        present = {name: arr for name, arr in root["meta"].arrays()}
        for name, digest in expected.items():
            if name not in present:
                problems.append(f"meta/{name}: missing (listed in {where})")
                continue
            try:
                actual = meta_digest(read_samples(present[name]))
            except Exception as exc:  # a corrupt chunk raises a codec error of any type
                problems.append(f"meta/{name}: unreadable chunk ({type(exc).__name__}: {exc})")
                continue
            if actual != digest:
                problems.append(f"meta/{name}: differs from {where} (changed since it was written)")
    if manifest.get("complete_sha256") and manifest["complete_sha256"] != meta_digest(complete):
        problems.append(f"complete: flags differ from {where} (changed since it was written)")
    return problems


def _version_note(ours: Mapping, theirs: Mapping, where: str) -> str:
    """One line on the library versions behind a difference (manifests record them)."""
    if not ours or not theirs:
        return f"library versions: not recorded in {'this store' if not ours else where}"
    differ = [
        f"{name} {ours.get(name, 'absent')} here, {theirs.get(name, 'absent')} there"
        for name in sorted(set(ours) | set(theirs))
        if ours.get(name) != theirs.get(name)
    ]
    if not differ:
        return f"library versions: the same as {where} (the difference is not a version)"
    return f"library versions that differ from {where}: " + "; ".join(differ)


def _compare_published(
    checksums: np.ndarray,
    complete: np.ndarray,
    names: list[str],
    published: Mapping,
    where: str,
    versions: Mapping | None = None,
) -> list[str]:
    """This store's per-sample checksums against a published manifest: the first difference,
    and then which library versions differ (``versions``: this store's)."""
    problems = _first_difference(checksums, complete, names, published, where)
    if problems:
        theirs = published.get("versions") if isinstance(published.get("versions"), dict) else {}
        problems.append(_version_note(dict(versions or {}), theirs, where))
    return problems


def _first_difference(
    checksums: np.ndarray, complete: np.ndarray, names: list[str], published: Mapping, where: str
) -> list[str]:
    """The plan's and the samples' differences from a published manifest, up to the first
    differing sample (and its arrays)."""
    problems = []
    theirs = published["samples"]
    arrays = (
        published.get("sample_arrays") if isinstance(published.get("sample_arrays"), dict) else {}
    )
    their_names = list(published.get("arrays", names))
    if their_names != names:
        problems.append(f"arrays: this store checksums {names}, {where} {their_names}")
    n = int(published.get("n_samples", len(complete)))
    if n != len(complete):
        problems.append(f"samples: this store plans {len(complete)}, {where} {n}")
    ours = {int(i) for i in np.flatnonzero(complete)}
    missing = sorted(int(i) for i in theirs if int(i) not in ours)
    if missing:
        problems.append(
            f"{len(missing)} sample(s) of {where} are not complete here (first: {missing[:10]})"
        )
    for index in sorted(ours):
        key = str(index)
        if key not in theirs:
            problems.append(f"sample {index}: complete here but not in {where}")
            break
        if theirs[key] == combined_hex(checksums[index]):
            continue
        per_array = arrays.get(key)
        differing = [
            names[k]
            for k in range(len(names))
            if isinstance(per_array, list)
            and k < len(per_array)
            and per_array[k] != bytes(np.asarray(checksums[index, k], dtype=np.uint8)).hex()
        ]
        what = f"{differing[0]} differs" if differing else "differs (no per-array checksums there)"
        more = f" (also: {', '.join(differing[1:])})" if len(differing) > 1 else ""
        problems.append(f"first difference: sample {index}: {what}{more} from {where}")
        break
    return problems


def verify_store(
    path: str | Path, *, require_complete: bool = False, against: str | Path | None = None
) -> list[str]:
    """Recompute every complete sample's checksums; list each problem by sample index.

    Reports chunks that cannot be decoded (truncated or overwritten files), arrays whose values
    changed since generation, disagreements with ``manifest.json`` (per-sample arrays, every
    ``/meta`` field and the ``/complete`` flags), samples that are not complete (always counted;
    a problem with ``require_complete``) and, with ``against`` (a manifest published with a
    dataset), the first sample and array where this store differs from it. An empty list means
    the store is intact (and, with ``against``, identical to the published dataset).
    """
    path = Path(path)
    try:
        root = open_group(path, "r")
    except FileNotFoundError as exc:
        return [str(exc)]
    problems = []
    complete = np.asarray(read_samples(root["complete"]), dtype=bool)
    checksums = read_samples(root["checksums"])
    names = list(root.attrs.get("checksummed_arrays", CHECKSUMMED_ARRAYS))
    ragged = {group: RaggedGroup(root, group) for group in RAGGED_COUNTS if group in root}
    manifest_path = path / MANIFEST_NAME
    manifest = None
    if manifest_path.is_file():
        manifest, problem = _load_manifest(manifest_path, MANIFEST_NAME)
        if problem:
            problems.append(f"{MANIFEST_NAME}: unreadable ({problem.split(': ', 1)[-1]})")
        else:
            problems.extend(_check_meta(root, manifest, complete, MANIFEST_NAME))
            manifest = manifest["samples"]
    else:
        # Without the manifest nothing can be checked against it: never report "all match".
        problems.append(
            f"{MANIFEST_NAME}: missing (written when generation finishes; "
            "rerun the same `simgen generate` to resume and write it)"
        )
    for index in np.flatnonzero(complete):
        index = int(index)
        stored, unreadable = {}, []
        for name in names:
            try:
                stored[name] = read_stored(root, name, index, ragged)
            except Exception as exc:  # a corrupt chunk raises a codec error of any type
                unreadable.append(
                    f"sample {index}: {name}: unreadable chunk ({type(exc).__name__}: {exc})"
                )
        if unreadable:
            problems.extend(unreadable)
            continue
        digests = sample_digests(stored, names)
        for k, name in enumerate(names):
            if not np.array_equal(digests[k], checksums[index, k]):
                problems.append(
                    f"sample {index}: {name}: checksum mismatch (changed since it was written)"
                )
        if manifest is None:
            continue
        if str(index) not in manifest:
            problems.append(f"sample {index}: complete but not in {MANIFEST_NAME}")
        elif manifest[str(index)] != combined_hex(checksums[index]):
            problems.append(f"sample {index}: checksums differ from {MANIFEST_NAME}")
    if against is not None:
        published, problem = _load_manifest(Path(against), "--against")
        if problem:
            problems.append(problem)
        else:
            problems.extend(
                _compare_published(
                    checksums,
                    complete,
                    names,
                    published,
                    f"{str(against)!r}",
                    versions=root.attrs.get("versions"),
                )
            )
    if require_complete and not complete.all():
        missing = np.flatnonzero(~complete)
        problems.append(
            f"{len(missing)} of {len(complete)} samples are not complete (first: {missing[:10].tolist()})"
        )
    return problems


def missing_samples(path: str | Path) -> tuple[int, int]:
    """(samples not complete, samples planned) of the store at ``path``."""
    root = open_group(Path(path), "r")
    complete = np.asarray(read_samples(root["complete"]), dtype=bool)
    return int((~complete).sum()), int(len(complete))
