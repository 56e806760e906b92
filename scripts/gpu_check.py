"""Check the suite's GPU paths on a CUDA machine and print one table (runs in a few minutes).

    python scripts/gpu_check.py            # 128³ volumes, 51 angles, 100 SIRT iterations
    python scripts/gpu_check.py --quick    # 64³, 31 angles, 30 iterations

Rows: ASTRA's 3D CUDA SIRT (``SIRT3D_CUDA``) against the CPU batched SIRT on the same tilt series
(agreement and speed), a PANN stage-1 training step and PANN inference per volume on the GPU, and
``pann train`` for 20 stage-1 steps on the GPU with mixed precision (``--device cuda``; skipped
with a clear line where ``pann train`` has no such option). Without CUDA it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmark.speed_base import blob_phantom, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # datasets.yaml lives here


def _cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is false"
    return True, torch.cuda.get_device_name(0)


def _sync():
    import torch

    torch.cuda.synchronize()


def sirt_rows(size: int, n_angles: int, iterations: int) -> list[tuple[str, str, str]]:
    import astra

    from simgen.reconstruction.reconstruct import project, reconstruct

    case = f"{size}³, {n_angles} angles, {iterations} iterations"
    if not astra.use_cuda():
        return [("ASTRA SIRT3D_CUDA vs CPU batched SIRT", case, "skipped: astra.use_cuda() false")]
    angles = np.linspace(-70.0, 70.0, n_angles)
    tilt_series = project(blob_phantom(size, np.random.default_rng(0)), angles)
    kwargs = dict(method="sirt", iterations=iterations, positivity=True)
    cpu_time, cpu = timed(lambda: reconstruct(tilt_series, angles, backend="matrix", **kwargs), 1)
    gpu_time, gpu = timed(lambda: reconstruct(tilt_series, angles, backend="cuda", **kwargs), 3)
    difference = float(np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu))
    return [
        ("CPU batched SIRT (numba, all cores)", case, f"{cpu_time:.2f} s"),
        ("ASTRA SIRT3D_CUDA", case, f"{gpu_time:.2f} s ({cpu_time / gpu_time:.1f}× the CPU)"),
        ("SIRT3D_CUDA vs CPU: relative volume difference", case, f"{difference:.2e}"),
    ]


def pann_rows(size: int) -> list[tuple[str, str, str]]:
    import torch
    import torch.nn.functional as F

    from models.pann import PannConfig, PannModel

    rows = []
    config = PannConfig(elements=("Fe", "Pt"))
    net = PannModel(config).stage1.cuda().train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(1)
    volume = torch.as_tensor(blob_phantom(size, rng), device="cuda")[None, None]
    slab = min(config.slab, size)
    x = torch.cat([volume[..., :, y : y + slab, :] for y in (0, size - slab)])
    target = x * 1.1
    origins = [(0, 0, 0), (0, size - slab, 0)]

    def step(amp: bool):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.mse_loss(net(x, volume, origins).float(), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        _sync()

    for amp in (False, True):
        seconds, _ = timed(lambda amp=amp: step(amp), 5, warmup=2)
        label = "bf16 autocast" if amp else "float32"
        rows.append(
            (
                f"PANN stage-1 training step ({label})",
                f"batch 2 slabs {size}×{slab}×{size}",
                f"{seconds * 1e3:.0f} ms",
            )
        )

    weights = os.path.join(ROOT, "models", "weights", "demo")
    model = PannModel.load(weights) if os.path.isdir(weights) else PannModel(config)
    sample = blob_phantom(size, rng, blobs=300)

    def refine():
        out = model.restore_volume(sample, device="cuda")
        _sync()
        return out

    seconds, _ = timed(refine, 3)
    rows.append(("PANN stage-1 inference on the GPU", f"{size}³ volume", f"{seconds:.2f} s"))
    if model.stage2 is not None:
        seconds, prediction = timed(
            lambda: model.predict(sample, config.sampling, list(model.config.elements)), 1
        )
        rows.append(
            (
                "PANN full predict (stage 1 on GPU; tracing, features on CPU)",
                f"{size}³ volume, {prediction.extra['n_candidates']} candidates",
                f"{seconds:.2f} s",
            )
        )
    return rows


def _cli(module: str) -> list[str]:
    """The command line of a package's CLI (``pann``, ``simgen``) run by this interpreter."""
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]


def train_rows(steps: int = 20) -> list[tuple[str, str, str]]:
    help_text = subprocess.run(
        [*_cli("models.cli"), "train", "--help"], capture_output=True, text=True
    ).stdout
    what = f"pann train, {steps} stage-1 steps, mixed precision"
    if "--device" not in help_text:
        return [(what, "smoke store", "skipped: `pann train` has no --device option yet")]
    if "--amp" not in help_text and "mixed precision" not in help_text:
        return [(what, "smoke store", "skipped: `pann train` offers no mixed precision yet")]
    with tempfile.TemporaryDirectory(prefix="aet-gpu-check-") as tmp:
        store = os.path.join(tmp, "smoke.zarr")
        subprocess.run(
            [*_cli("simgen.cli"), "generate", "smoke", "--out", store],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        start = time.perf_counter()
        command = [
            *_cli("models.cli"),
            "train",
            "--data",
            store,
            "--out",
            os.path.join(tmp, "run"),
            "--steps",
            str(steps),
            "--epochs",
            "1",
            "--device",
            "cuda",
            *(["--amp"] if "--amp" in help_text else []),  # else CUDA implies mixed precision
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [(what, "smoke store", f"FAILED (exit {done.returncode}): {tail[0]}")]
    return [(what, "smoke store, both stages", f"{seconds:.1f} s end to end")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64³, 31 angles, 30 iterations")
    args = parser.parse_args(argv)
    ok, device = _cuda()
    if not ok:
        print(f"gpu_check: no CUDA device ({device}); nothing to check")
        return 0
    size, n_angles, iterations = (64, 31, 30) if args.quick else (128, 51, 100)
    start = time.perf_counter()
    rows = sirt_rows(size, n_angles, iterations) + pann_rows(size) + train_rows()
    print(f"GPU check on {device}, {time.perf_counter() - start:.0f} s")
    print("| what | case | result |")
    print("|---|---|---|")
    for what, case, result in rows:
        print(f"| {what} | {case} | {result} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
