"""``pann``: train PANN (and the 3D U-Net baseline) on a store, apply it to stores or volumes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from models.io import species_arrays, write_prediction
from models.weights import DEFAULT_WEIGHTS
from simgen.cli import non_negative_int

__all__ = ["main", "DEFAULT_WEIGHTS", "write_prediction", "header_voxel_size", "volume_sampling"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pann", description=__doc__.replace("``", ""))
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    from models import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train", help="train PANN (stage 1 + stage 2) or the unet3d baseline on a store"
    )
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="simgen Zarr store (uses its train/val splits); several only with --stage2-only",
    )
    p.add_argument(
        "--out", required=True, help="run directory (weights, config, loss curves); rerun to resume"
    )
    p.add_argument(
        "--stage2-only",
        action="store_true",
        help="keep the stage 1 of --init; train a new stage 2 (context features) on the train "
        "splits of every --data, select it on their val splits",
    )
    p.add_argument(
        "--model", choices=["pann", "unet3d"], default="pann", help="what to train (default pann)"
    )
    p.add_argument("--steps", type=int, help="stage-1 (or unet3d) optimiser steps")
    p.add_argument("--epochs", type=int, help="stage-2 epochs")
    p.add_argument("--physics-weight", type=float, help="weight of the re-projection term")
    p.add_argument(
        "--init",
        help="start stage 1 from these PANN weights (run directory or pann.pt; same stage-1 "
        "architecture); stage 2 is trained anew",
    )
    p.add_argument("--lr", type=float, help="peak learning rate of both stages (default 2e-3)")
    p.add_argument(
        "--class-weight-power",
        type=float,
        help="stage-2 class weights (1/frequency)**P: 1 balances classes, 0 is plain cross-entropy "
        "(default 1)",
    )
    p.add_argument("--limit", type=int, help="use at most N samples per split")
    p.add_argument(
        "--seed", type=non_negative_int("--seed"), default=0, help="random seed (default 0)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="global batch (draws per step over all torchrun processes; a multiple of their number)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: CUDA when available (mixed precision), else CPU",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="data-loader processes per training process (each opens the store itself)",
    )
    p.add_argument(
        "--architecture",
        choices=["lee2021", "unet3d-v1"],
        default="lee2021",
        help="unet3d only: the published Lee 2021 network or the earlier variant",
    )

    p = sub.add_parser("predict", help="predict atoms (extended XYZ with class probabilities)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data", help="simgen Zarr store: predicts every complete sample (or --split)"
    )
    src.add_argument("--volume", help="a reconstruction: .npy, .mrc, .tif, .mat or Zarr array")
    p.add_argument(
        "--sampling",
        type=float,
        help="voxel size of --volume (Å); default: the MRC header's (a contradicting value is an error)",
    )
    p.add_argument(
        "--elements",
        help="elements present in --volume, e.g. Fe,Pt (required by weights with stage2_features=2, e.g. the shipped ones)",
    )
    p.add_argument("--key", help="array name inside a .mat file or Zarr group")
    p.add_argument("--split", help="only this split of --data (e.g. test)")
    p.add_argument(
        "--weights",
        default=str(DEFAULT_WEIGHTS),
        help="run directory or pann.pt (default: shipped demo weights)",
    )
    p.add_argument(
        "--out", required=True, help="output: a directory for --data, a .xyz file for --volume"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output of pann predict (never any other folder or file)",
    )
    return parser


_MRC_SUFFIXES = (".mrc", ".mrcs", ".rec", ".map", ".st", ".ali")


def header_voxel_size(path: str | Path) -> float | None:
    """Voxel size (Å) recorded in an MRC header, or None (another format, or no size recorded).

    Raises:
        ValueError: If the header records different sizes along the axes.
    """
    if Path(path).suffix.lower() not in _MRC_SUFFIXES or not Path(path).is_file():
        return None
    import math

    import mrcfile

    with mrcfile.open(path, permissive=True, header_only=True) as handle:
        size = handle.voxel_size
        values = [float(size.x), float(size.y), float(size.z)]
    recorded = [v for v in values if math.isfinite(v) and v > 0]
    if not recorded:
        return None
    if len(recorded) < 3 or max(recorded) - min(recorded) > 1e-3 * max(recorded):
        raise ValueError(
            f"--volume={str(path)!r}: voxel size (x, y, z) = {values} Å in the MRC header; "
            "expected cubic voxels"
        )
    return recorded[0]


def volume_sampling(path: str | Path, sampling: float | None) -> float:
    """The voxel size (Å) of ``--volume``: from the MRC header when it records one (a ``--sampling``
    that contradicts it by more than 0.1 % is an error), else ``--sampling`` (then required)."""
    header = header_voxel_size(path)
    if sampling is not None and not (sampling > 0 and sampling < float("inf")):
        raise ValueError(f"--sampling={sampling}: expected a positive voxel size in Å")
    if header is None:
        if sampling is None:
            raise ValueError(
                f"--sampling: required with --volume={str(path)!r} (voxel size in Å; "
                "the file records none)"
            )
        return sampling
    if sampling is not None and abs(sampling - header) > 1e-3 * header:
        raise ValueError(
            f"--sampling={sampling:g}: contradicts the voxel size {header:g} Å in the header of "
            f"{str(path)!r} (omit --sampling to use the header)"
        )
    return header


def _cmd_train(args) -> int:
    from models.train import train_pann, train_unet3d

    for name in ("steps", "epochs", "limit", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}={value}: expected a positive integer")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers={args.num_workers}: expected a non-negative integer")
    if args.lr is not None and not (args.lr > 0 and args.lr < 1):
        raise ValueError(f"--lr={args.lr}: expected a learning rate in (0, 1)")
    if args.init is not None and args.model != "pann":
        raise ValueError(f"--init={args.init!r}: only for --model pann")
    if args.init is not None and not Path(args.init).exists():
        raise FileNotFoundError(f"--init={args.init!r}: no such weights")
    if args.stage2_only and (args.model != "pann" or args.init is None):
        raise ValueError("--stage2-only: needs --model pann and --init (the stage 1 to keep)")
    if len(args.data) > 1 and not args.stage2_only:
        raise ValueError(f"--data={args.data}: several stores only with --stage2-only")
    for store in args.data:
        if not Path(store).exists():
            raise FileNotFoundError(f"--data={store!r}: no such store")
    from models.distributed import resolve_device
    from simgen.tools.outputs import check_output

    resolve_device(args.device)  # a clear error before any work
    # A new or empty folder, or a run of ours to resume; checked before any data is read.
    check_output(args.out, "run", resume=True)
    if args.stage2_only:
        from models.train import train_stage2_only

        model = train_stage2_only(
            args.init,
            args.data,
            args.out,
            epochs=args.epochs,
            lr=args.lr,
            seed=args.seed,
            class_weight_power=args.class_weight_power,
            limit=args.limit,
        )
        return _wrote_pann(args.out, model)
    (args.data,) = args.data
    common = {"device": args.device, "num_workers": args.num_workers, "limit": args.limit}
    if args.model == "unet3d":
        train_unet3d(
            args.data,
            args.out,
            steps=args.steps or 300,
            seed=args.seed,
            batch_size=args.batch_size or 4,
            architecture=args.architecture,
            **common,
        )
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"wrote {Path(args.out) / 'unet3d.pt'}")
        return 0
    from models.pann import PannConfig

    config = PannConfig(seed=args.seed)
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.steps:
        config.stage1_steps = args.steps
    if args.epochs:
        config.stage2_epochs = args.epochs
    if args.physics_weight is not None:
        config.physics_weight = args.physics_weight
    if args.lr is not None:
        config.lr = args.lr
    if args.class_weight_power is not None:
        config.class_weight_power = args.class_weight_power
    model = train_pann(args.data, args.out, config, init=args.init, **common)
    return _wrote_pann(args.out, model)


def _wrote_pann(out, model) -> int:
    """Say where a PANN run wrote its weights (rank 0 only under torchrun)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"wrote {Path(out) / 'pann.pt'} ({model!r}); loss curves in {Path(out) / 'loss_curves.png'}"
        )
    return 0


