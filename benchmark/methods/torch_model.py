"""The ``torch`` method: any volume-to-volume network, followed by the classical tracing.

A method developer exports their network as TorchScript (``torch.jit.script(net).save("my.pt")``
or ``torch.jit.trace``) and scores it with one command::

    aet-bench run --method torch --model-file my.pt --data STORE --out RESULTS.jsonl

TorchScript is the safe format: ``torch.jit.load`` rebuilds tensors and TorchScript code, never
arbitrary pickled Python objects. The network maps ``(1, 1, D, H, W)`` float32 to a volume of
the same shape; :func:`apply_volume_network` resamples the input to the network's voxel size,
scales its intensities, runs it and resamples the output back onto the input grid, so the
tracing, species clustering and scoring are exactly those of ``classical``.

How to scale the input travels with the file as a TorchScript extra file ``aet.json``
(``{"sampling": 0.4, "normalise": "scale", "input_scale": 1.0}``), or as method options.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.methods import register
from benchmark.methods.classical import ClassicalMethod

__all__ = ["TorchModelMethod", "apply_volume_network", "input_normaliser", "NORMALISATIONS"]

#: How the input intensities are scaled before the network (then multiplied by ``input_scale``).
NORMALISATIONS = ("scale", "peaks", "none")


def input_normaliser(volume: np.ndarray, normalise: str) -> float:
    """The divisor that brings a volume to a network's training intensities.

    Parameters
    ----------
    volume
        Reconstruction ``[z, y, x]``.
    normalise
        ``"scale"``: :func:`models.pann.volume_scale` (the suite's training convention);
        ``"peaks"``: the mean over atom peaks of the 3×3×3-voxel mean intensity, as Lee, Jeong
        & Yang normalise their GENFIRE inputs (their atom positions are unknown here, so the peaks
        are the local maxima of the 3³-mean volume above half its maximum); ``"none"``: 1.

    Returns
    -------
    float
        A positive divisor.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise={normalise!r}: expected one of {', '.join(NORMALISATIONS)}")
    if normalise == "none":
        return 1.0
    if normalise == "scale":
        from models.pann import volume_scale

        return float(volume_scale(volume))
    from scipy import ndimage

    box = ndimage.uniform_filter(np.asarray(volume, dtype=np.float64), size=3, mode="constant")
    peaks = (box == ndimage.maximum_filter(box, size=3)) & (box > 0.5 * box.max())
    value = float(box[peaks].mean()) if peaks.any() else float(box.max())
    return value if value > 0 else 1.0


def apply_volume_network(
    net,
    volume: np.ndarray,
    sampling: float,
    *,
    net_sampling: float | None = None,
    normalise: str = "scale",
    input_scale: float = 1.0,
    device: str = "cpu",
) -> np.ndarray:
    """Run a volume-to-volume network on a reconstruction, at the network's voxel size.

    Parameters
    ----------
    net
        Callable torch module: ``(1, 1, D, H, W)`` -> same shape.
    volume
        Reconstruction ``[z, y, x]``.
    sampling
        Its voxel size, Å.
    net_sampling
        Voxel size (Å) the network was trained at; the input is resampled (linear) to it when
        they differ by more than 2% and the output resampled back to ``volume.shape``.
    normalise, input_scale
        Input intensity scaling: ``volume / input_normaliser(volume, normalise) * input_scale``.
    device
        Torch device.

    Returns
    -------
    numpy.ndarray
        float32 output on the input grid, multiplied back by the normaliser (input units).
    """
    import torch
    from scipy.ndimage import zoom

    volume = np.asarray(volume, dtype=np.float32)
    divisor = input_normaliser(volume, normalise)
    work = volume
    if net_sampling is not None and abs(sampling / net_sampling - 1.0) > 0.02:
        work = zoom(volume, sampling / net_sampling, order=1).astype(np.float32)
    x = torch.as_tensor(work / divisor * float(input_scale), dtype=torch.float32)[None, None]
    with torch.no_grad():
        out = net(x.to(device))
    out = out.detach().float().cpu().numpy().reshape(work.shape)
    if out.shape != volume.shape:
        out = zoom(out, np.array(volume.shape) / np.array(out.shape), order=1)
    return (out[: volume.shape[0], : volume.shape[1], : volume.shape[2]] * divisor).astype(
        np.float32
    )


@register("torch")
class TorchModelMethod(ClassicalMethod):
    """A user's TorchScript volume-to-volume network -> :class:`ClassicalMethod` tracing and species.

    Parameters
    ----------
    model_file
        TorchScript file (``torch.jit.save``); may carry ``aet.json`` with the keys below.
    sampling
        Voxel size (Å) the network expects (None: the file's ``aet.json``, else no resampling).
    normalise
        Input normalisation (:data:`NORMALISATIONS`; default the file's, else ``"scale"``).
    input_scale
        Factor after normalising (default the file's, else 1).
    smooth
        Extra Gaussian smoothing (Å) before tracing.
    """

    version = "1.0"

    def __init__(
        self,
        model_file=None,
        *,
        sampling: float | None = None,
        normalise: str | None = None,
        input_scale: float | None = None,
        smooth: float = 0.0,
        **options,
    ):
        import torch

        if model_file is None:
            raise ValueError("model_file=None: expected a TorchScript file (--model-file PATH)")
        path = Path(model_file)
        if not path.is_file():
            raise FileNotFoundError(f"model_file={str(model_file)!r}: no such file")
        extra = {"aet.json": ""}
        try:
            self.net = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"model_file={str(model_file)!r}: not a TorchScript file ({first}); export with "
                "torch.jit.script(net).save(path)"
            ) from None
        meta = json.loads(extra["aet.json"]) if extra["aet.json"] else {}
        sampling = meta.get("sampling") if sampling is None else sampling
        normalise = normalise or meta.get("normalise", "scale")
        input_scale = float(meta.get("input_scale", 1.0) if input_scale is None else input_scale)
        if normalise not in NORMALISATIONS:
            raise ValueError(
                f"normalise={normalise!r}: expected one of {', '.join(NORMALISATIONS)}"
            )
        if sampling is not None and not float(sampling) > 0:
            raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
        super().__init__(smooth=smooth, **options)
        self.options.update(
            model_file=str(path),
            sampling=None if sampling is None else float(sampling),
            normalise=normalise,
            input_scale=input_scale,
        )
        self.net.eval()

    def _volume(self, sample: dict) -> np.ndarray:
        volume = super()._volume(sample)
        return apply_volume_network(
            self.net,
            volume,
            float(sample["sampling"]),
            net_sampling=self.options["sampling"],
            normalise=self.options["normalise"],
            input_scale=self.options["input_scale"],
        )
