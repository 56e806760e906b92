"""``simgen``: simulate one sample, generate, validate, inspect, verify and preview datasets.

Subcommand modules are imported only when the subcommand runs, so ``simgen --help`` is instant.
Bad input ends with a one-line ``error: ...`` and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from simgen.catalog.validation import ALIGN_CHOICES, ALIGN_METHODS
from simgen.registry import IMAGING_MODES, RECONSTRUCTION_METHODS
from simgen.tools.errors import EXIT_WORK_FAILED, WorkFailed

__all__ = ["main", "parse_tilt"]

EXIT_BAD_INPUT = 2
EXIT_SOME_FAILED = 3
#: Most projections of a tilt series (0.25° steps over 180°).
MAX_ANGLES = 721
#: Most reconstruction iterations (SIRT and CGLS converge in tens to hundreds).
MAX_ITERATIONS = 10_000


def parse_tilt(text: str) -> tuple[float, ...]:
    """``START:STOP:COUNT`` (degrees, inclusive) -> the nominal tilt angles."""
    import numpy as np

    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"--tilt={text!r}: expected START:STOP:COUNT, e.g. -70:70:29") from None
    if count < 2 or not (-90 < start < stop < 90):
        raise ValueError(f"--tilt={text!r}: expected -90 < START < STOP < 90 and COUNT >= 2")
    if count > MAX_ANGLES:
        raise ValueError(
            f"--tilt={text!r}: {count} projections; expected at most {MAX_ANGLES} "
            f"({(stop - start) / (MAX_ANGLES - 1):.3g}° steps)"
        )
    return tuple(float(a) for a in np.linspace(start, stop, count))


def simulation_angles(path: str) -> tuple[float, ...]:
    """Tilt angles of ``simulate --angles``: :func:`simgen.importer.read_angles`, within ±90°."""
    import numpy as np

    from simgen.importer import read_angles

    angles = np.asarray(read_angles(path), dtype=np.float64)
    # A simulated holder tilts within ±90°; 100° is a typo or another convention (0..180°).
    outside = np.flatnonzero(np.abs(angles) > 90.0)
    if len(outside):
        k = int(outside[0])
        raise ValueError(
            f"--angles={path!r}: angle {k + 1} is {angles[k]:g}°; expected tilt angles within "
            "-90..90° (degrees)"
        )
    return tuple(float(a) for a in angles)


def non_negative_int(name):
    """argparse type: an integer >= 0 (a seed); the error names the option."""

    def convert(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}={text!r}: expected a non-negative integer"
            ) from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name}={value}: expected a non-negative integer")
        return value

    return convert


def _positive(name):
    def convert(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}={text!r}: expected a positive number"
            ) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name}={text!r}: expected a positive number")
        return value

    return convert


_LIST_TOPICS = (
    "morphologies",
    "compositions",
    "noise",
    "damage",
    "codecs",
    "imaging",
    "reconstruction",
    "alignment",
)
_CATALOG_HELP = (
    "dataset catalogue (YAML); default: ./datasets.yaml if present, "
    "else the one shipped with simgen (simgen/data/datasets.yaml)"
)


#: Stands in a help text for the registered model names; :class:`_ModelNamesHelpFormatter`
#: fills it in only when the help is printed, so building the parser imports no model module.
_MODEL_NAMES = "<MODEL NAMES>"


def _model_names(kind: str) -> str:
    """``"noise: a, b, ...; damage: c, d"`` from the spec registries (imports simgen.physics.noise and
    simgen.damage: numpy, half a second; only for ``--help``)."""
    from simgen.damage import DAMAGE_REGISTRY
    from simgen.physics.noise import NOISE_REGISTRY

    registries = {"noise": NOISE_REGISTRY, "damage": DAMAGE_REGISTRY}
    kinds = ("noise", "damage") if kind == "all" else (kind,)
    return "; ".join(f"{k} models: {', '.join(registries[k].names())}" for k in kinds)


class _ModelNamesHelpFormatter(argparse.HelpFormatter):
    """A help formatter that replaces ``<MODEL NAMES>:KIND`` by the names in the registry."""

    @staticmethod
    def _fill(text: str) -> str:
        for kind in ("noise", "damage", "all"):
            mark = f"{_MODEL_NAMES}:{kind}"
            if mark in text:
                text = text.replace(mark, _model_names(kind))
        return text

    def _get_help_string(self, action) -> str:
        return self._fill(super()._get_help_string(action) or "")

    def _format_text(self, text: str) -> str:
        return super()._format_text(self._fill(text))


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simgen", description=__doc__.splitlines()[0].replace("``", "")
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    from simgen import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "simulate",
        help="simulate one sample (tilt series, noise, reconstruction) into a store",
        formatter_class=_ModelNamesHelpFormatter,
    )
    p.add_argument(
        "atoms",
        metavar="ATOMS_FILE",
        nargs="?",
        help="atomic model (xyz, extxyz, cif, AET .npy/.mat/.txt)",
    )
    p.add_argument(
        "--particle",
        metavar="MORPHOLOGY",
        help="build a particle instead of reading ATOMS_FILE ('simgen list morphologies')",
    )
    p.add_argument(
        "--composition",
        default=None,
        help="composition for --particle, e.g. Pt, L10:FePt, core-shell:Pd@Pt (default Pt; "
        "'simgen list compositions')",
    )
    p.add_argument(
        "--size-nm",
        type=_positive("--size-nm"),
        default=None,
        help="particle diameter for --particle (nm, default 2.0)",
    )
    p.add_argument("--out", required=True, help="output Zarr store (directory)")
    p.add_argument(
        "--mode",
        choices=IMAGING_MODES,
        default="linear",
        help="imaging: calibrated linear HAADF (fast) or abTEM multislice/PRISM (default linear)",
    )
    p.add_argument(
        "--dose",
        type=_positive("--dose"),
        default=1e4,
        help="dose per projection (e/Å²), default 1e4",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--tilt", default="-70:70:29", help="START:STOP:COUNT in degrees (default -70:70:29)"
    )
    g.add_argument("--angles", help="file of N angles, or N×3 Euler angles (tilt in column 2)")
    p.add_argument(
        "--sampling",
        type=_positive("--sampling"),
        default=0.4,
        help="voxel = pixel size (Å), default 0.4",
    )
    p.add_argument(
        "--size", type=int, default=None, help="volume side in voxels (default: fit the particle)"
    )
    p.add_argument(
        "--noise",
        action="append",
        default=None,
        metavar="NAME[:k=v,...]",
        help="noise model (repeatable); default poisson; 'none' for expected counts; "
        f"{_MODEL_NAMES}:noise; 'simgen list noise' shows their parameters",
    )
    p.add_argument(
        "--recon",
        choices=RECONSTRUCTION_METHODS,
        default="sirt",
        help="ASTRA reconstruction algorithm (default sirt)",
    )
    p.add_argument(
        "--iterations", type=int, default=50, help="reconstruction iterations (default 50)"
    )
    p.add_argument(
        "--align",
        choices=ALIGN_CHOICES,
        default="auto",
        help="alignment before reconstruction (auto: projection matching when the noise has "
        "geometric errors, else none)",
    )
    p.add_argument(
        "--orientation",
        default="none",
        choices=["none", "random"],
        help="orientation of a model read from a file",
    )
    p.add_argument(
        "--thermal-sigma", type=float, default=0.0, help="thermal displacement σ per axis (Å)"
    )
    p.add_argument(
        "--seed", type=non_negative_int("--seed"), default=0, help="random seed (default 0)"
    )
    p.add_argument("--preview", metavar="PNG", help="also write a preview image")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing store written by simgen (never any other folder or file)",
    )

    p = sub.add_parser(
        "generate",
        help="generate a named dataset of datasets.yaml on a Dask cluster",
        formatter_class=_ModelNamesHelpFormatter,
        epilog="The catalogue's noise_models and damage_models presets are lists of "
        f"NAME[:k=v,...] specs; {_MODEL_NAMES}:all ('simgen list noise', 'simgen list damage' "
        "show their parameters).",
    )
    p.add_argument("name", help="dataset name in the catalogue (see 'simgen validate')")
    p.add_argument("--config", default=None, help=_CATALOG_HELP)
    p.add_argument("--out", help="output Zarr store (required unless --dry-run)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--workers", type=int, help="local Dask worker processes (default: one per core)"
    )
    g.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="address of a running Dask scheduler, e.g. tcp://host:8786",
    )
    p.add_argument("--limit", type=int, help="generate only the first N samples of the plan")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")

    p = sub.add_parser("validate", help="check datasets.yaml")
    p.add_argument("config", nargs="?", default=None, help=_CATALOG_HELP)

    p = sub.add_parser("inspect", help="summarise a store: counts, completeness, size on disk")
    p.add_argument("store", help="Zarr store (directory)")

    p = sub.add_parser("verify", help="check every sample against the store's checksum manifest")
    p.add_argument("store", help="Zarr store (directory)")
    p.add_argument(
        "--against",
        metavar="MANIFEST",
        help="also compare with a published manifest.json (names the first differing sample and array)",
    )

    p = sub.add_parser("preview", help="PNG montage of one sample: projections, slices, atoms")
    p.add_argument("store", help="Zarr store (directory)")
    p.add_argument("--sample", type=int, default=0, help="sample index (default 0)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")

    p = sub.add_parser(
        "list", help="list morphologies, composition syntax, noise models, damage models and codecs"
    )
    p.add_argument(
        "topic",
        nargs="?",
        choices=_LIST_TOPICS,
        help="only this list (default: all of them)",
    )

    p = sub.add_parser(
        "import",
        help="import an experimental tilt series and reconstruct it into a one-sample store",
    )
    p.add_argument("tilt_series", metavar="TILT_SERIES", help=".npy, .mrc, .tif or .mat")
    p.add_argument(
        "--angles", required=True, help="file of N angles, or N×3 Euler angles (tilt in column 2)"
    )
    p.add_argument("--sampling", type=_positive("--sampling"), required=True, help="pixel size (Å)")
    p.add_argument(
        "--tilt-axis",
        choices=["x", "y"],
        default="y",
        help="image direction of the tilt axis (x = columns)",
    )
    p.add_argument("--key", help="array name inside a .mat file")
    p.add_argument(
        "--stack-axis",
        type=int,
        help="axis of the projections (default: the one matching the angles)",
    )
    p.add_argument(
        "--truth", metavar="MODEL", help="ground-truth atomic model (origin at the image centre)"
    )
    p.add_argument("--elements", help="elements present, e.g. Si or Fe,Pt")
    p.add_argument(
        "--dose",
        type=_positive("--dose"),
        help="dose per projection (e/Å²) if the images are in counts",
    )
    p.add_argument(
        "--gain",
        default="auto",
        help="detector counts per electron, or 'auto' (default: estimated from the images' "
        "Poisson–Gaussian mean–variance line and recorded in the store)",
    )
    p.add_argument(
        "--origin", help="ROW,COL pixel of the tilt axis / model origin (default: image centre)"
    )
    p.add_argument(
        "--background",
        default="0",
        help="constant background counts to subtract, or 'auto' (image border mean)",
    )
    p.add_argument(
        "--align",
        nargs="?",
        const="cross_correlation",
        default="none",
        choices=ALIGN_METHODS,
        help="align the projections before reconstruction: "
        + ", ".join(ALIGN_METHODS)
        + " (default none; a bare --align is cross_correlation, as before)",
    )
    p.add_argument(
        "--recon",
        choices=RECONSTRUCTION_METHODS,
        default="sirt",
        help="ASTRA reconstruction algorithm (default sirt)",
    )
    p.add_argument(
        "--iterations", type=int, default=100, help="reconstruction iterations (default 100)"
    )
    p.add_argument("--out", required=True, help="output Zarr store (directory)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing store written by simgen (never any other folder or file)",
    )

    p = sub.add_parser(
        "thin",
        help="exact lower-dose version of a measured series (binomial thinning of its counts)",
    )
    p.add_argument("store", metavar="STORE", help="one-sample store (simgen import / simulate)")
    p.add_argument("--dose", type=_positive("--dose"), required=True, help="target dose (e/Å²)")
    p.add_argument("--out", required=True, help="output Zarr store (directory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the thinning (default 0)")
    p.add_argument(
        "--source-dose",
        type=_positive("--source-dose"),
        help="dose of the source series if its store records none (e/Å²)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing store written by simgen (never any other folder or file)",
    )
    return parser


#: Smallest volume side (voxels) of a simulated sample.
MIN_SIZE = 8
#: Bytes per voxel a simulation holds at once (volume, target, reconstruction work arrays; float32).
_BYTES_PER_VOXEL = 6 * 4
#: Bytes per tilt-series pixel (measured, expected and normalised series, FFT work; float32).
_BYTES_PER_PIXEL = 8 * 4


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"


def _physical_memory() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_iterations(iterations: int) -> None:
    """A positive number of reconstruction iterations, at most :data:`MAX_ITERATIONS`."""
    if iterations < 1:
        raise ValueError(f"--iterations={iterations}: expected a positive integer")
    if iterations > MAX_ITERATIONS:
        raise ValueError(
            f"--iterations={iterations}: expected at most {MAX_ITERATIONS} (SIRT and CGLS "
            "converge in tens to hundreds)"
        )


def check_memory(size: int, n_angles: int, option: str, args=None) -> None:
    """Refuse a volume whose simulation needs more memory than the machine has, before allocating.

    ``option`` names the parameter that set ``size`` (``--size``, or ``--sampling`` when the size
    was fitted to the particle).
    """
    need = _BYTES_PER_VOXEL * float(size) ** 3 + _BYTES_PER_PIXEL * float(n_angles) * size**2
    have = _physical_memory()
    if have is not None and need > have:
        value = getattr(args, option.lstrip("-").replace("-", "_"), None) if args else None
        raise ValueError(
            f"{option}={value if value is not None else size}: a {size}³-voxel volume "
            f"({n_angles} projections) needs about {_format_bytes(need)} of memory, this machine "
            f"has {_format_bytes(have)}; expected a coarser --sampling or a smaller --size"
        )


def _check_sampling_resolves(atoms, sampling: float) -> None:
    """Refuse a voxel size too coarse to separate neighbouring atoms (Nyquist: half their distance)."""
    import numpy as np
    from scipy.spatial import cKDTree

    positions = atoms.get_positions()
    if len(positions) < 2:
        return
    distances, _ = cKDTree(positions).query(positions, k=2)
    spacing = float(np.median(distances[:, 1]))
    if spacing > 0 and sampling > spacing / 2:
        raise ValueError(
            f"--sampling={sampling:g}: too coarse to resolve the atoms (typical nearest-neighbour "
            f"distance {spacing:.2f} Å); expected at most {spacing / 2:.2f} Å (half of it)"
        )


def _default_size(atoms, sampling: float) -> int:
    import numpy as np

    pos = atoms.get_positions()
    radius = float(np.max(np.linalg.norm(pos - pos.mean(axis=0), axis=1))) if len(pos) else 0.0
    side = (2 * radius + 6.0) / sampling
    return int(8 * np.ceil(side / 8))


def _cmd_simulate(args) -> int:
    import numpy as np

    from simgen import store, structures
    from simgen.catalog.planning import resolve_align
    from simgen.sample import SampleSpec, simulate_sample

    if (args.atoms is None) == (args.particle is None):
        raise ValueError("ATOMS_FILE: give either a model file or --particle MORPHOLOGY (not both)")
    from simgen.tools.outputs import check_output

    out = Path(args.out)
    check_output(out, "store", overwrite=args.overwrite)  # before the expensive work
    if args.preview:
        check_output(args.preview, "file", overwrite=args.overwrite, param="--preview")
    if args.atoms is not None:
        for name in ("composition", "size_nm"):
            if getattr(args, name) is not None:
                option = "--" + name.replace("_", "-")
                raise ValueError(
                    f"{option}={getattr(args, name)}: applies to --particle only; the model file "
                    f"{args.atoms!r} fixes the atoms (drop {option})"
                )
    if args.size is not None and args.size < MIN_SIZE:
        raise ValueError(
            f"--size={args.size}: expected at least {MIN_SIZE} voxels per side "
            "(omit --size to fit the particle)"
        )
    angles = simulation_angles(args.angles) if args.angles else parse_tilt(args.tilt)
    check_iterations(args.iterations)
    from simgen.physics.noise import NOISE_REGISTRY

    # Parsed once, here (a bad --noise fails before any work); the specs travel parsed.
    noise_specs = tuple(NOISE_REGISTRY.parse_spec(text) for text in args.noise or ["poisson"])
    rng = np.random.default_rng(np.random.SeedSequence(args.seed))
    if args.atoms is not None:
        atoms = structures.load_model(args.atoms)
        morphology, composition, size_nm = (
            Path(args.atoms).name,
            "+".join(sorted(set(atoms.get_chemical_symbols()))),
            0.0,
        )
        orientation = args.orientation
    else:
        args.composition = args.composition or "Pt"
        args.size_nm = args.size_nm or 2.0
        # Bounded before the particle is built: the volume that would hold it. The option named
        # is --sampling when the particle would fit at a usual voxel size (0.4 Å), else --size-nm.
        if args.size is None:

            def side(sampling):
                return int(8 * np.ceil((10.0 * args.size_nm + 6.0) / sampling / 8))

            culprit = "--size-nm"
            try:
                check_memory(side(max(args.sampling, 0.4)), len(angles), "--size-nm", args)
                culprit = "--sampling"
            except ValueError:
                pass
            check_memory(side(args.sampling), len(angles), culprit, args)
        atoms = structures.build_particle(
            args.particle,
            args.composition,
            args.size_nm,
            rng=rng,
            thermal_sigma=args.thermal_sigma,
            orientation="random",
        )
        morphology, composition, size_nm, orientation = (
            args.particle,
            args.composition,
            args.size_nm,
            "none",
        )
    _check_sampling_resolves(atoms, args.sampling)
    size = args.size if args.size is not None else _default_size(atoms, args.sampling)
    check_memory(size, len(angles), "--size" if args.size is not None else "--sampling", args)
    spec = SampleSpec(
        index=0,
        morphology=morphology,
        composition=composition,
        size_nm=size_nm,
        dose=args.dose,
        angles=angles,
        sampling=args.sampling,
        size=size,
        noise=noise_specs,
        noise_model=",".join(args.noise or ["poisson"]),
        mode=args.mode,
        orientation=orientation,
        recon=args.recon,
        iterations=args.iterations,
        align=resolve_align(args.align, args.noise or ["poisson"]),
        thermal_sigma=0.0 if args.particle else args.thermal_sigma,
        split="test",
    )
    logging.getLogger("simgen").info(
        "simulating %d atoms, %d angles, %d³ voxels", len(atoms), len(angles), size
    )
    from simgen.tools.progress import progress_enabled

    sample = simulate_sample(spec, rng, atoms=atoms, progress=progress_enabled())
    sample.meta["seed"] = int(args.seed)  # recorded in /meta/seed (docs/design.md), as generate does
    store.write_single_sample_store(out, sample, spec, overwrite=args.overwrite, param="--out")
    print(
        f"wrote {out} ({len(sample.atoms)} atoms, tilt series {sample.tilt_series.shape}, volume {sample.volume.shape})"
    )
    if args.preview:
        from simgen.preview import preview

        preview(out, 0, args.preview)
        print(f"wrote {args.preview}")
    return 0


def _cmd_generate(args) -> int:
    from simgen.catalog import get_dataset

    spec = get_dataset(args.name, args.config)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit={args.limit}: expected a positive integer")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers={args.workers}: expected a positive integer")
    if args.dry_run:
        print(spec.summary(limit=args.limit))
        return 0
    if not args.out:
        raise ValueError("--out: required unless --dry-run")
    from simgen.engine import generate
    from simgen.tools.outputs import check_output

    check_output(args.out, "store", resume=True)  # a new/empty folder, or our store to resume

    report = generate(
        spec, args.out, workers=args.workers, scheduler=args.scheduler, limit=args.limit
    )
    print(report.summary())
    return EXIT_SOME_FAILED if report.failed else 0


def _cmd_validate(args) -> int:
    from simgen.catalog import default_catalog_path, load_catalog, validate_catalog

    if args.config is None:
        args.config = str(default_catalog_path())
    problems = validate_catalog(args.config, build=True)
    if problems:
        for problem in problems:
            print(f"simgen: error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    catalog = load_catalog(args.config)
    for name, spec in catalog.items():
        print(f"{name}: {spec.n_samples} samples")
    print(f"{args.config}: OK ({len(catalog)} datasets)")
    return 0


def _cmd_inspect(args) -> int:
    from simgen.store import format_inspection, inspect_store

    print(format_inspection(inspect_store(args.store)))
    return 0


def _cmd_verify(args) -> int:
    from simgen.store.verify import missing_samples, verify_store

    if not Path(args.store, "zarr.json").is_file():
        raise ValueError(f"STORE={args.store!r}: not a Zarr store (no zarr.json)")
    problems = verify_store(args.store, against=args.against)
    missing, planned = missing_samples(args.store)
    for problem in problems:
        print(problem)
    partial = f" ({missing} of {planned} samples missing: not generated yet)" if missing else ""
    if problems:
        print(f"{args.store}: {len(problems)} problem(s){partial}")
        return 1
    if args.against:
        print(f"{args.store}: all samples match the manifest and {args.against}{partial}")
    else:
        print(f"{args.store}: all samples match the manifest{partial}")
    return 0


def _cmd_preview(args) -> int:
    from simgen.preview import preview
    from simgen.tools.outputs import check_output

    check_output(args.out, "file", overwrite=args.overwrite)
    preview(args.store, args.sample, args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_import(args) -> int:
    from simgen.importer import import_tilt_series

    check_iterations(args.iterations)
    elements = [e.strip() for e in args.elements.split(",")] if args.elements else None
    origin = None
    if args.origin:
        try:
            origin = tuple(float(v) for v in args.origin.split(","))
            if len(origin) != 2:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"--origin={args.origin!r}: expected ROW,COL pixel indices, e.g. 64,64"
            ) from None
    background = args.background
    if background != "auto":
        try:
            background = float(background)
        except ValueError:
            raise ValueError(
                f"--background={args.background!r}: expected counts per pixel or 'auto'"
            ) from None
    gain = args.gain
    if gain != "auto":
        try:
            gain = float(gain)
        except ValueError:
            gain = None
        if gain is None or not (gain > 0 and gain < float("inf")):
            raise ValueError(f"--gain={args.gain!r}: expected counts per electron or 'auto'")
    out = import_tilt_series(
        args.tilt_series,
        angles=args.angles,
        sampling=args.sampling,
        tilt_axis=args.tilt_axis,
        key=args.key,
        stack_axis=args.stack_axis,
        truth=args.truth,
        elements=elements,
        dose=args.dose,
        gain=gain,
        origin=origin,
        background=background,
        align=args.align,
        method=args.recon,
        iterations=args.iterations,
        out=args.out,
        overwrite=args.overwrite,
        param="--out",
    )
    print(f"wrote {out}")
    return 0


def _cmd_thin(args) -> int:
    from simgen.importer import thin_store

    out = thin_store(
        args.store,
        dose=args.dose,
        out=args.out,
        seed=args.seed,
        source_dose=args.source_dose,
        overwrite=args.overwrite,
        param="--out",
    )
    print(f"wrote {out}")
    return 0


def _cmd_list(args) -> int:
    """Print the registries: what ``--particle``, ``--composition``, ``--noise`` and damage accept."""
    topics = [args.topic] if args.topic else list(_LIST_TOPICS)
    blocks = []
    if "morphologies" in topics:
        from simgen.structures import MORPHOLOGY_REGISTRY

        lines = [
            "morphologies (--particle; datasets.yaml particles.morphology), with their options "
            "(keyword arguments of simgen.structures.build_particle):"
        ]
        for morphology in MORPHOLOGY_REGISTRY.values():
            options = ", ".join(
                f"{p.name}: {p.annotation} = {p.default!r}" for p in morphology.options.values()
            )
            lines += [f"  {morphology.name}({options})", f"      {morphology.summary}"]
        blocks.append("\n".join(lines))
    if "compositions" in topics:
        import inspect

        from simgen.structures import compositions

        doc = inspect.getdoc(compositions) or ""
        syntax = " ".join(doc.split("\n\n", 1)[1].split()) if "\n\n" in doc else doc
        blocks.append(
            "compositions (--composition; datasets.yaml particles.composition):\n  "
            + syntax.replace("``", "").replace("; ", ";\n  ")
        )
    # noise, damage and codecs print from the spec registry (simgen.registry)
    modules = {"noise": "simgen.physics.noise", "damage": "simgen.damage", "codecs": "simgen.store.codecs"}
    for topic, module in modules.items():
        if topic in topics:
            import importlib

            from simgen.registry import REGISTRIES

            importlib.import_module(module)
            registry = REGISTRIES[topic.rstrip("s") if topic == "codecs" else topic]
            blocks.append("\n".join([f"{registry.title}:", *registry.describe()]))
    from simgen import registry as extension_points

    choices = {
        "imaging": ("imaging modes (--mode; datasets.yaml mode)", "IMAGING_MODES"),
        "reconstruction": (
            "reconstruction methods (--recon; datasets.yaml reconstruction.method)",
            "RECONSTRUCTION_METHODS",
        ),
        "alignment": (
            "alignment methods (--align; datasets.yaml reconstruction.align, also 'auto')",
            "ALIGNMENT_METHODS",
        ),
    }
    for topic, (title, name) in choices.items():
        if topic in topics:
            blocks.append(f"{title}:\n  " + ", ".join(getattr(extension_points, name)))
    print("\n\n".join(blocks))
    return 0


_COMMANDS = {
    "simulate": _cmd_simulate,
    "generate": _cmd_generate,
    "validate": _cmd_validate,
    "inspect": _cmd_inspect,
    "verify": _cmd_verify,
    "preview": _cmd_preview,
    "import": _cmd_import,
    "thin": _cmd_thin,
    "list": _cmd_list,
}


def quiet_dask_logging() -> None:
    """Keep dask.distributed's INFO chatter (cluster start/stop) out of the user's terminal.

    distributed configures its loggers from dask's config when it is imported, so the level is
    set both in the environment (read at import, also by spawned workers) and on the loggers.
    """
    import os
    import warnings

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The scheduler's HTTP port is taken by another cluster: it picks a free one, nothing to do.
    warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
    # Workers killed after Ctrl-C leave their semaphores to the resource tracker (a separate
    # process, which reads its warning filters from the environment); it cleans them up.
    tracker_filter = "ignore:resource_tracker:UserWarning"
    current = os.environ.get("PYTHONWARNINGS", "")
    if tracker_filter not in current:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [current, tracker_filter]))


def run_command(commands, parser, argv, prog) -> int:
    """Parse, dispatch, and turn bad input into a one-line error (shared by the three CLIs).

    ``--debug`` is accepted anywhere before a ``--`` separator, after the subcommand too.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = [a for i, a in enumerate(argv) if i >= end or a != "--debug"]
    _one_line_errors(parser, prog)
    args = parser.parse_args(argv)
    args.debug = args.debug or debug
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:  # dask.distributed sets its own loggers to INFO: cluster start/stop chatter
        quiet_dask_logging()
    if not args.debug:
        _quiet_on_interrupt()
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WorkFailed as exc:  # one item of long work failed: named, what was kept said
        if args.debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_WORK_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _one_line_errors(parser: argparse.ArgumentParser, prog: str) -> None:
    """Make ``parser`` and its subcommand parsers report a usage error in one line (exit 2).

    argparse prints the whole usage block before ``error: ...``; a user who mistyped one flag
    wants the one line that names it (``--help`` still shows the usage).
    """

    def attach(node: argparse.ArgumentParser) -> None:
        def error(message: str):
            node.exit(EXIT_BAD_INPUT, f"{node.prog}: error: {message} (see {node.prog} --help)\n")

        node.error = error
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    attach(child)

    attach(parser)