def _read_volume(path: str, key: str | None):
    """A 3-D volume from .npy, .mrc, .tif, .mat, or a Zarr array (or an array of a Zarr group)."""
    import numpy as np

    p = Path(path)
    if p.suffix.lower() != ".zarr" and not (p / "zarr.json").exists():
        from simgen.importer import read_array

        return _finite_volume(read_array(path, key=key), path)
    import zarr

    if not p.exists():
        raise FileNotFoundError(f"--volume={path!r}: no such Zarr array")
    node = zarr.open(str(p), mode="r")
    if isinstance(node, zarr.Group):
        arrays = sorted(name for name, _ in node.arrays())
        if key is None:
            raise ValueError(
                f"--volume={path!r}: a Zarr group; give --key, one of its arrays {arrays}"
                " (a simgen store is read with --data)"
            )
        if key not in node or not isinstance(node[key], zarr.Array):
            raise ValueError(f"--key={key!r}: expected one of the arrays {arrays} in {path}")
        node = node[key]
    volume = np.asarray(node[...])
    if volume.ndim != 3:
        raise ValueError(f"--volume={path!r}: shape {volume.shape}, expected a 3-D volume")
    return _finite_volume(volume, path)


def _finite_volume(volume, path):
    """The volume, unless it holds NaN or infinity (an error, never a volume with no atoms)."""
    import numpy as np

    if np.issubdtype(volume.dtype, np.number) and not np.all(np.isfinite(volume)):
        bad = int(np.count_nonzero(~np.isfinite(volume)))
        raise ValueError(
            f"--volume={path!r}: {bad} of {volume.size} voxels are NaN or infinite; "
            "expected finite values"
        )
    return volume


