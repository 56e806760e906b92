"""A PNG montage of one stored sample: projections, volume and target, true atoms marked."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

__all__ = ["preview"]

logger = logging.getLogger(__name__)


def preview(
    store_path: str | Path,
    index: int = 0,
    out: str | Path = "preview.png",
    *,
    n_projections: int = 4,
) -> Path:
    """Write a montage of sample ``index`` of a store.

    Top row: measured projections at ``n_projections`` nominal angles spread over the tilt range
    (detector counts). Bottom rows: maximum-intensity projections of the reconstruction and of
    the ideal target volume along z (x–y plane) and along y (x–z plane, the plane of the missing
    wedge), in Å² per voxel, with the true atom centres marked and coloured by element (Jmol
    colours). Axes are in Å in the volume frame (voxel k centred at k·sampling).

    For a sample with beam-damage events (:mod:`simgen.damage`) the markers are the initial
    structure; atoms that hopped are ringed in cyan with a line to their final position (a cross),
    sputtered atoms are ringed in red, and the title gives the counts.

    Parameters
    ----------
    store_path
        A store written by :mod:`simgen.store`.
    index
        Sample index in the store (complete or not).
    out
        PNG path.
    n_projections
        Number of projections shown.

    Returns
    -------
    Path
        ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.data import chemical_symbols
    from ase.data.colors import jmol_colors

    from simgen.store import open_dataset

    ds = open_dataset(store_path, include_incomplete=True)
    n = len(ds)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ValueError(f"index={index!r}: expected a sample index in 0..{n - 1}")
    sample = ds.read(int(index))
    if not sample["complete"]:
        logger.warning(
            "sample %d of %s is not complete; its arrays may be empty", index, store_path
        )
    s = float(sample["sampling"])
    tilt_series, angles = sample["tilt_series"], np.asarray(sample["angles"])
    size = tilt_series.shape[-1]
    extent = (-0.5 * s, (size - 0.5) * s, -0.5 * s, (size - 0.5) * s)
    positions, numbers = np.asarray(sample["positions"]), np.asarray(sample["numbers"])
    moved, sputtered, final = _damage_marks(ds, int(index), len(positions))

    picks = np.unique(
        np.linspace(0, len(angles) - 1, min(n_projections, len(angles))).round().astype(int)
    )
    volumes = [("reconstruction", sample["volume"])]
    if sample.get("target") is not None:
        volumes.append(("target", sample["target"]))
    ncols = max(len(picks), 2 * len(volumes))
    fig, axes = plt.subplots(2, ncols, figsize=(3.1 * ncols, 6.4), squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)

    dose = sample.get("dose")
    dose_text = f", {dose:.3g} e/Å²" if isinstance(dose, (int, float)) else ""
    for col, a in enumerate(picks):
        ax = axes[0, col]
        ax.set_visible(True)
        im = ax.imshow(tilt_series[a], origin="lower", extent=extent, cmap="gray")
        ax.set_title(f"θ = {angles[a]:+.1f}°{dose_text}", fontsize=9)
        ax.set_xlabel("x (Å)", fontsize=8)
        ax.set_ylabel("y (Å)", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="counts")

    colours = [jmol_colors[int(z)] for z in numbers]
    col = 0
    for name, volume in volumes:
        for axis, (h, v), label in (
            (0, (0, 1), "x–y (max over z)"),
            (1, (0, 2), "x–z (max over y)"),
        ):
            ax = axes[1, col]
            ax.set_visible(True)
            im = ax.imshow(
                np.asarray(volume).max(axis=axis), origin="lower", extent=extent, cmap="magma"
            )
            if len(positions):
                # Big particles: smaller, translucent markers so the density stays visible.
                crowd = min(1.0, (300.0 / len(positions)) ** 0.5)
                ax.scatter(
                    positions[:, h],
                    positions[:, v],
                    s=6 * crowd,
                    c=colours,
                    alpha=0.35 + 0.65 * crowd,
                    edgecolors="white" if crowd > 0.5 else "none",
                    linewidths=0.2,
                )
            for ids, colour in ((moved, "cyan"), (sputtered, "red")):
                if len(ids):
                    ax.scatter(
                        positions[ids, h],
                        positions[ids, v],
                        s=40,
                        facecolors="none",
                        edgecolors=colour,
                        linewidths=0.9,
                    )
            if len(moved):
                ax.plot(
                    np.stack([positions[moved, h], final[moved, h]]),
                    np.stack([positions[moved, v], final[moved, v]]),
                    color="cyan",
                    lw=0.6,
                )
                ax.scatter(final[moved, h], final[moved, v], s=14, marker="x", c="cyan", lw=0.8)
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.set_xlabel("x (Å)", fontsize=8)
            ax.set_ylabel(("y", "z")[axis] + " (Å)", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="Å² / voxel")
            col += 1

    present = sorted({int(z) for z in numbers})
    handles = [
        plt.Line2D(
            [], [], marker="o", linestyle="", color=jmol_colors[z], label=chemical_symbols[z]
        )
        for z in present
    ]
    if len(moved) or len(sputtered):
        handles += [
            plt.Line2D([], [], marker="o", linestyle="", mfc="none", mec="cyan", label="hopped"),
            plt.Line2D([], [], marker="o", linestyle="", mfc="none", mec="red", label="sputtered"),
        ]
    if handles:
        fig.legend(handles=handles, loc="lower right", fontsize=8, title="true atoms")
    fields = [
        str(sample.get(k))
        for k in ("morphology", "composition", "noise_model", "split")
        if sample.get(k) not in (None, "")
    ]
    damage_text = ""
    if sample.get("damage_model") not in (None, ""):
        damage_text = (
            f"\n{sample.get('tilt_scheme')} acquisition, damage {sample['damage_model']}: "
            f"{len(moved)} atoms hopped, {len(sputtered)} sputtered over "
            f"{float(sample.get('total_dose', 0.0)):.3g} e/Å²"
        )
    fig.suptitle(
        f"{Path(store_path).name} sample {index}: {', '.join(fields)}; {len(positions)} atoms; "
        f"{size}³ voxels at {s:g} Å{damage_text}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 0.95, 0.96))
    from simgen.tools.outputs import atomic_path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, record=True) as tmp:  # recorded: --overwrite may replace it later
        fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    return out


def _damage_marks(ds, index: int, n_atoms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows of hopped atoms, rows of sputtered atoms, final positions) of a stored sample."""
    empty = np.zeros(0, dtype=np.int64)
    events = ds.events(index)
    if len(events["id"]) == 0:
        return empty, empty, np.zeros((n_atoms, 3))
    history = ds.history(index)
    sputtered = history.sputtered_atoms()
    moved = np.setdiff1d(history.moved_atoms(), sputtered)
    final = np.array(history.atoms.positions, dtype=np.float64)
    after = history.final()
    final[np.asarray(after.arrays["ids"])] = after.positions
    return moved, sputtered, final
