"""Training throughput and memory of streaming PANN stage-1 training (CPU, gloo).

Prints ratios, not pass/fail:
  * samples/s of stage-1 training with 1 process and with 2 processes (torch.distributed, gloo;
    the same global batch, each process one thread);
  * data-loader throughput (draws/s: read + augment + slab, main process and 2 workers) against
    model throughput (samples/s of forward + backward + step on ready batches);
  * peak RSS of a training process on a store of N and 10·N samples (same steps): streaming
    keeps the ratio ≈ 1, where loading the split grew with the store.

Each measurement runs in a fresh Python process (``--child``), so peak RSS is its own.

    python scripts/bench_training.py [--samples 24] [--steps 12] [--workdir /tmp/bench_training]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

CONFIG = dict(
    base_channels=8,
    levels=2,
    global_size=16,
    slab=8,
    batch_size=4,
    hidden=16,
    heads=2,
    layers=1,
    zernike_order=4,
    physics_weight=0.1,
)


def make_store(path: Path, count: int) -> Path:
    """A store of ``count`` tiny samples (the smoke dataset's physics, all in the train split)."""
    if path.exists():
        return path
    import yaml

    from simgen.catalog import DatasetSpec
    from simgen.engine import generate

    repo = Path(__file__).resolve().parents[1]
    entry = yaml.safe_load((repo / "datasets.yaml").read_text())["datasets"]["smoke"]
    entry = dict(entry)
    entry["split"] = {"fractions": {"train": 1.0}}
    entry["samples"] = {"random": {"count": int(count)}}
    spec = DatasetSpec.from_dict(f"bench-{count}", entry, source="bench_training.py")
    report = generate(spec, path, workers=1, progress=False)
    if report.failed:
        raise RuntimeError(f"generation failed for {report.failed}")
    return path


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def _train(store: str, run: str, steps: int, world=None) -> float:
    import torch

    from models.data import StoreSamples
    from models.pann import PannConfig, PannModel
    from models.train import train_stage1

    config = PannConfig(**{**CONFIG, "stage1_steps": steps})
    config.elements = ("Fe", "Pt")
    model = PannModel(config)
    samples = StoreSamples(store, "train")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train_stage1(model, samples, Path(run), world=world, progress=False)
    return time.perf_counter() - t0


def _rank(rank: int, port: int, store: str, run: str, steps: int, out: str) -> None:
    from models.distributed import setup, teardown

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    world = setup("cpu")
    try:
        seconds = _train(store, run, steps, world)
        if rank == 0:
            Path(out).write_text(json.dumps({"seconds": seconds}))
    finally:
        teardown()


def child(args) -> dict:
    import torch

    if args.child == "train1":
        seconds = _train(args.store, args.run, args.steps)
        return {"seconds": seconds, "samples_per_s": args.steps * CONFIG["batch_size"] / seconds}
    if args.child == "train2":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = Path(args.run) / "rank0.json"
        Path(args.run).mkdir(parents=True, exist_ok=True)
        torch.multiprocessing.spawn(
            _rank, args=(port, args.store, args.run, args.steps, str(out)), nprocs=2
        )
        seconds = json.loads(out.read_text())["seconds"]
        return {"seconds": seconds, "samples_per_s": args.steps * CONFIG["batch_size"] / seconds}
    if args.child == "loader":
        from torch.utils.data import DataLoader

        from models.data import SlabDraws, StepBatches, StoreSamples

        draws = SlabDraws(
            StoreSamples(args.store, "train"),
            slab=CONFIG["slab"],
            total=args.steps * CONFIG["batch_size"],
            seed=0,
        )
        result = {}
        for workers in (0, 2):
            batches = StepBatches(0, args.steps, CONFIG["batch_size"])
            t0 = time.perf_counter()
            for _ in DataLoader(draws, batch_sampler=batches, num_workers=workers):
                pass
            rate = args.steps * CONFIG["batch_size"] / (time.perf_counter() - t0)
            result[f"draws_per_s_{workers}_workers"] = rate
        return result
    if args.child == "model":
        from torch.utils.data import DataLoader

        from models.data import SlabDraws, StepBatches, StoreSamples
        from models.pann import PannConfig, PannModel
        from models.projector import gaussian_kernel, psf_kernel
        from models.train import physics_loss, weighted_voxel_loss

        torch.set_num_threads(1)
        samples = StoreSamples(args.store, "train")
        draws = SlabDraws(samples, slab=CONFIG["slab"], total=CONFIG["batch_size"], seed=0)
        batch = next(iter(DataLoader(draws, batch_sampler=StepBatches(0, 1, CONFIG["batch_size"]))))
        model = PannModel(PannConfig(**CONFIG))
        net = model.stage1.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        psf, blur = psf_kernel(samples.sampling), gaussian_kernel(samples.sampling, 0.35)
        origins = [(0, int(y), 0) for y in batch["y0"]]

        def step():
            pred = net(batch["x"], batch["g"], origins)
            loss = weighted_voxel_loss(pred, batch["t"], batch["w"]) + 0.1 * physics_loss(
                pred, batch["meas"], batch["angles"], batch["offset"], psf, blur
            )
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        return {"samples_per_s": args.steps * CONFIG["batch_size"] / (time.perf_counter() - t0)}
    raise ValueError(f"--child={args.child!r}")


def run_child(kind: str, store: Path, run: Path, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--store", str(store), "--run", str(run)]
    cmd += ["--steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AET_PROGRESS": "0"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=24, help="small store; the large has 10×")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workdir", default="/tmp/bench_training")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args)
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    small = make_store(work / f"store-{args.samples}.zarr", args.samples)
    large = make_store(work / f"store-{10 * args.samples}.zarr", 10 * args.samples)
    stamp = str(time.time_ns())
    one = run_child("train1", small, work / f"run1-{stamp}", args.steps)
    two = run_child("train2", small, work / f"run2-{stamp}", args.steps)
    loader = run_child("loader", small, work / "unused", args.steps)
    model = run_child("model", small, work / "unused", args.steps)
    big = run_child("train1", large, work / f"run-large-{stamp}", args.steps)

    print(f"stage-1 training, global batch {CONFIG['batch_size']}, {args.steps} steps (CPU):")
    print(f"  1 process : {one['samples_per_s']:.2f} samples/s")
    print(f"  2 processes (gloo): {two['samples_per_s']:.2f} samples/s")
    print(f"  speed-up 2/1: {two['samples_per_s'] / one['samples_per_s']:.2f}x")
    print("data loader vs model:")
    print(f"  loader, main process: {loader['draws_per_s_0_workers']:.1f} draws/s")
    print(f"  loader, 2 workers   : {loader['draws_per_s_2_workers']:.1f} draws/s")
    print(f"  model step (1 thread): {model['samples_per_s']:.2f} samples/s")
    print(
        f"  loader (main) / model: {loader['draws_per_s_0_workers'] / model['samples_per_s']:.1f}x"
    )
    print("peak RSS of a 1-process training run:")
    print(f"  store of {args.samples:4d} samples: {one['peak_rss_mb']:.0f} MB")
    print(f"  store of {10 * args.samples:4d} samples: {big['peak_rss_mb']:.0f} MB")
    print(f"  ratio 10x store / 1x store: {big['peak_rss_mb'] / one['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
