"""Speed of the PANN stage-1 network on this machine (CPU by default).

Measures, for a base-16, 3-level GlobalLocalResUNet (global branch 32³):
  * inference on a 64³ and a 128³ volume by sliding window over 64³ patches (overlap 0.25);
  * one training step (forward, backward, Adam) on a batch of 2 × 64³ patches with their
    whole 128³ volumes as global context;
and, for comparison, the UNet3D baseline (base 12, 2 levels) on the same inputs.
Warm-up first, then the median of timed repeats (as PyG's profile/benchmark.py).

    .venv/bin/python scripts/bench_networks.py [--threads 1] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from models.resunet import GlobalLocalResUNet, sliding_window_predict
    from models.unet3d import UNet3D

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device

    resunet = GlobalLocalResUNet(base_channels=16, levels=3, global_size=32).to(dev)
    unet = UNet3D().to(dev)
    patches = torch.rand(2, 1, 64, 64, 64, device=dev)
    context = torch.rand(2, 1, 128, 128, 128, device=dev)
    target = torch.rand_like(patches)
    rows = []
    for name, net in (("GlobalLocalResUNet b16 l3", resunet), ("UNet3D b12 l2 (baseline)", unet)):
        params = sum(p.numel() for p in net.parameters())
        for n in (64, 128):
            volume = torch.rand(n, n, n, device=dev)
            seconds = timed(
                lambda v=volume, m=net: sliding_window_predict(m, v, patch_size=64, overlap=0.25),
                args.repeats,
                dev,
            )
            rows.append((name, params, f"predict {n}³ (64³ windows, overlap 0.25)", seconds))
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step(m=net, o=opt):
            out = m(patches, context, [(0, 32, 64), (64, 0, 16)]) if m is resunet else m(patches)
            loss = torch.nn.functional.mse_loss(out, target)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

        rows.append(
            (name, params, "train step 2 × 64³ (fwd + bwd + Adam)", timed(step, args.repeats, dev))
        )

    print(f"device={dev} threads={args.threads} repeats={args.repeats} (median)")
    print(f"{'network':28s} {'params':>9s}  {'task':42s} {'seconds':>8s}")
    for name, params, task, seconds in rows:
        print(f"{name:28s} {params:9,d}  {task:42s} {seconds:8.2f}")


if __name__ == "__main__":
    main()