def _quiet_on_interrupt() -> None:
    """On Ctrl-C, silence the teardown of a Dask cluster so the user sees one line.

    Interrupted, ``distributed`` kills its workers with warnings ("Worker process still alive
    ..., killing"), and an interrupt while a ``LocalCluster`` is starting ends in a long
    traceback when it closes the cluster at exit ("Exception ignored in atexit callback"). The
    store is safe either way: a sample is marked complete only after it is written, so the same
    command resumes. The handler quietens those loggers, routes exit-time errors to the debug log,
    then raises ``KeyboardInterrupt`` as Python's default handler does.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    log = logging.getLogger("simgen.cli")

    def on_interrupt(signum, frame):
        for name in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        sys.unraisablehook = lambda u: log.debug("ignored after an interrupt: %r", u.exc_value)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)


def _join_negative_values(argv):
    """Let ``--tilt -70:70:29`` work: argparse would take ``-70:70:29`` for an option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = []
    for arg in argv:
        if out and out[-1] == "--tilt" and arg.startswith("-"):
            out[-1] = f"--tilt={arg}"
        else:
            out.append(arg)
    return out


def main(argv=None) -> int:
    return run_command(_COMMANDS, _build_parser(), _join_negative_values(argv), "simgen")


if __name__ == "__main__":
    sys.exit(main())
