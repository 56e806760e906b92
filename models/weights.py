"""Weights and checkpoints: where the shipped weights are, one safe loader, one atomic saver.

Every checkpoint this project reads (PANN ``pann.pt``, the 3D U-Net ``unet3d.pt``, the training
resume points ``stage1.ckpt`` / ``unet3d.ckpt``) goes through :func:`load_checkpoint`, which calls
``torch.load(..., weights_only=True)``: only tensors and plain Python data (dicts, lists, strings,
numbers) are unpickled, so a crafted file cannot run code. Checkpoints are therefore written with
plain types only (configurations as dicts). :func:`save_atomic` writes through a temporary file
and a rename, so a killed run never leaves half a checkpoint.

(The shipped weight files themselves live in the data folder ``models/weights/demo/``.)
"""

from __future__ import annotations

import pickle
from pathlib import Path

__all__ = ["DEFAULT_WEIGHTS", "CHECKPOINT_ERRORS", "load_checkpoint", "save_atomic", "weights_file"]

#: The weights shipped with the package (trained on the ``demo`` dataset; see its README).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "demo"

#: What torch.load and load_state_dict raise for a truncated, foreign or mismatched checkpoint.
CHECKPOINT_ERRORS = (
    RuntimeError,
    KeyError,
    TypeError,
    EOFError,
    ValueError,
    AttributeError,
    pickle.UnpicklingError,
)


def weights_file(weights, filename: str) -> Path:
    """The weights file ``filename`` of a run directory, or ``weights`` itself when it is a file.

    Raises:
        FileNotFoundError: No such file (one line naming ``weights``).
    """
    path = Path(weights)
    if path.is_dir():
        path = path / filename
    if not path.exists():
        raise FileNotFoundError(f"weights={str(weights)!r}: no {filename} found")
    return path


def load_checkpoint(
    path: str | Path, *, param: str = "weights", what: str = "checkpoint", map_location="cpu"
) -> dict:
    """Read a checkpoint written by this project, never running code from the file.

    Args:
        path: The ``.pt`` / ``.ckpt`` file.
        param: Parameter named in error messages (e.g. ``--weights``).
        what: What the file should be, for error messages (e.g. ``"PANN checkpoint"``).
        map_location: Device for the tensors (``torch.load``'s ``map_location``).

    Returns:
        The checkpoint's dict (tensors and plain Python data).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: One line: the file is not a readable checkpoint, or it holds Python objects
            other than tensors and plain data (refused: unpickling them could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{param}={str(path)!r}: no such file")
    kind = _torch_file_kind(path)
    if kind == "torchscript":
        raise ValueError(
            f"{param}={str(path)!r}: a TorchScript module (torch.jit.save), not a {what}; run a "
            "TorchScript network with `aet-bench run --method torch --model-file PATH`"
        )
    if kind is None:
        with open(path, "rb") as handle:
            head = handle.read(8)
        raise ValueError(
            f"{param}={str(path)!r}: not a valid {what} (not a torch.save file: it starts with "
            f"{head!r})"
        )
    try:
        import torch  # here, not at the top: `pann predict` checks its inputs before torch loads

        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ValueError(
                f"{param}={str(path)!r}: refused: the file holds Python objects other than tensors "
                f"and plain data, and loading them could run code; expected a {what} written by "
                "this project"
            ) from None
        raise ValueError(f"{param}={str(path)!r}: not a valid {what} ({first})") from None
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(
            f"{param}={str(path)!r}: not a valid {what} ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(payload, dict):
        raise ValueError(
            f"{param}={str(path)!r}: not a valid {what} (holds a {type(payload).__name__}, "
            "expected a dict)"
        )
    return payload


def _torch_file_kind(path: Path) -> str | None:
    """``"checkpoint"`` (a torch.save zip or legacy pickle), ``"torchscript"``, or None."""
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:2] == b"\x80\x02" or head[:1] == b"\x80":
        return "checkpoint"  # the legacy (pre-1.6) pickle format
    if head != b"PK\x03\x04":
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "checkpoint" if any(n.endswith("data.pkl") for n in names) else None


def save_atomic(payload, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (normal permissions)."""
    from simgen.tools.outputs import atomic_path

    with atomic_path(path) as tmp:
        import torch

        torch.save(payload, tmp)