def _cmd_predict(args) -> int:
    from simgen.tools.outputs import check_output, staged_output

    out = Path(args.out)
    if args.volume:
        # Check every input before torch is imported and the networks are loaded (seconds).
        sampling = volume_sampling(args.volume, args.sampling)
        check_output(out, "file", overwrite=args.overwrite)  # before the expensive work
        elements = [e.strip() for e in args.elements.split(",")] if args.elements else None
        volume = _read_volume(args.volume, args.key)
        from models.pann import PannModel

        model = PannModel.load(args.weights)
        pred = model.predict(volume, sampling, elements)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_prediction(
            out,
            pred.positions,
            pred.elements,
            pred.probabilities,
            pred.classes,
            {"source": str(args.volume)},
            species_arrays(pred.extra),
            record=True,
        )
        note = (
            "the volume is constant: nothing to trace"
            if pred.extra.get("constant_volume")
            else f"{pred.extra['n_rejected']} candidates rejected as not atoms"
        )
        print(f"wrote {out}: {len(pred.elements)} atoms ({note})")
        return 0

    from simgen.importer import to_input_frame
    from simgen.store import open_dataset
    from simgen.tools.progress import progress_bar

    check_output(out, "predictions", overwrite=args.overwrite)  # before the expensive work
    ds = open_dataset(args.data)
    # Imported data: write the atoms back in the frame of the user's input model.
    input_frame = ds.attrs.get("input_frame") if hasattr(ds, "attrs") else None
    if args.split:
        ds = ds.filter(split=args.split)
    if len(ds) == 0:
        raise ValueError(
            f"--data={args.data!r}: no complete samples"
            + (f" in split {args.split!r}" if args.split else "")
        )
    from models.pann import PannModel

    model = PannModel.load(args.weights)
    with staged_output(out, "predictions", overwrite=args.overwrite, command="pann predict") as tmp:
        for i in progress_bar(range(len(ds)), desc="pann predict", unit="volume"):
            s = ds[i]
            pred = model.predict(
                s["volume"], float(s["sampling"]), list(s["elements"]), measurement=s
            )
            info = {"sample": int(s["index"])}
            positions = pred.positions
            if input_frame:
                positions = to_input_frame(positions, input_frame)
                info["frame"] = "input model (origin at the rotation centre)"
            write_prediction(
                tmp / f"{int(s['index'])}.xyz",
                positions,
                pred.elements,
                pred.probabilities,
                pred.classes,
                info,
                species_arrays(pred.extra),
            )
    print(
        f"wrote {len(ds)} predictions to {out}/"
        + (" (in the frame of the imported input model)" if input_frame else "")
    )
    return 0


def main(argv=None) -> int:
    from simgen.cli import run_command

    return run_command(
        {"train": _cmd_train, "predict": _cmd_predict}, _build_parser(), argv, "pann"
    )


if __name__ == "__main__":
    sys.exit(main())
